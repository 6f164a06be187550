"""Grounding fine-tuning data (RefCOCO+; docs/reference.md §4.2, §4.3, §5.4; official dataset/grounding_dataset.py).

Build: records {image, text, ref_id, bbox: [x, y, w, h]} (one per expression; the official files read
the box from REFER by ref_id, `tools/refer_to_grounding.py` puts it into the record) → every image
stored once + a row table (image, text, box).
Stream, per row, as `grounding_dataset_bbox.__getitem__` in training mode:
  1. a random crop that contains the box: x0 ~ U{0..⌊x⌋}, y0 ~ U{0..⌊y⌋}, x1 ~ U{min(⌈x+w⌉, W)..W},
     y1 ~ U{min(⌈y+h⌉, H)..H} (the region stream's box-safe crop on the covering int box);
  2. a horizontal flip with p = 0.5, unless `careful_hflip` and the cleaned text contains "left" or
     "right" (a substring test, as officially: "bright" counts too; words are never swapped);
  3. bicubic resize to R×R, RandAugment(2, 7) with the 5 photometric ops, normalisation;
  4. the box shifted by the crop, mirrored if flipped (x ← W_crop − x − w), scaled to R, and the
     target (cx/R, cy/R, w/R, h/R), float64 in the official order of operations, then float32.
Texts: `pre_caption` (30 words) → WordPiece, fixed length `max_tokens` (official: padding longest,
truncation to max_tokens; the padding is masked either way).
"""

import tensorflow as tf

from x2vlm_jax.data import augment, records
from x2vlm_jax.data.annotations import BadRecord, box_xywh, field, read_records
from x2vlm_jax.data.finetune.common import (
  RowsSource,
  batch_and_tokenize,
  skip_or_raise,
  task_iterator,
  write_image_rows,
)
from x2vlm_jax.data.region_stream import box_safe_crop
from x2vlm_jax.data.streams import decode, example_seed, from_source, meta, meta_signature
from x2vlm_jax.data.text import Tokenizer, pre_caption
from x2vlm_jax.text_clean import pre_caption as pre_caption_py

STREAM_ID = 7  # seed stream of this task (base = seed·8 + id; ids 1–6 are taken)
KIND = "grounding"


def _bbox(rec):
  box = rec.get("bbox") if isinstance(rec, dict) else None
  if box is None:
    raise BadRecord("missing_field", "no field 'bbox' (convert REFER files with tools/refer_to_grounding.py)")
  return box_xywh(box)


def build(
  annotations: str,
  image_root: str,
  data_dir: str,
  name: str,
  *,
  split: str = "train",
  strict: bool = False,
  max_words: int = 30,
) -> records.BuildReport:
  """Skips (counted by reason): missing or mistyped fields, texts empty after `pre_caption`, boxes that
  are not finite or have a negative size (`bad_box`), boxes not inside their image with a positive
  size (`box_outside_image`: the official reader asserts on them), unreadable images."""
  report = records.BuildReport()
  rows = []
  for i, rec in enumerate(read_records(annotations)):
    try:
      image, text = field(rec, "image", str), field(rec, "text", str)
      if not pre_caption_py(text, max_words):
        raise BadRecord("empty_caption")
      rows.append((i, (image,), {"text": text, "bbox": _bbox(rec)}))
    except BadRecord as e:
      skip_or_raise(report, annotations, i, e, strict)
  write_image_rows(annotations, image_root, data_dir, name, split, rows, report, strict, check=_box_inside)
  return report


def _box_inside(fields, sizes):
  """The official reader asserts that the box lies inside its image with a positive size."""
  (x, y, w, h), (width, height) = fields["bbox"], sizes[0]
  if not (x >= 0 and y >= 0 and x + w <= width and y + h <= height and w > 0 and h > 0):
    raise BadRecord("box_outside_image", f"bbox {[x, y, w, h]} in a {width}x{height} image")


