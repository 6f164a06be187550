"""Scan over identical layers, and rematerialisation policies (MaxText / big_vision pattern).

A tower with `scan_layers` keeps ONE stacked copy of its per-layer module: every parameter gets a
leading layer axis (logical name `layers`, never sharded, see `x2vlm_jax.sharding`), and the forward
pass is one `jax.lax.scan` whose body is the ordinary per-layer module (`VisionBlock`, `BertLayer`)
merged from the slice of the stacked state. XLA then compiles one layer instead of 12–24, which is
what keeps compile time and compiler memory flat in depth, and under FSDP only the current layer's
gathered weights are live.

What differs per layer enters the scan as data: the per-layer RNG keys and drop-path rates.
The per-layer module stays callable on its own (the unscanned layout, other towers reuse it).

Remat policies (`config.model.remat.{vision,text}`), applied to one layer (the scanned body or each
unrolled layer):
  none                               keep every activation (fastest, most memory)
  full                               keep only the layer input; recompute the layer in backward
  dots_saveable                      keep matmul outputs, recompute the element-wise ops
  dots_with_no_batch_dims_saveable   keep only matmuls without batch dimensions (the projections,
                                     not attention's QKᵀ / PV); recompute the rest
"""

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from x2vlm_jax.models.presets import REMAT_POLICIES, remat_policy  # noqa: F401 (re-exported)

LAYER_AXIS = "layers"  # logical name of the stacked parameters' leading axis (replicated)


def checkpoint(fn: Callable, policy: str) -> Callable:
  """`fn` under jax.checkpoint with the named policy ("none": unchanged)."""
  if policy == "none":
    return fn
  policies = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  }
  # prevent_cse=False: inside a scan the loop already keeps XLA from merging the recomputation away.
  return jax.checkpoint(fn, policy=policies[policy], prevent_cse=False)


def remat_layer(fn: Callable, policy: str) -> Callable:
  """An unrolled layer call `fn(module, *args)` under the policy (nnx-aware lifting)."""
  if policy == "none":
    return fn
  if policy == "full":
    return nnx.remat(fn)
  return nnx.remat(fn, policy=getattr(jax.checkpoint_policies, policy))


def stacked(make: Callable[[nnx.Rngs], nnx.Module], n: int, rngs: nnx.Rngs) -> nnx.Module:
  """n independent initialisations of `make(rngs)` as one module whose params have a leading axis n."""

  @nnx.split_rngs(splits=n)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYER_AXIS})
  def create(r):
    return make(r)

  return create(rngs)


def layer_keys(rng: Optional[jax.Array], total: int, start: int, end: int) -> Optional[jax.Array]:
  """Keys [end-start] equal to `layers.split_rng(rng, total)[start:end]` (the unrolled stacks' keys)."""
  if rng is None:
    return None
  return jax.random.split(rng, total)[start:end]


def rates_input(rates) -> Any:
  """Per-layer drop-path rates as scan data, or the Python 0.0 when all are zero (then the layer
  skips drop-path statically, exactly like the unrolled layer with rate 0)."""
  rates = np.asarray(rates, np.float32)
  if not np.any(rates > 0):
    return None
  return jnp.asarray(rates)


def constrain_batch(x):
  """Pins an activation [B, ...] to batch sharding over (data, fsdp) when the ambient mesh has an
  `fsdp` axis > 1. Without it GSPMD may propagate the weights' `embed`→fsdp sharding onto the hidden
  axis of the activations (resharding them and replicating the batch), which is how FSDP ended up with
  MORE temporaries than data parallelism (docs/performance.md). No mesh, or no FSDP: unchanged."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or dict(mesh.shape).get("fsdp", 1) == 1 or not hasattr(x, "ndim") or x.ndim == 0:
    return x
  axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
  if x.shape[0] % int(np.prod([dict(mesh.shape)[a] for a in axes])):
    return x
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(axes))


def run(
  stack: nnx.Module,
  carry,
  body: Callable,
  *,
  xs=None,
  policy: str = "none",
):
  """(carry, y_i) ← body(layer_i, carry, x_i) for each layer i of `stack` (x_i: slice i of `xs`).

  → (final carry, the y_i stacked on a leading axis).
  """
  graphdef, state = nnx.split(stack)

  def step(c, inp):
    layer_state, x = inp
    return body(nnx.merge(graphdef, layer_state), c, x)

  # A layer may return another dtype than it was given (bfloat16 compute: the residual stream leaves
  # the first unrolled layer in float32). Start the carry in the dtype a layer returns, which is what
  # the unrolled layers 2 … L see (an exact upcast for layer 1, whose matmuls cast to the compute dtype).
  first = jax.tree.map(lambda a: a[0], (state, xs))
  out = jax.eval_shape(step, carry, first)[0]
  carry = jax.tree.map(lambda c, o: c.astype(o.dtype) if hasattr(c, "astype") else c, carry, out)
  return jax.lax.scan(checkpoint(step, policy), carry, (state, xs))


def num_layers(stack: Optional[nnx.Module]) -> int:
  if stack is None:
    return 0
  leaf = jax.tree.leaves(nnx.state(stack, nnx.Param))[0]
  return int(leaf.shape[0])
