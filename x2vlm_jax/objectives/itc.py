"""Image–text contrastive learning (ITC), docs/reference.md §3.1: the symmetric InfoNCE over the global
batch, its temperature and the official gradient scale of the features."""

import jax
import jax.numpy as jnp

from x2vlm_jax.objectives.common import MASKED_LOGIT, f32, row_mask, safe_div

TEMP_MIN = 0.001
TEMP_MAX = 0.5


def clamp_temperature(temp):
  """τ ← clip(τ, 0.001, 0.5), docs/reference.md §3.1.

  The official code clamps `temp` in place once per optimizer step, before the forward pass; the
  trainer does the same by calling this on the `temp` param right after `optax.apply_updates`, so the
  losses use τ directly (clamping inside a loss would zero its gradient outside the range).
  """
  return jnp.clip(temp, TEMP_MIN, TEMP_MAX)


def scale_gradient(x, scale: float):
  """Identity in the forward pass, gradient multiplied by `scale` in the backward pass.

  `x*s + stop_gradient(x*(1-s))`: the value equals x up to one float rounding, the derivative is s.
  """
  if isinstance(scale, (int, float)) and scale == 1.0:
    return x
  return x * scale + jax.lax.stop_gradient(x * (1.0 - scale))


def _soft_cross_entropy(logits, targets, col_ok):
  """Row-wise −Σ_j y_ij log softmax(logits_i)_j with invalid columns removed from the softmax."""
  masked = jnp.where(col_ok[None, :], logits, MASKED_LOGIT)
  logp = jax.nn.log_softmax(masked, axis=-1)
  return -jnp.sum(targets * logp, axis=-1)


def itc_targets(b: int, valid=None, ids=None):
  """[B,B] target distribution of ITC rows: identity without ids, else y_ij = 1[id_i=id_j]/Σ_k 1[id_i=id_k]
  (counting only real columns). Rows of padding entries are all zero."""
  ok = row_mask(valid, b) > 0
  if ids is None:
    pos = jnp.eye(b, dtype=bool)
  else:
    ids = jnp.asarray(ids)
    pos = ids[:, None] == ids[None, :]
  pos = pos & ok[None, :] & ok[:, None]
  pos = pos.astype(jnp.float32)
  return safe_div(pos, jnp.sum(pos, axis=-1, keepdims=True))


def itc_loss(image_feat, text_feat, temp, valid=None, ids=None, itc_grad_scale: float = 1.0):
  """Symmetric image–text contrastive loss over the GLOBAL batch (docs/reference.md §3.1).

  image_feat, text_feat: [B,E] L2-normalised features of the whole global batch (row i of both is a
    positive pair). The trainer passes globally sharded arrays; XLA inserts the all-gather.
  temp: scalar τ (already clamped, see `clamp_temperature`).
  valid: [B] (None = all real). Padding rows are dropped as anchors (rows) and as negatives (columns).
  ids: [B] int (retrieval fine-tuning): soft targets y_ij = 1[id_i=id_j] / Σ_k 1[id_i=id_k]; the same
    targets serve both directions (the id relation is symmetric). None = pretraining (diagonal).

  S = v·tᵀ/τ;  L = ½·(mean_i CE(S_i, y_i) + mean_i CE((Sᵀ)_i, y_i)), means over real rows.

  itc_grad_scale: multiplies the gradient that flows into the FEATURES (hence into the encoders and
    projections) but not the gradient of τ. Why: the official all-gather's backward returns only the
    local slice of the gradient and DDP then averages parameter gradients over the W ranks, so the
    encoders effectively receive (1/W)·∂L_itc/∂θ while `temp`, used identically on every rank, gets
    the full ∂L_itc/∂τ (docs/reference.md §3.1, §10 item 3). 1.0 (default) = the clean global loss;
    1/W_official reproduces the official dynamics, W_official being the GPU count of the run being
    replicated: 1/8 for base 4M, 1/16 for large 4M and base stage 2, 1/24 for base 1B stage 1,
    1/32 for large stage 2 (docs/reference.md §6.4). Must be a Python float (it is a static hyper-parameter).
  """
  b = image_feat.shape[0]
  v = scale_gradient(f32(image_feat), itc_grad_scale)
  t = scale_gradient(f32(text_feat), itc_grad_scale)
  row = row_mask(valid, b)
  ok = row > 0
  logits = (v @ t.T) / f32(temp)
  targets = itc_targets(b, valid, ids)
  i2t = _soft_cross_entropy(logits, targets, ok)
  t2i = _soft_cross_entropy(logits.T, targets, ok)
  n = jnp.sum(row)
  return 0.5 * (safe_div(jnp.sum(row * i2t), n) + safe_div(jnp.sum(row * t2i), n))
