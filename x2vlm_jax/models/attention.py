"""One attention function for both towers, plus the official additive masks.

`implementation="xla"` is the portable default; `"cudnn"` selects the fused GPU kernel and must be
asked for explicitly (jax's `None` silently means XLA). Attention-probability dropout (BERT, p=0.1)
has no fused kernel, so a training step with it active takes the explicit softmax path.
"""

from typing import Optional

import jax
import jax.numpy as jnp

# Official mask constants (docs/reference.md §1.4, §10 item 18): self-attention adds (1-m)·(-10000), cross-attention
# uses HF's invert_attention_mask, (1-m)·(-1e9) in fp32.
SELF_ATTENTION_MASK_VALUE = -10000.0
CROSS_ATTENTION_MASK_VALUE = -1e9


def additive_mask(mask: jax.Array, value: float) -> jax.Array:
  """[B,Lk] or [B,Lq,Lk] {0,1} mask → additive bias broadcastable to [B,heads,Lq,Lk] (float32)."""
  mask = mask.astype(jnp.float32)
  if mask.ndim == 2:
    mask = mask[:, None, None, :]
  elif mask.ndim == 3:
    mask = mask[:, None, :, :]
  else:
    raise ValueError(f"attention mask: expected rank 2 or 3, got shape {mask.shape}")
  return (1.0 - mask) * value


def dot_product_attention(
  q,
  k,
  v,
  bias: Optional[jax.Array] = None,
  *,
  implementation: str = "xla",
  dropout_rate: float = 0.0,
  rng: Optional[jax.Array] = None,
):
  """q [B,Lq,N,Dh], k/v [B,Lk,N,Dh], additive `bias` broadcastable to [B,N,Lq,Lk] → [B,Lq,N,Dh]."""
  scale = q.shape[-1] ** -0.5
  if rng is not None and dropout_rate > 0.0:
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    keep = jax.random.bernoulli(rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(v.dtype)
    return jnp.einsum("bnqk,bknd->bqnd", probs, v)
  if bias is not None:
    bias = bias.astype(q.dtype)
    if implementation == "cudnn":
      # The cuDNN kernel wants a rank-4 bias with full batch/head dims or 1s; broadcast Lq explicitly.
      bias = jnp.broadcast_to(bias, bias.shape[:2] + (q.shape[1], k.shape[1]))
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, implementation=implementation)
