"""XVNLI fine-tuning data (official dataset/xvnli_dataset.py, XVNLI.py; IGLUE's visual NLI over Flickr30K).

Build: JSON-lines (or JSON array) records {Flikr30kID, sentence2, gold_label} → every distinct image
(`image_root/<Flikr30kID>.jpg`) stored once + a row table (hypothesis, label; common.RowsSource). Labels
as officially: contradiction 0, entailment 1, neutral 2; other labels are skipped and counted
(`skipped[bad_label]`; officially counted as "invalid" and dropped).
Stream: the fine-tuning "train" transform (RandomResizedCrop scale 0.5–1, flip, RandAugment), the
hypothesis `pre_caption`-ed with `max_words` (the official reader passes max_tokens as the word limit).
Batch contract: images [B, R, R, 3], text_ids/text_mask [B, L], labels [B], valid [B].
"""

import tensorflow as tf

from x2vlm_jax.data import augment, records
from x2vlm_jax.data.annotations import BadRecord, read_records, xvnli_record
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

STREAM_ID = 1  # seed stream of this task (base = seed·8 + id); a fine-tuning run has one stream
KIND = "xvnli"


def build(
  annotations: str,
  image_root: str,
  data_dir: str,
  name: str,
  *,
  split: str = "train",
  strict: bool = False,
  max_words: int = 40,
) -> records.BuildReport:
  report = records.BuildReport()
  rows = []
  for i, rec in enumerate(read_records(annotations)):
    try:
      image, sentence, label = xvnli_record(rec)
      if not pre_caption_py(sentence, max_words):
        raise BadRecord("empty_caption")
      rows.append((i, (image,), {"sentence": sentence, "label": label}))
    except BadRecord as e:
      skip_or_raise(report, annotations, i, e, strict)
  write_image_rows(annotations, image_root, data_dir, name, split, rows, report, strict)
  return report


def signature(num_datasets: int):
  return {
    **meta_signature(num_datasets),
    "image": tf.TensorSpec([], tf.string),
    "sentence": tf.TensorSpec([], tf.string),
    "label": tf.TensorSpec([], tf.int32),
  }


def xvnli_stream(source, cfg, tokenizer: Tokenizer, *, position, counts, skipped, seed, batch_size):
  base = seed * 8 + STREAM_ID
  ds = from_source(source, position, counts, signature(len(source.sources)), skipped=skipped)

  def transform(ex):
    s = example_seed(base, ex["_pos"])
    return {
      **meta(ex),
      "images": augment.pretrain_transform_bytes(
        ex["image"], cfg.image_res, s, cfg.randaug, scale=tuple(cfg.crop_scale)
      ),
      "text": pre_caption(ex["sentence"], cfg.max_words),
      "labels": ex["label"],
    }

  return batch_and_tokenize(ds, transform, cfg, tokenizer, batch_size)


def create_iterator(cfg, *, spec, seed: int, process_index: int, process_count: int):
  return task_iterator(
    cfg,
    KIND,
    stream_id=STREAM_ID,
    opener=RowsSource,
    stream=xvnli_stream,
    spec=spec,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )


def train_size(cfg) -> int:
  return sum(len(RowsSource(cfg.data_dir, name, split)) for name, split, *_ in cfg.train)