def signature(num_datasets: int):
  return {
    **meta_signature(num_datasets),
    "image": tf.TensorSpec([], tf.string),
    "text": tf.TensorSpec([], tf.string),
    "bbox": tf.TensorSpec([4], tf.float64),
  }


def mentions_left_or_right(text):
  """The official `left_or_right_in_caption` on the cleaned text: a substring test."""
  return tf.strings.regex_full_match(text, ".*(left|right).*")


def grounding_example(image, text, box, cfg, seed):
  """One training row → (normalised image [R,R,3], target (cx,cy,w,h)/R float32, flipped, crop)."""
  s_crop, s_flip, s_ra = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  res = cfg.image_res
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  x, y, w, h = tf.unstack(tf.cast(box, tf.float64))
  # x0 ~ U{0..⌊x⌋}, x1 ~ U{min(⌈x+w⌉, W)..W}: the box-safe crop of the covering int box.
  fx, fy = tf.floor(x), tf.floor(y)
  cover = tf.cast(tf.stack([fx, fy, tf.math.ceil(x + w) - fx, tf.math.ceil(y + h) - fy]), tf.int32)
  x0, y0, x1, y1 = box_safe_crop(height, width, cover, s_crop)
  patch = image[y0:y1, x0:x1]
  coin = tf.random.stateless_uniform([], s_flip) < 0.5
  flipped = coin & ~(tf.constant(bool(cfg.get("careful_hflip", True))) & mentions_left_or_right(text))
  patch = tf.cond(flipped, lambda: tf.reverse(patch, [1]), lambda: patch)
  patch = tf.ensure_shape(augment.resize(patch, res), [res, res, 3])
  if cfg.randaug:
    patch = augment.rand_augment(patch, s_ra, ops=augment.PHOTOMETRIC_OPS)
  wc, hc = tf.cast(x1 - x0, tf.float64), tf.cast(y1 - y0, tf.float64)
  bx, by = x - tf.cast(x0, tf.float64), y - tf.cast(y0, tf.float64)
  bx = tf.where(flipped, (wc - bx) - w, bx)
  res64 = tf.constant(float(res), tf.float64)
  bx, bw, by, bh = res64 / wc * bx, res64 / wc * w, res64 / hc * by, res64 / hc * h
  target = tf.cast(tf.stack([bx + 0.5 * bw, by + 0.5 * bh, bw, bh]) / res64, tf.float32)
  return augment.normalize(patch), target, flipped, tf.stack([x0, y0, x1, y1])


def grounding_stream(
  source, cfg, tokenizer: Tokenizer, *, position, counts, skipped, seed, batch_size, keep_debug=False
):
  base = seed * 8 + STREAM_ID
  ds = from_source(source, position, counts, signature(len(source.sources)), skipped=skipped)

  def transform(ex):
    text = pre_caption(ex["text"], cfg.max_words)
    image, target, flipped, crop = grounding_example(
      decode(ex["image"]), text, ex["bbox"], cfg, example_seed(base, ex["_pos"])
    )
    out = {**meta(ex), "images": image, "text": text, "target_bbox": target}
    if keep_debug:
      out.update(_flipped=flipped, _crop=crop)
    return out

  return batch_and_tokenize(ds, transform, cfg, tokenizer, batch_size)


def create_iterator(cfg, *, spec, seed: int, process_index: int, process_count: int, keep_debug: bool = False):
  """cfg: the fine-tuning data config (configs/finetune/common.py: finetune_data, + careful_hflip);
  spec: the task's batch contract (`GroundingTask.spec`)."""
  it = task_iterator(
    cfg,
    KIND,
    stream_id=STREAM_ID,
    opener=RowsSource,
    stream=grounding_stream,
    spec=spec,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    keep_debug=keep_debug,
  )
  it.keep_debug = keep_debug
  return it


def train_size(cfg) -> int:
  """Training rows (one per expression: an official epoch)."""
  return sum(len(RowsSource(cfg.data_dir, name, split)) for name, split, *_ in cfg.train)
