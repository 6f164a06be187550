"""Retrieval fine-tuning data (COCO, Flickr30K; spec §4.2, §5.1, §4.3).

Build: rows {image, caption, image_id} (one per caption) → one record per image + a caption-row table
(`<split>.caption_rows.npy`), so images are stored once while an epoch is every caption once.
Stream: caption rows → the fine-tuning "train" transform (RandomResizedCrop scale 0.5–1, flip,
RandAugment(2, 7)) → `pre_caption` (30 words) → WordPiece, fixed length.
"""

import io
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from x2vlm_jax.batch import retrieval_spec
from x2vlm_jax.data import augment, records
from x2vlm_jax.data.finetune.common import field, read_annotations, single_stream_iterator, skip_or_raise
from x2vlm_jax.data.jsonl import BadRecord, load_image
from x2vlm_jax.data.streams import example_seed, from_source, meta, meta_signature, pmap
from x2vlm_jax.data.text import Tokenizer, pre_caption
from x2vlm_jax.data.text_clean import pre_caption as pre_caption_py

STREAM_ID = 4  # distinct from the pre-training streams' seeds


def build(annotations: str, image_root: str, data_dir: str, name: str, *, split: str = "train",
          strict: bool = False, max_words: int = 30) -> records.BuildReport:
  """The dense image id follows the official first-appearance order of `image_id`; captions that are
  empty after `pre_caption` are skipped (`empty_caption`), like an image that cannot be read (its
  rows are all skipped, `image_not_found` / `corrupt_image`)."""
  rows = read_annotations(annotations)
  report = records.BuildReport()
  by_id: Dict[object, Tuple[str, List[str]]] = {}
  order: List[object] = []
  for i, rec in enumerate(rows):
    try:
      image = field(rec, "image", str)
      caption = field(rec, "caption", str)
      image_id = field(rec, "image_id", (str, int))
      if not pre_caption_py(caption, max_words):
        raise BadRecord("empty_caption")
      if image_id in by_id and by_id[image_id][0] != image:
        raise BadRecord("bad_field_type", f"image_id {image_id!r} names two images")
    except BadRecord as e:
      skip_or_raise(report, annotations, i, e, strict)
      continue
    if image_id not in by_id:
      by_id[image_id] = (image, [])
      order.append(image_id)
    by_id[image_id][1].append(caption)

  written, table = [], []

  def gen():
    for image_id in order:
      image, caps = by_id[image_id]
      try:
        data, w, h = load_image({"image": image}, "image", True, image_root)
      except BadRecord as e:
        report.skipped[e.reason] += len(caps)
        if strict:
          raise ValueError(f"{annotations}: image {image!r}: {e}") from None
        continue
      record = len(written)
      written.append(image_id)
      table.extend((record, j) for j in range(len(caps)))
      report.written += len(caps)
      yield {"image": data, "caption": records.ALT_SEP.join(caps), "image_id": np.int32(record),
             "width": np.int32(w), "height": np.int32(h)}

  w = records.DatasetWriter(data_dir, name, "retrieval")
  w.write_split(split, gen(), len(order), "images")
  w.finish()
  buf = io.BytesIO()
  np.save(buf, np.asarray(table, np.int32).reshape(-1, 2))
  with tf.io.gfile.GFile(records.rows_path(data_dir, name, split), "wb") as f:
    f.write(buf.getvalue())
  report.extra["images"] = len(written)
  return report


class CaptionRows:
  """Random access over caption rows of a retrieval split: row r → its image record with the one
  caption of that row (what the official dataset's __getitem__ returns)."""

  def __init__(self, data_dir: str, name: str, split: str):
    self.source = records.open_source(data_dir, name, split)
    path = records.rows_path(data_dir, name, split)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"dataset {name}/{split}: no caption-row table {path}; build it with "
                              "tools/build_tfds.py --kind retrieval")
    with tf.io.gfile.GFile(path, "rb") as f:
      self.rows = np.load(io.BytesIO(f.read()))

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, r):
    record, j = (int(x) for x in self.rows[r])
    rec = dict(self.source[record])
    caps = rec["caption"].decode("utf-8") if isinstance(rec["caption"], bytes) else rec["caption"]
    rec["caption"] = caps.split(records.ALT_SEP)[j]
    return rec


def retrieval_signature(num_datasets: int):
  return {**meta_signature(num_datasets), "image": tf.TensorSpec([], tf.string),
          "caption": tf.TensorSpec([], tf.string), "image_id": tf.TensorSpec([], tf.int32)}


def retrieval_stream(source, cfg, tokenizer: Tokenizer, *, position, counts, skipped, seed, batch_size):
  base = seed * 8 + STREAM_ID
  ds = from_source(source, position, counts, retrieval_signature(len(source.sources)), skipped=skipped)

  def transform(ex):
    s_img = example_seed(base, ex["_pos"])
    image = augment.pretrain_transform_bytes(ex["image"], cfg.image_res, s_img, cfg.randaug,
                                             scale=tuple(cfg.crop_scale))
    return {**meta(ex), "images": image, "text": pre_caption(ex["caption"], cfg.max_words),
            "image_ids": ex["image_id"]}

  ds = pmap(ds, transform, cfg)
  if not cfg.strict:
    ds = ds.ignore_errors()  # a corrupt image: dropped and counted by the iterator
  ds = ds.batch(batch_size, drop_remainder=True)

  def per_batch(b):
    ids, mask = tokenizer(b["text"])
    valid = tf.cast(tf.strings.length(b["text"]) > 0, tf.float32)
    return {**meta(b), "images": b["images"], "text_ids": ids, "text_mask": mask, "image_ids": b["image_ids"],
            "valid": valid}

  return pmap(ds, per_batch, cfg)


def create_iterator(cfg, *, seed: int, process_index: int, process_count: int):
  """cfg: the fine-tuning data config (configs/finetune/common.py: finetune_data)."""
  tokenizer = Tokenizer(cfg.vocab_file, cfg.max_tokens)

  def build_stream(source, position, counts, skipped, batch_size):
    return retrieval_stream(source, cfg, tokenizer, position=position, counts=counts, skipped=skipped, seed=seed,
                            batch_size=batch_size)

  return single_stream_iterator(cfg, "retrieval", stream_id=STREAM_ID, opener=CaptionRows, build=build_stream,
                                spec_fn=lambda b: retrieval_spec(b, cfg.image_res, cfg.max_tokens), seed=seed,
                                process_index=process_index, process_count=process_count)


def train_size(cfg) -> int:
  """Caption rows of the training datasets (an official epoch)."""
  return sum(len(CaptionRows(cfg.data_dir, name, split)) for name, split, *_ in cfg.train)

