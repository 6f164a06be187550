"""tf.data graphs of the image, video and parallel-text streams (the region stream lives in region_stream.py).

Layout of every stream: index-ordered records (source.py) → decode → [drop corrupt, counted] →
per-example augmentation with stateless seeds (pos) → fixed-size batch → text stage per batch.
Because randomness depends only on (seed, stream, position), parallelism never changes results.
"""

import tensorflow as tf

from x2vlm_jax.data import augment
from x2vlm_jax.data.text import pre_caption
from x2vlm_jax.data.textproc import pick_alternative

STREAM_IDS = {"image": 1, "region": 2, "video": 3, "mtext": 4}
BATCH_SEED_OFFSET = 1 << 30


def pmap(ds, fn, cfg):
  """Ordered parallel map; autograph is skipped because every function here is plain graph code
  (tracing through autograph cost ~10 s per stream)."""
  return ds.map(
    tf.autograph.experimental.do_not_convert(fn), num_parallel_calls=cfg.num_parallel_calls, deterministic=True
  )


def example_seed(base, pos):
  return tf.stack([tf.cast(base, tf.int64), tf.cast(pos, tf.int64)])


def meta_signature(num_datasets):
  # Bookkeeping that rides along with every element: stream position, per-dataset counters after
  # this record (the resume state) and (dataset, record index) for tests and debugging.
  # `_skipped` counts the records skipped before this one by a stream's record rule (region: invalid
  # crop anchor), so the iterator can tell them from corrupt images.
  return {
    "_pos": tf.TensorSpec([], tf.int64),
    "_counts": tf.TensorSpec([num_datasets], tf.int64),
    "_record": tf.TensorSpec([2], tf.int64),
    "_skipped": tf.TensorSpec([], tf.int64),
  }


META_KEYS = ("_pos", "_counts", "_record", "_skipped")
# A stream whose record rule rejects this many records in a row has the wrong kind of dataset
# (e.g. image–caption records, which have no elements, in the region stream).
MAX_SKIPPED_RUN = 10_000


def meta(ex):
  return {k: ex[k] for k in META_KEYS}


def image_signature(num_datasets):
  return {
    **meta_signature(num_datasets),
    "image": tf.TensorSpec([], tf.string),
    "caption": tf.TensorSpec([], tf.string),
    "boxes": tf.TensorSpec([None, 4], tf.float32),
    "elem_caption": tf.TensorSpec([None], tf.string),
    "elem_attrs": tf.TensorSpec([None], tf.string),
  }


def video_signature(num_datasets):
  return {
    **meta_signature(num_datasets),
    "frames": tf.TensorSpec([None], tf.string),
    "caption": tf.TensorSpec([], tf.string),
  }


def from_source(source, position, counts, signature, *, skipped=0, prepare=None):
  """Records from `position` on. `prepare(position, record)` → extra fields, or None to skip the record."""
  keys = [k for k in signature if not k.startswith("_")]

  def gen():
    n, run = int(skipped), 0
    for p, c, d, i, rec in source.records(position, counts):
      extra = {} if prepare is None else prepare(p, rec)
      if extra is None:
        n, run = n + 1, run + 1
        if run == MAX_SKIPPED_RUN:
          source.error = ValueError(
            f"{run} records in a row rejected up to position {p} (dataset {d}): not a dataset of this stream's kind?"
          )
          raise source.error
        continue
      run = 0
      out = {"_pos": p, "_counts": c, "_record": [d, i], "_skipped": n, **extra}
      out.update({k: rec[k] for k in keys if k not in extra})
      yield out

  return tf.data.Dataset.from_generator(gen, output_signature=signature)


def decode(image_bytes):
  """RGB uint8 [H, W, 3] with PIL's pixels: tf decodes JPEGs with libjpeg's fast integer IDCT by
  default (0.5–2 levels off PIL on average); PIL uses the accurate one."""

  def jpeg():
    return tf.io.decode_jpeg(image_bytes, channels=3, dct_method=augment.JPEG_DCT)

  def other():
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

  return tf.ensure_shape(tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other), [None, None, 3])


def finish(ds, cfg, text_stage, batch_size, base, fields):
  """Batch, then the per-batch text stage seeded by the batch's first position."""
  ds = ds.batch(batch_size, drop_remainder=True)

  def per_batch(ex):
    seed = example_seed(base + BATCH_SEED_OFFSET, ex["_pos"][0])
    out = {k: ex[k] for k in fields}
    out.update(text_stage(ex["text"], tf.ones([batch_size], tf.float32), seed))
    out.update(meta(ex))
    return out

  return pmap(ds, per_batch, cfg)


