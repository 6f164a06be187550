"""Training input of the MLM captioner (docs/reference.md §5.5, `apply_FG_free`), in the tf graph.

Official `coco_karpathy_train_mlm.preprocess_fg_free` (after "An Investigation of Suitability of
Pre-Trained Language Models for Dialogue Generation"): tokens = [CLS] + prompt + caption + [SEP] cut to
max_tokens; positions are chosen by the docs/reference.md §3.3 masking procedure with the prompt excluded; a [MASK] is
INSERTED immediately before each chosen token (the token itself stays) with the same position id;
attention is causal over the rebuilt sequence except that no one attends to a [MASK] but the [MASK]
itself. The model then predicts each chosen token at its [MASK], seeing only the real tokens before
it — exactly the situation of generation, where a [MASK] is appended after the prefix.

Outputs are padded to max_tokens + max_masks (58 for the released config).
"""

from typing import Dict, Sequence

import tensorflow as tf

from x2vlm_jax.data.masking import _split, choose_masked_positions


def caption_ids(
  pieces: tf.RaggedTensor, prompt_ids: Sequence[int], *, cls_id: int, sep_id: int, pad_id: int, max_tokens: int
):
  """Caption wordpieces [B, (n)] → ids/mask [B, max_tokens] of [CLS] + prompt + caption + [SEP].

  Cut like the official `tokens[:max_tokens]` AFTER appending [SEP], so an over-long caption loses its
  [SEP] (the model then never learns to stop on it; kept for fidelity). Captioning does not apply
  pre_caption (docs/reference.md §4.4): `pieces` are the raw caption's wordpieces.
  """
  b = pieces.nrows()
  pieces = tf.cast(pieces, tf.int32)
  head = tf.tile(tf.constant([[cls_id, *prompt_ids]], tf.int32), [b, 1])
  sep = tf.fill([b, 1], tf.constant(sep_id, tf.int32))
  full = tf.concat([tf.RaggedTensor.from_tensor(head), pieces, tf.RaggedTensor.from_tensor(sep)], axis=1)
  full = full[:, :max_tokens]
  ids = full.to_tensor(default_value=pad_id, shape=[None, max_tokens])
  mask = tf.sequence_mask(full.row_lengths(), max_tokens, dtype=tf.int32)
  return ids, mask


def insert_masks(ids, chosen, *, max_masks: int, mask_id: int, pad_id: int, ignore_id: int) -> Dict[str, tf.Tensor]:
  """Rebuilds [B, L] ids with a [MASK] before every chosen position (bool [B, L], ≤ max_masks per row).

  → ids [B, T], positions [B, T], attention [B, T, T] (int32, T = L + max_masks), masked_pos [B, M]
  (indices of the inserted [MASK]s, 0-padded), masked_ids [B, M] (gold tokens, `ignore_id` = the
  official [CLS] padding that the loss ignores), masked_weight [B, M] (1 real / 0 padding).
  A row with m masks: token p moves to p + (#chosen ≤ p), its [MASK] sits right before it, both with
  position id p; the padding after the sequence continues the positions (index − m).
  """
  b, length = tf.shape(ids)[0], ids.shape[1]
  t = length + max_masks
  chosen_i = tf.cast(chosen, tf.int32)
  before = tf.cumsum(chosen_i, axis=1)  # chosen at or before p
  m = before[:, -1]
  pos = tf.broadcast_to(tf.range(length)[None], [b, length])
  rows = tf.broadcast_to(tf.range(b)[:, None], [b, length])
  tok_at = tf.stack([rows, pos + before], -1)
  mask_at = tf.stack([rows, pos + before - 1], -1)

  index = tf.broadcast_to(tf.range(t)[None], [b, t])
  out_ids = tf.fill([b, t], tf.constant(pad_id, tf.int32))
  out_pos = index - m[:, None]  # the padding tail
  is_mask = tf.zeros([b, t], tf.bool)
  out_ids = tf.tensor_scatter_nd_update(out_ids, tok_at, ids)
  out_pos = tf.tensor_scatter_nd_update(out_pos, tok_at, pos)
  sel = tf.where(chosen)  # [K, 2] (row, p)
  mask_idx = tf.gather_nd(mask_at, sel)
  out_ids = tf.tensor_scatter_nd_update(out_ids, mask_idx, tf.fill([tf.shape(sel)[0]], tf.constant(mask_id, tf.int32)))
  out_pos = tf.tensor_scatter_nd_update(out_pos, mask_idx, tf.cast(sel[:, 1], tf.int32))
  is_mask = tf.tensor_scatter_nd_update(is_mask, mask_idx, tf.ones([tf.shape(sel)[0]], tf.bool))

  tril = tf.linalg.band_part(tf.ones([t, t], tf.int32), -1, 0)
  eye = tf.eye(t, dtype=tf.int32)
  attention = tf.where(is_mask[:, None, :], eye[None], tril[None])  # [MASK] columns: diagonal only

  # The chosen positions in ascending order, their [MASK] indices and gold tokens, padded to M.
  sort_keys = tf.where(chosen, pos, length + pos)
  first = tf.argsort(sort_keys, axis=1)[:, :max_masks]
  got = tf.gather(chosen, first, batch_dims=1)
  masked_pos = tf.where(got, tf.gather(pos + before - 1, first, batch_dims=1), 0)
  masked_ids = tf.where(got, tf.gather(ids, first, batch_dims=1), ignore_id)
  if length < max_masks:
    pad = [[0, 0], [0, max_masks - length]]
    masked_pos, masked_ids = tf.pad(masked_pos, pad), tf.pad(masked_ids, pad, constant_values=ignore_id)
    got = tf.pad(got, pad)
  return {
    "ids": out_ids,
    "positions": out_pos,
    "attention": attention,
    "masked_pos": masked_pos,
    "masked_ids": masked_ids,
    "masked_weight": tf.cast(got, tf.int32),
  }


def fg_free_inputs(
  ids,
  mask,
  seed,
  *,
  num_prompt_tokens: int,
  is_subword,
  mask_id: int,
  pad_id: int,
  ignore_id: int,
  mask_prob: float = 0.6,
  max_masks: int = 18,
  skipgram_prb: float = 0.2,
  skipgram_size: int = 3,
  whole_word: bool = True,
) -> Dict[str, tf.Tensor]:
  """ids/mask [B, max_tokens] from `caption_ids` → the captioner's training input (`insert_masks`).

  Chosen positions: docs/reference.md §3.3 with the released captioning values (mask_prob 0.6, max_masks 18,
  whole-word, skipgram 0.2 / 3), never [CLS] or the `num_prompt_tokens` prompt tokens; the 80/10/10
  replacement is not used. ignore_id: the [CLS] id (the label-smoothing loss ignores it).
  """
  s_perm, s_span, s_len, s_keep = _split(seed, 4)
  chosen = choose_masked_positions(
    ids,
    mask,
    (s_perm, s_span, s_len, s_keep),
    is_subword=is_subword,
    mask_prob=mask_prob,
    max_masks=max_masks,
    skipgram_prb=skipgram_prb,
    skipgram_size=skipgram_size,
    whole_word=whole_word,
    num_source_tokens=num_prompt_tokens,
  )
  return insert_masks(ids, chosen, max_masks=max_masks, mask_id=mask_id, pad_id=pad_id, ignore_id=ignore_id)
