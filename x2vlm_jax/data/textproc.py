"""Per-batch text stage shared by all streams: tokenise + MLM-mask, padding rows made inert."""

import tensorflow as tf

from x2vlm_jax.data import masking
from x2vlm_jax.data.records import ALT_SEP
from x2vlm_jax.data.text import Tokenizer


def pick_alternative(joined, seed):
  """One of the ALT_SEP-joined alternatives of a caption, uniformly (docs/reference.md §4.1: sampled per use)."""
  alts = tf.strings.split(joined, ALT_SEP)
  i = tf.random.stateless_uniform([], seed, 0, tf.maximum(tf.size(alts), 1), dtype=tf.int32)
  return tf.cond(tf.size(alts) > 0, lambda: alts[tf.minimum(i, tf.size(alts) - 1)], lambda: tf.constant(""))


class TextStage:
  def __init__(self, cfg):
    self.cfg = cfg
    self.tok = Tokenizer(cfg.vocab_file, cfg.max_tokens)

  def __call__(self, texts, valid, seed):
    """texts [B] pre_caption-ed strings, valid [B] float → the six text fields of the contract."""
    c = self.cfg
    valid = valid * tf.cast(tf.strings.length(texts) > 0, tf.float32)
    ids, mask = self.tok(texts)
    ids_m, pos, labels = masking.mask_tokens(
      ids,
      mask,
      seed,
      is_subword=self.tok.is_subword,
      mask_id=self.tok.mask_id,
      vocab_size=self.tok.vocab_size,
      mask_prob=c.mask_prob,
      max_masks=c.max_masks,
      skipgram_prb=c.skipgram_prb,
      skipgram_size=c.skipgram_size,
      whole_word=c.mask_whole_word,
    )
    # Padding rows keep "[CLS] [SEP]" (no degenerate all-masked attention) but nothing to predict.
    real = valid[:, None] > 0
    pos = tf.where(real, pos, 0)
    labels = tf.where(real, labels, masking.IGNORE_ID)
    ids_m = tf.where(real, ids_m, ids)
    return {
      "text_ids": ids,
      "text_mask": mask,
      "text_ids_masked": ids_m,
      "masked_pos": pos,
      "mlm_labels": labels,
      "valid": valid,
    }
