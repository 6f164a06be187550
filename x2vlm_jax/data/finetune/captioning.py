"""COCO captioning fine-tuning data (Karpathy splits; docs/reference.md §4.2, §5.5, §4.3).

Build: the official training JSON [{image, caption, image_id}, ...] (one row per caption, the same
format as retrieval's) → one record per image + a caption-row table, exactly as retrieval stores it;
only the emptiness test differs (the captioner trains on the RAW caption: no pre_caption, docs/reference.md §4.4).
Stream: caption rows → the fine-tuning "train" transform (RandomResizedCrop scale 0.5–1, flip,
RandAugment(2, 7)) → the UniLM "FG-free" input of docs/reference.md §5.5 (`caption_masking.fg_free_inputs`):
[CLS] + prompt + caption wordpieces + [SEP] cut to max_tokens, masked positions chosen with the
prompt excluded, a [MASK] inserted before each with the same position id, the 3-D attention mask.
"""

from typing import Sequence

import tensorflow as tf

from x2vlm_jax.data import augment, caption_masking
from x2vlm_jax.data.finetune import retrieval
from x2vlm_jax.data.finetune.common import RowsSource, single_stream_iterator, transform_and_batch
from x2vlm_jax.data.streams import BATCH_SEED_OFFSET, example_seed, from_source, meta, pmap
from x2vlm_jax.data.text import Tokenizer

STREAM_ID = 6  # distinct from the other streams' seeds


def build(
  annotations: str,
  image_root: str,
  data_dir: str,
  name: str,
  *,
  split: str = "train",
  strict: bool = False,
  max_words: int = 40,
):
  """As `retrieval.build`; a caption is skipped (`empty_caption`) only when it has no text at all."""
  del max_words
  return retrieval.build(
    annotations, image_root, data_dir, name, split=split, strict=strict, keep=lambda caption: bool(caption.strip())
  )


def prompt_pieces(tokenizer: Tokenizer, prompt: str) -> Sequence[int]:
  """The official prompt tokens: wordpieces of `prompt.strip()` ("a picture of")."""
  if not prompt.strip():
    return ()
  return tuple(int(i) for i in tokenizer.pieces(tf.constant([prompt.strip()]))[0].numpy())


def captioning_stream(
  source, cfg, tokenizer: Tokenizer, prompt: Sequence[int], *, position, counts, skipped, seed, batch_size
):
  base = seed * 8 + STREAM_ID
  ds = from_source(source, position, counts, retrieval.retrieval_signature(len(source.sources)), skipped=skipped)

  def transform(ex):
    image = augment.pretrain_transform_bytes(
      ex["image"], cfg.image_res, example_seed(base, ex["_pos"]), cfg.randaug, scale=tuple(cfg.crop_scale)
    )
    return {**meta(ex), "images": image, "caption": ex["caption"]}

  ds = transform_and_batch(ds, transform, cfg, batch_size)

  def per_batch(b):
    ids, mask = caption_masking.caption_ids(
      tokenizer.pieces(b["caption"]),
      prompt,
      cls_id=tokenizer.cls_id,
      sep_id=tokenizer.sep_id,
      pad_id=tokenizer.pad_id,
      max_tokens=cfg.max_tokens,
    )
    out = caption_masking.fg_free_inputs(
      ids,
      mask,
      example_seed(base + BATCH_SEED_OFFSET, b["_pos"][0]),
      num_prompt_tokens=len(prompt),
      is_subword=tokenizer.is_subword,
      mask_id=tokenizer.mask_id,
      pad_id=tokenizer.pad_id,
      ignore_id=tokenizer.cls_id,
      mask_prob=cfg.mask_prob,
      max_masks=cfg.max_masks,
      skipgram_prb=cfg.skipgram_prb,
      skipgram_size=cfg.skipgram_size,
      whole_word=cfg.mask_whole_word,
    )
    return {
      **meta(b),
      "images": b["images"],
      "text_ids": out["ids"],
      "positions": out["positions"],
      "attention": out["attention"],
      "masked_pos": out["masked_pos"],
      "masked_ids": out["masked_ids"],
      "masked_weight": tf.cast(out["masked_weight"], tf.float32),
    }

  return pmap(ds, per_batch, cfg)


def create_iterator(cfg, prompt: str, *, spec, seed: int, process_index: int, process_count: int):
  """cfg: the captioning data config (configs/finetune/coco_captioning_large.py); prompt: the task's;
  spec: its batch contract (`CaptioningTask.spec`)."""
  tokenizer = Tokenizer(cfg.vocab_file, cfg.max_tokens)
  pieces = prompt_pieces(tokenizer, prompt)

  def build_stream(source, position, counts, skipped, batch_size):
    return captioning_stream(
      source,
      cfg,
      tokenizer,
      pieces,
      position=position,
      counts=counts,
      skipped=skipped,
      seed=seed,
      batch_size=batch_size,
    )

  return single_stream_iterator(
    cfg,
    "captioning",
    stream_id=STREAM_ID,
    opener=RowsSource,
    build=build_stream,
    spec=spec,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )


def train_size(cfg) -> int:
  """Caption rows of the training datasets (an official epoch: every caption once)."""
  return retrieval.train_size(cfg)
