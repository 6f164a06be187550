"""What every objective here shares: float32 math, the row mask of padding, guarded means.

Conventions of every function in this package:
  * all math runs in float32, whatever dtype the model computed in;
  * `valid` is the batch contract's [B] float mask (1 real row, 0 padding row, see `x2vlm_jax.batch`):
    padding rows never contribute to a loss, never serve as a negative, never enter a denominator;
  * shapes are static and there is no Python branching on traced values, so everything is jit-able
    and works on globally sharded arrays (XLA inserts the gathers the contrastive terms need);
  * every mean is guarded: a batch with nothing to average over yields 0, not NaN.
"""

import math

import jax
import jax.numpy as jnp

# Large finite negative used instead of -inf for masked logits: exp() underflows to exactly 0 while
# log_softmax stays finite, so masked entries never produce NaN values or NaN gradients.
# |logit| ≤ 1/τ_min = 1000 for L2-normalised features, far away from this.
MASKED_LOGIT = -1e9


def f32(x):
  return jnp.asarray(x).astype(jnp.float32)


def row_mask(valid, n: int):
  """`valid` (None = all real) → float32 [n]."""
  if valid is None:
    return jnp.ones((n,), jnp.float32)
  return (f32(valid) > 0).astype(jnp.float32)


def safe_div(num, den):
  # Denominators here are counts; max(·, 1) turns an empty batch into 0/1 = 0 without a NaN in
  # either the value or the gradient.
  return num / jnp.maximum(den, 1.0)


def hard_cross_entropy(logits, labels):
  """Per-entry −log softmax(logits)[label]; labels outside [0, V) must be masked by the caller."""
  logp = jax.nn.log_softmax(f32(logits), axis=-1)
  safe = jnp.clip(labels, 0, logits.shape[-1] - 1)
  return -jnp.take_along_axis(logp, safe[..., None].astype(jnp.int32), axis=-1)[..., 0]


def concat_rows(parts):
  """Interleaves equal-sized [B, ...] arrays row by row → [B·P, ...] (row b of part 0, row b of part 1,
  …), to run several row groups through one model call: concat_blocks with one row per block.
  `split_rows` undoes it."""
  return concat_blocks(parts)


def split_rows(x, count: int):
  """The `count` parts of concat_rows."""
  return split_blocks(x, [x.shape[0] // count] * count)


def concat_blocks(parts):
  """[n_i, ...] arrays (equal trailing shapes) → one [Σ n_i, ...] batch for one model call, in G blocks,
  G = gcd(n_i): block g holds rows g·n_0/G … of part 0, then those of part 1, … . Whatever way the mesh
  splits the batch (D shards, D | every n_i, hence D | G), each device's rows stay on it — a plain
  concatenate puts part 0's rows where part 1's shards live and moves them (measured on a 4-device
  data-parallel pre-training step: 4× the collective-permutes) — and the order depends on the row
  counts only, not on the mesh, so neither do dropout's and drop-path's masks (tests/test_trainer.py:
  sharding equivalence). `split_blocks` undoes it."""
  g = math.gcd(*(int(p.shape[0]) for p in parts))
  blocks = [p.reshape((g, p.shape[0] // g) + p.shape[1:]) for p in parts]
  return jnp.concatenate(blocks, axis=1).reshape((-1,) + parts[0].shape[1:])


def split_blocks(x, sizes):
  """The parts of concat_blocks, of `sizes` rows each."""
  g = math.gcd(*(int(n) for n in sizes))
  y = x.reshape((g, x.shape[0] // g) + x.shape[1:])
  out, start = [], 0
  for n in sizes:
    out.append(y[:, start : start + n // g].reshape((n,) + x.shape[1:]))
    start += n // g
  return out
