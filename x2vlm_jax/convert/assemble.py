"""Flat {"a/b/c": array} ⇄ the nested pure dict that `params_io.save` / `into_model` take."""

from typing import Any, Dict

import jax
import numpy as np
from flax import nnx


def _walk(tree, prefix=""):
  for k, v in tree.items():
    path = f"{prefix}{k}"
    if isinstance(v, dict):
      yield from _walk(v, path + "/")
    else:
      yield path, k, tree


def flatten(params: Dict[str, Any]) -> Dict[str, np.ndarray]:
  return {path: np.asarray(parent[k]) for path, k, parent in _walk(params)}


def unflatten(cfg, flat: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """Nested pure dict with the model's exact key types (ints for list indices), values from `flat`."""
  from x2vlm_jax import params_io
  tree = nnx.to_pure_dict(nnx.state(params_io.abstract_model(cfg), nnx.Param))
  extra = set(flat)
  for path, k, parent in list(_walk(tree)):
    if path not in flat:
      raise KeyError(f"unflatten: no value for {path}")
    want = tuple(parent[k].shape)
    if tuple(flat[path].shape) != want:
      raise ValueError(f"unflatten: {path} expected {want}, got {flat[path].shape}")
    parent[k] = np.asarray(flat[path], np.float32)
    extra.discard(path)
  if extra:
    raise KeyError(f"unflatten: values for unknown params {sorted(extra)}")
  return tree


def fresh_flat(cfg, seed: int) -> Dict[str, np.ndarray]:
  """The model's own initialisers (spec §1.2, §1.5) with a given seed, as flat numpy arrays."""
  from x2vlm_jax.models import X2VLM
  model = X2VLM(cfg, rngs=nnx.Rngs(seed))
  params = jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return flatten(params)
