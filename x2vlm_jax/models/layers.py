"""Small building blocks shared by the towers: annotated Dense/LayerNorm, the heads' MLP, dropout.

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `vocab`, `norm`, `joint`, ...)
that `x2vlm_jax.sharding` maps onto mesh axes. `eager_sharding=False` keeps module
construction mesh-free; shardings are resolved from the rules when the train state is built.
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Axes = Sequence[Optional[str]]

# Every logical axis name used by the model's parameters.
LOGICAL_AXES = ("embed", "mlp", "heads", "vocab", "joint", "norm", "layers")
# Rules that replicate everything: for abstract evaluation under an ambient mesh, where Flax would
# otherwise try to read the logical names as mesh axes.
REPLICATED_RULES = tuple((name, None) for name in LOGICAL_AXES)

bert_normal = nnx.initializers.normal(0.02)  # HF BERT init (cross-attention is new in X²-VLM)
trunc_normal = nnx.initializers.truncated_normal(0.02)  # timm/BEiT init


def torch_default_kernel(key, shape, dtype=jnp.float32):
  """PyTorch nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); used for the new X²-VLM heads."""
  bound = 1.0 / jnp.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def annotate(init, axes: Axes):
  return nnx.with_partitioning(init, tuple(axes), eager_sharding=False)


def dense(
  in_features: int,
  out_features: int,
  axes: Axes,
  *,
  rngs: nnx.Rngs,
  dtype,
  use_bias: bool = True,
  kernel_init=bert_normal,
  torch_bias: bool = False,
) -> nnx.Linear:
  """Linear y = x·W + b with logical axes `axes` = (in_axis, out_axis) on W and (out_axis,) on b."""
  if torch_bias:
    bound = 1.0 / float(in_features) ** 0.5
    bias_init = lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound)  # noqa: E731
  else:
    bias_init = nnx.initializers.zeros_init()
  return nnx.Linear(
    in_features,
    out_features,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=annotate(kernel_init, axes),
    bias_init=annotate(bias_init, (axes[1],)),
    rngs=rngs,
  )


def layer_norm(features: int, eps: float, *, rngs: nnx.Rngs, dtype) -> nnx.LayerNorm:
  return nnx.LayerNorm(
    features,
    epsilon=eps,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=annotate(nnx.initializers.ones_init(), ("norm",)),
    bias_init=annotate(nnx.initializers.zeros_init(), ("norm",)),
    rngs=rngs,
  )


def gelu(x):
  # The official code uses the exact (erf) GELU everywhere; Flax's default is the tanh approximation.
  return jax.nn.gelu(x, approximate=False)


def dropout(x, rate: float, rng: Optional[jax.Array]):
  """Inverted dropout; identity when `rng` is None (evaluation) or rate is 0."""
  if rng is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def drop_path(x, rate, rng: Optional[jax.Array], mask_shape):
  """Stochastic depth with an explicit mask shape, scaled by 1/keep like timm. `rate` may be a traced
  scalar (a scanned layer's rate): a rate of 0 then keeps everything and divides by 1, the same values
  as the static skip."""
  if rng is None or rate is None or (isinstance(rate, (int, float)) and rate <= 0.0):
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, mask_shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def split_rng(rng: Optional[jax.Array], n: int):
  if rng is None:
    return [None] * n
  return list(jax.random.split(rng, n))


class MLPHead(nnx.Module):
  """`build_mlp(in, out)` of the official code: Linear(in→2in) → LayerNorm → GELU → Linear(2in→out).

  Parameter names fc0 / ln / fc1 stand for the PyTorch Sequential indices 0 / 1 / 3.
  """

  def __init__(
    self, in_features: int, out_features: int, *, eps: float, rngs: nnx.Rngs, dtype, hidden: Optional[int] = None
  ):
    hidden = hidden or 2 * in_features
    self.fc0 = dense(
      in_features, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype, kernel_init=torch_default_kernel, torch_bias=True
    )
    self.ln = layer_norm(hidden, eps, rngs=rngs, dtype=dtype)
    self.fc1 = dense(
      hidden, out_features, ("mlp", None), rngs=rngs, dtype=dtype, kernel_init=torch_default_kernel, torch_bias=True
    )

  def __call__(self, x):
    return self.fc1(gelu(self.ln(self.fc0(x))))
