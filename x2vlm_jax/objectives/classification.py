"""Cross-entropy classification: NLVR2's true/false (docs/reference.md §5.3) and video QA over a fixed
answer vocabulary (docs/reference.md §5.6)."""

from typing import Tuple

import jax
import jax.numpy as jnp

from x2vlm_jax.objectives.common import hard_cross_entropy, row_mask, safe_div


def classification_loss(logits, labels, valid=None) -> Tuple[jax.Array, jax.Array]:
  """Cross-entropy with ignore index −100 (official `F.cross_entropy(..., ignore_index=-100)`, video
  QA's answers outside the answer vocabulary) → (mean CE over counted rows, accuracy over them).
  logits [B, C], labels [B] int, valid [B] (padding rows never count)."""
  b = labels.shape[0]
  counted = ((labels != -100) & (row_mask(valid, b) > 0)).astype(jnp.float32)
  ce = hard_cross_entropy(logits, labels)
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  n = jnp.sum(counted)
  return safe_div(jnp.sum(counted * ce), n), safe_div(jnp.sum(counted * hit), n)
