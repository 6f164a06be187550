"""NLVR2 fine-tuning data (docs/reference.md §4.2, §4.3, §5.3; official dataset/nlvr_dataset.py).

Build: records {images: [left, right], sentence, label} (label true/false or "True"/"False") →
every distinct image stored once + a row table (image pair, sentence, label; common.RowsSource).
Stream: each of the two images through the fine-tuning "train" transform independently
(RandomResizedCrop scale 0.5–1, horizontal flip, RandAugment(2, 7) with all 10 ops; the sentence is
not changed when an image is flipped, as officially), `pre_caption` (30 words) → WordPiece.
Batch contract: images [B, 2, R, R, 3] (image 0 = "left"), text_ids/text_mask [B, L], labels [B]
(1 = True), valid [B].
"""

import tensorflow as tf

from x2vlm_jax.data import augment, records
from x2vlm_jax.data.annotations import BadRecord, nlvr2_record, read_records
from x2vlm_jax.data.finetune.common import (
  RowsSource,
  batch_and_tokenize,
  skip_or_raise,
  task_iterator,
  write_image_rows,
)
from x2vlm_jax.data.streams import example_seed, from_source, meta, meta_signature
from x2vlm_jax.data.text import Tokenizer, pre_caption
from x2vlm_jax.text_clean import pre_caption as pre_caption_py

STREAM_ID = 0  # seed stream of this task (base = seed·8 + id; ids 1–6 are taken)
KIND = "nlvr2"


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
  """Skips (counted by reason): missing or mistyped fields, labels other than true/false, sentences
  empty after `pre_caption`, pairs with a missing or corrupt image."""
  report = records.BuildReport()
  rows = []
  for i, rec in enumerate(read_records(annotations)):
    try:
      images, sentence, label = nlvr2_record(rec)
      if not pre_caption_py(sentence, max_words):
        raise BadRecord("empty_caption")
      rows.append((i, images, {"sentence": sentence, "label": label}))
    except BadRecord as e:
      skip_or_raise(report, annotations, i, e, strict)
  write_image_rows(annotations, image_root, data_dir, name, split, rows, report, strict)
  return report


def signature(num_datasets: int):
  return {
    **meta_signature(num_datasets),
    "image0": tf.TensorSpec([], tf.string),
    "image1": tf.TensorSpec([], tf.string),
    "sentence": tf.TensorSpec([], tf.string),
    "label": tf.TensorSpec([], tf.int32),
  }


def nlvr2_stream(source, cfg, tokenizer: Tokenizer, *, position, counts, skipped, seed, batch_size):
  base = seed * 8 + STREAM_ID
  ds = from_source(source, position, counts, signature(len(source.sources)), skipped=skipped)

  def transform(ex):
    s0, s1 = tf.unstack(tf.random.experimental.stateless_split(example_seed(base, ex["_pos"]), 2))
    pair = [
      augment.pretrain_transform_bytes(ex[k], cfg.image_res, s, cfg.randaug, scale=tuple(cfg.crop_scale))
      for k, s in (("image0", s0), ("image1", s1))
    ]
    return {
      **meta(ex),
      "images": tf.stack(pair),
      "text": pre_caption(ex["sentence"], cfg.max_words),
      "labels": ex["label"],
    }

  return batch_and_tokenize(ds, transform, cfg, tokenizer, batch_size)


def create_iterator(cfg, *, spec, seed: int, process_index: int, process_count: int):
  """cfg: the fine-tuning data config (configs/finetune/common.py: finetune_data); spec: the task's
  batch contract (`NLVR2Task.spec`)."""
  return task_iterator(
    cfg,
    KIND,
    stream_id=STREAM_ID,
    opener=RowsSource,
    stream=nlvr2_stream,
    spec=spec,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )


def train_size(cfg) -> int:
  """Training rows (an official epoch)."""
  return sum(len(RowsSource(cfg.data_dir, name, split)) for name, split, *_ in cfg.train)