def image_stream(source, cfg, text_stage, *, position, counts, skipped, seed, batch_size):
  base = seed * 8 + STREAM_IDS["image"]
  ds = from_source(source, position, counts, image_signature(len(source.sources)), skipped=skipped)

  def transform(ex):
    # Decode and crop are one op here (only the crop window of a JPEG is decoded), so a corrupt image
    # fails in this map and is dropped (and counted) right after it.
    s_img, s_txt = tf.unstack(tf.random.experimental.stateless_split(example_seed(base, ex["_pos"]), 2))
    return {
      **meta(ex),
      "images": augment.pretrain_transform_bytes(ex["image"], cfg.image_res, s_img, cfg.randaug),
      "text": pre_caption(pick_alternative(ex["caption"], s_txt), cfg.max_tokens),
    }

  ds = pmap(ds, transform, cfg)
  if not cfg.strict:
    ds = ds.ignore_errors()
  return finish(ds, cfg, text_stage, batch_size, base, ["images"])


def sample_frame_ids(n, num_frames, seed):
  """Training frame selection of docs/reference.md §2.4 for a clip of n frames → [num_frames] indices."""
  f = num_frames
  s_rep, s_seg, s_off = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  # n ≤ F: every frame once plus F − n random repeats, sorted.
  rep = tf.random.stateless_uniform([f], s_rep, 0, tf.maximum(n, 1), dtype=tf.int32)
  short = tf.sort(tf.concat([tf.range(tf.minimum(n, f)), rep[: tf.maximum(f - n, 0)]], 0))[:f]
  # n > F: F contiguous segments, the n − F·s longer ones placed at random, one frame per segment.
  s = n // f
  extra = n - f * s
  rank = tf.argsort(tf.argsort(tf.random.stateless_uniform([f], s_seg)))
  lengths = s + tf.cast(rank < extra, tf.int32)
  starts = tf.cumsum(lengths, exclusive=True)
  off = tf.cast(tf.floor(tf.random.stateless_uniform([f], s_off) * tf.cast(lengths, tf.float32)), tf.int32)
  long = starts + tf.minimum(off, lengths - 1)
  return tf.ensure_shape(tf.where(n <= f, short, long), [f])


def video_stream(source, cfg, text_stage, *, position, counts, skipped, seed, batch_size):
  base = seed * 8 + STREAM_IDS["video"]
  f, r = cfg.video.num_frames, cfg.image_res
  ds = from_source(source, position, counts, video_signature(len(source.sources)), skipped=skipped)

  def transform(ex):
    s_ids, s_frames, s_txt = tf.unstack(tf.random.experimental.stateless_split(example_seed(base, ex["_pos"]), 3))
    ids = sample_frame_ids(tf.size(ex["frames"]), f, s_ids)
    frame_seeds = tf.random.experimental.stateless_split(s_frames, f)
    # Every frame gets its own crop/flip/RandAugment (docs/reference.md §2.4, §10 item 11).
    frames = tf.map_fn(
      lambda a: augment.pretrain_transform(decode(tf.gather(ex["frames"], a[0])), r, a[1], cfg.randaug),
      (ids, frame_seeds),
      fn_output_signature=tf.TensorSpec([r, r, 3], tf.float32),
    )
    return {**meta(ex), "frames": frames, "text": pre_caption(pick_alternative(ex["caption"], s_txt), cfg.max_tokens)}

  ds = pmap(ds, transform, cfg)
  if not cfg.strict:
    ds = ds.ignore_errors()
  return finish(ds, cfg, text_stage, batch_size, base, ["frames"])


def mtext_signature(num_datasets):
  return {
    **meta_signature(num_datasets),
    "source": tf.TensorSpec([], tf.string),
    "target": tf.TensorSpec([], tf.string),
  }


def mtext_stream(source, cfg, text_stage, para_tokenizer, *, position, counts, skipped, seed, batch_size):
  """Parallel text (official `ParaTextDataset`, docs/reference.md §3.7): the pair's order is swapped with
  p=0.5, both sides `pre_caption`-ed with `mtext.max_words`; the first is MLM-masked (`text_stage`, with
  the mtext lengths), the second only tokenised (`para_ids`). The official reader also masks the second
  sentence, which no loss reads (`forward_para_text` takes its ids and mask only)."""
  base = seed * 8 + STREAM_IDS["mtext"]
  words = cfg.mtext.max_words
  ds = from_source(source, position, counts, mtext_signature(len(source.sources)), skipped=skipped)

  def transform(ex):
    swap = tf.random.stateless_uniform([], example_seed(base, ex["_pos"])) < 0.5
    first = tf.where(swap, ex["target"], ex["source"])
    second = tf.where(swap, ex["source"], ex["target"])
    return {**meta(ex), "text": pre_caption(first, words), "para": pre_caption(second, words)}

  ds = pmap(ds, transform, cfg).batch(batch_size, drop_remainder=True)

  def per_batch(ex):
    seed_b = example_seed(base + BATCH_SEED_OFFSET, ex["_pos"][0])
    valid = tf.cast(tf.strings.length(ex["para"]) > 0, tf.float32)
    out = text_stage(ex["text"], valid, seed_b)
    para_ids, para_mask = para_tokenizer(ex["para"])
    out.update(para_ids=para_ids, para_mask=para_mask, **meta(ex))
    return out

  return pmap(ds, per_batch, cfg)
