"""Mesh, logical-axis rules and the shardings of params, optimizer state and batches.

The mesh has three named axes: `data` (pure data parallelism), `fsdp` (data parallelism whose
replicas also shard the parameters and optimizer state) and `tensor` (model parallelism inside
matmuls). The batch is split over (data, fsdp). Parameters carry logical axis names (see
`x2vlm_jax.models.layers`) which `rules` map to mesh axes, first match wins. A dimension that the
mesh axis does not divide stays replicated (logged), rather than failing deep inside XLA.
"""

from typing import Any, Dict, Sequence, Tuple

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# The default mapping; a config may override it (`config.sharding_rules`).
DEFAULT_RULES = (
  ("embed", "fsdp"),
  ("mlp", "tensor"),
  ("heads", "tensor"),
  ("vocab", "tensor"),
  ("joint", None),
  ("norm", None),
  # The leading axis of scanned (stacked) layer params: never sharded, each scan step reads one
  # layer, whose other axes carry the rules above (x2vlm_jax/models/scan.py).
  ("layers", None),
)


def create_mesh(shape: Sequence[int], devices=None) -> jax.sharding.Mesh:
  """shape = (data, fsdp, tensor); one entry may be -1 (fills the remaining devices)."""
  devices = jax.devices() if devices is None else devices
  shape = list(shape)
  if len(shape) != 3:
    raise ValueError(f"mesh: expected (data, fsdp, tensor), got {tuple(shape)}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {tuple(shape)}")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"mesh: {len(devices)} devices are not divisible by the fixed axes {tuple(shape)}")
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"mesh: shape {tuple(shape)} needs {int(np.prod(shape))} devices, have {len(devices)}")
  # Auto axis types: GSPMD propagates shardings through the model; we only pin inputs/outputs.
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _spec_for(shape, logical_axes, rules, mesh) -> P:
  rule_map = {}
  for name, target in rules:
    rule_map.setdefault(name, target)  # first match wins
  out, used = [], set()
  for dim, name in zip(shape, logical_axes or ()):
    target = rule_map.get(name) if name is not None else None
    size = mesh.shape[target] if target else 1
    if target is None or target in used or size == 1:
      out.append(None)
    elif dim % size:
      logging.info("sharding: dim %d (%s) not divisible by mesh axis %s=%d; replicated", dim, name, target, size)
      out.append(None)
    else:
      out.append(target)
      used.add(target)
  while out and out[-1] is None:
    out.pop()
  return P(*out)


def param_specs(abstract_model, rules, mesh) -> Dict[str, Any]:
  """Pure-dict tree of PartitionSpecs for the model's params (from their logical-axis metadata)."""
  state = nnx.state(abstract_model, nnx.Param)
  flat = []
  for path, var in nnx.to_flat_state(state):
    value = var.get_value()
    axes = var.get_metadata().get("out_sharding")
    flat.append((path, _spec_for(value.shape, axes, rules, mesh)))
  return nnx.to_pure_dict(nnx.from_flat_state(flat))


def named(mesh, specs):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def _path_key(path) -> Tuple[str, ...]:
  out = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        out.append(str(getattr(k, attr)))
        break
    else:
      out.append(str(k))
  return tuple(out)


def mirror_param_shardings(tree, param_shardings, mesh):
  """Shardings for a tree (optimizer state) whose sub-trees mirror the params: each leaf takes the
  sharding of the param whose path is the longest suffix of its own path; others are replicated."""
  by_path = {_path_key(p): s for p, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]}
  replicated = NamedSharding(mesh, P())

  def pick(path, leaf):
    key = _path_key(path)
    for i in range(len(key)):
      s = by_path.get(key[i:])
      if s is not None and len(s.spec) <= len(getattr(leaf, "shape", ())):
        return s
    return replicated

  return jax.tree_util.tree_map_with_path(pick, tree)


def batch_sharding(mesh, ndim: int) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def global_batch(mesh, host_batch):
  """Per-host numpy batch (any nesting of dicts) → global jax arrays split over (data, fsdp).

  Process p's rows form block p of every leaf's global batch dimension, so host-local indices into a
  host's own rows must be offset by the task (e.g. pre-training's region `image_index`).
  """
  return jax.tree.map(
    lambda v: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v)), host_batch
  )
