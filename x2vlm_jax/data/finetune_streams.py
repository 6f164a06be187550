"""tf.data training streams of the fine-tuning tasks, on the same index-ordered, resumable sources as
pre-training (source.py) and driven by stateless seeds (reproducible, exact resume).

Retrieval (spec §5.1, §4.3): caption rows → the fine-tuning "train" transform (RandomResizedCrop
scale 0.5–1, flip, RandAugment(2, 7)) → `pre_caption` (30 words) → WordPiece, fixed length.
"""

from typing import Dict

import numpy as np
import tensorflow as tf

from x2vlm_jax.data import augment, finetune_build
from x2vlm_jax.data.pipeline import StreamDef, TrainIterator, _per_host
from x2vlm_jax.data.source import StreamSource
from x2vlm_jax.data.streams import example_seed, from_source, meta, pmap
from x2vlm_jax.data.text import Tokenizer, pre_caption

STREAM_ID = 4  # distinct from the pre-training streams' seeds


def retrieval_signature(num_datasets: int):
  return {"_pos": tf.TensorSpec([], tf.int64), "_counts": tf.TensorSpec([num_datasets], tf.int64),
          "_record": tf.TensorSpec([2], tf.int64), "_skipped": tf.TensorSpec([], tf.int64),
          "image": tf.TensorSpec([], tf.string),
          "caption": tf.TensorSpec([], tf.string), "image_id": tf.TensorSpec([], tf.int32)}


def retrieval_spec(batch_size: int, image_res: int, max_tokens: int) -> Dict[str, tuple]:
  b, r, l = batch_size, image_res, max_tokens
  return {"images": ((b, r, r, 3), np.float32), "text_ids": ((b, l), np.int32), "text_mask": ((b, l), np.int32),
          "image_ids": ((b,), np.int32), "valid": ((b,), np.float32)}


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


def create_retrieval_iterator(cfg, *, seed: int, process_index: int, process_count: int) -> TrainIterator:
  """cfg: the fine-tuning data config (configs/finetune/common.py: finetune_data)."""
  bt = _per_host(int(cfg.batch_size), process_count, "data.batch_size")
  source = StreamSource(cfg.data_dir, [tuple(d) for d in cfg.train], seed=seed, stream_id=STREAM_ID,
                        process_index=process_index, process_count=process_count,
                        opener=finetune_build.CaptionRows)
  tokenizer = Tokenizer(cfg.vocab_file, cfg.max_tokens)

  def build(position, counts, skipped):
    return retrieval_stream(source, cfg, tokenizer, position=position, counts=counts, skipped=skipped, seed=seed,
                            batch_size=bt)

  spec = retrieval_spec(bt, cfg.image_res, cfg.max_tokens)
  return TrainIterator(cfg, {"retrieval": StreamDef(source, build, spec)}, seed=seed,
                       process_index=process_index, process_count=process_count, flat=True)


def train_size(cfg) -> int:
  """Caption rows of the training datasets (an official epoch)."""
  return sum(len(finetune_build.CaptionRows(cfg.data_dir, name, split)) for name, split, *_ in cfg.train)

