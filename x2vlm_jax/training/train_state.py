"""The train state {step, params, opt_state, rng} created directly sharded on the mesh.

abstract init (`jax.eval_shape`) → shardings from the params' logical axes → `jax.jit(init,
out_shardings=...)`: no array is ever materialised whole on one device.
"""

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from x2vlm_jax import params_io
from x2vlm_jax import sharding as shd
from x2vlm_jax.models import X2VLM

TrainState = Dict[str, Any]


def _init_fn(model_cfg, tx):
  def init(key):
    init_key, step_key = jax.random.split(key)
    model = X2VLM(model_cfg, rngs=nnx.Rngs(params=init_key))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    # Guard: a weak-typed init value (BEiT's layer scale was one before models/vision.py fixed it)
    # would make the second step's jit cache key differ from the first's, compiling the whole step
    # twice. Strong types from the start, whatever a future initialiser returns.
    params = jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype), params)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params), "rng": step_key}

  return init


def _layout(model_cfg, tx, mesh, rules, seed: int):
  """→ (graphdef, ShapeDtypeStruct state, state shardings) from one abstract model: the state's
  structure is init's ({step, params, opt_state, rng}) without tracing init a second time (the
  model's initialisers are the costly part of that trace, and `create` traces them once more to
  compile)."""
  model = params_io.abstract_model(model_cfg)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  state = {
    "step": jax.ShapeDtypeStruct((), jnp.int32),
    "params": params,
    "opt_state": jax.eval_shape(tx.init, params),
    "rng": jax.eval_shape(lambda k: jax.random.split(k)[1], jax.random.PRNGKey(seed)),
  }
  param_shardings = shd.named(mesh, shd.param_specs(model, rules, mesh))
  replicated = NamedSharding(mesh, P())
  shardings = {
    "step": replicated,
    "params": param_shardings,
    "opt_state": shd.mirror_param_shardings(state["opt_state"], param_shardings, mesh),
    "rng": replicated,
  }
  return nnx.graphdef(model), state, shardings


def abstract(model_cfg, tx, mesh, rules, seed: int) -> Tuple[TrainState, Dict[str, Any]]:
  """→ (ShapeDtypeStruct state, state shardings): the state's layout, nothing allocated."""
  _, state, shardings = _layout(model_cfg, tx, mesh, rules, seed)
  return state, shardings


def create(model_cfg, tx, mesh, rules, seed: int) -> Tuple[Any, TrainState, Dict[str, Any]]:
  """→ (graphdef, state, state_shardings)."""
  graphdef, _, shardings = _layout(model_cfg, tx, mesh, rules, seed)
  state = jax.jit(_init_fn(model_cfg, tx), out_shardings=shardings)(jax.random.PRNGKey(seed))
  return graphdef, state, shardings


def abstract_like(state, shardings):
  """ShapeDtypeStructs carrying the target shardings (Orbax restores onto the current mesh)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def param_norm(params):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(params)))
