"""Masked language modelling, docs/reference.md §3.3 (pre-training), and the MLM captioner's
label-smoothed loss, docs/reference.md §5.5 (captioning fine-tuning)."""

from typing import Tuple

import jax
import jax.numpy as jnp

from x2vlm_jax.objectives.common import f32, hard_cross_entropy, row_mask, safe_div


def mlm_loss(logits, labels, valid=None) -> Tuple[jax.Array, jax.Array]:
  """Masked-language-model CE over real masked tokens (docs/reference.md §3.3).

  logits [B,M,V] at the masked positions, labels [B,M] gold ids with −100 for padding slots,
  valid [B]. Returns (mean CE, accuracy), both over tokens with label ≠ −100 in real rows; 0 when
  there are none.
  """
  b = labels.shape[0]
  mask = (labels != -100) & (row_mask(valid, b)[:, None] > 0)
  mask = mask.astype(jnp.float32)
  ce = hard_cross_entropy(logits, labels)
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  n = jnp.sum(mask)
  return safe_div(jnp.sum(mask * ce), n), safe_div(jnp.sum(mask * hit), n)


def caption_mlm_loss(logits, masked_ids, weights, *, ignore_id: int, label_smoothing: float = 0.1):
  """The MLM captioner's loss (docs/reference.md §5.5, official `LabelSmoothingLoss` + `loss_mask_and_normalize`).

  logits [B,M,V] at the inserted [MASK]s, masked_ids [B,M] gold ids (`ignore_id` — the [CLS] id — on
  padding slots), weights [B,M] (1 real, 0 padding). Per position the KL divergence
  Σ_v q_v (log q_v − log p_v) to the smoothed target q: 1 − ε on the gold token, ε/(V−2) on every
  other token except `ignore_id`, which gets 0 (an ignored position has q ≡ 0, loss 0). Then
  Σ loss·w / (Σ w + 1e-5). Note the official smoothing puts ε/(V−2) on V−2 tokens, so q sums to 1.
  """
  vocab = logits.shape[-1]
  logp = jax.nn.log_softmax(f32(logits), axis=-1)
  gold = jax.nn.one_hot(masked_ids, vocab, dtype=jnp.float32)
  q = jnp.where(gold > 0, 1.0 - label_smoothing, label_smoothing / (vocab - 2))
  q = q.at[..., ignore_id].set(0.0)
  q = jnp.where((masked_ids == ignore_id)[..., None], 0.0, q)
  kl = jnp.sum(jnp.where(q > 0, q * (jnp.log(jnp.where(q > 0, q, 1.0)) - logp), 0.0), axis=-1)
  w = f32(weights)
  return jnp.sum(kl * w) / (jnp.sum(w) + 1e-5)
