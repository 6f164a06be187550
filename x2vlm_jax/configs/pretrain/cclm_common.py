"""Shared skeleton of the multilingual (CCLM) pre-training configs, docs/reference.md §1.8, §3.7, §5.7.

Values not set here come from configs/pretrain/common.py (the English skeleton) and are the same in
the official multilingual_cclm_x2vlm_{base,large}.yaml (seed 42, grad clip 1.0, wd 0.01, β/ε).
"""

import ml_collections

from x2vlm_jax.configs.pretrain import common


def mtext_stream(c, datasets, global_batch: int, *, max_tokens: int = 64, max_masks: int = 16, mask_prob: float = 0.4):
  """The parallel-text stream (official `mtexts:` block: max_tokens 64, mask_prob 0.4, max_masks 16)."""
  if "mtext" not in c.data:
    c.data.mtext = ml_collections.ConfigDict()
  s = c.data.mtext
  s.enabled = bool(datasets) and global_batch > 0
  s.datasets = list(datasets)
  s.batch_size = global_batch
  s.max_tokens = max_tokens
  s.max_masks = max_masks
  s.mask_prob = mask_prob


def cclm_config(model: str) -> ml_collections.ConfigDict:
  c = common.base_config(model)
  c.task = "cclm_pretrain"
  # Text of the image/region streams (yaml top level): max_tokens 30, mask_prob 0.4, max_masks 10, no
  # whole-word masking (`mask_whole_word: False  # not implemented` for a SentencePiece tokenizer).
  c.data.max_tokens = 30
  c.data.max_masks = 10
  c.data.mask_prob = 0.4
  c.data.mask_whole_word = False
  c.data.vocab_file = "gs://YOUR_BUCKET/xlm-roberta-base/sentencepiece.bpe.model"
  c.loss_weights.mtext = 1.0  # mtexts.iter_perc
  c.itm_group_size.mtext = 60
  c.stop_calc_itm = -1  # no aux stream: ITM always on
  c.optim.warmup_steps = 1000  # schedular.num_warmup_steps
  c.optim.lr_mult = 2.0
  c.optim.clip_norm = 1.0
  c.model.dtype = "float32"  # accelerator.FP16_OPT_LEVEL: O0
  c.checkpoint_every = 50_000  # ckpt_frequent_step
  return c
