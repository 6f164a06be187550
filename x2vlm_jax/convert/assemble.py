"""Flat {"a/b/c": array} ⇄ the nested pure dict that `params_io.save` / `into_model` take."""

from typing import Any, Dict

import jax
import numpy as np
from flax import nnx, traverse_util


def _key(path) -> str:
  return "/".join(str(k) for k in path)


def flatten(params: Dict[str, Any]) -> Dict[str, np.ndarray]:
  return {_key(path): np.asarray(v) for path, v in traverse_util.flatten_dict(params).items()}


def unflatten(cfg, flat: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """Nested pure dict with the model's exact key types (ints for list indices), values from `flat`."""
  from x2vlm_jax import params_io

  tree = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(params_io.abstract_model(cfg), nnx.Param)))
  extra = set(flat)
  out = {}
  for path, leaf in tree.items():
    key = _key(path)
    if key not in flat:
      raise KeyError(f"unflatten: no value for {key}")
    want = tuple(leaf.shape)
    if tuple(flat[key].shape) != want:
      raise ValueError(f"unflatten: {key} expected {want}, got {flat[key].shape}")
    out[path] = np.asarray(flat[key], np.float32)
    extra.discard(key)
  if extra:
    raise KeyError(f"unflatten: values for unknown params {sorted(extra)}")
  return traverse_util.unflatten_dict(out)


def fresh_flat(cfg, seed: int) -> Dict[str, np.ndarray]:
  """The model's own initialisers (docs/reference.md §1.2, §1.5) with a given seed, as flat numpy arrays."""
  from x2vlm_jax.models import X2VLM

  model = X2VLM(cfg, rngs=nnx.Rngs(seed))
  params = jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return flatten(params)
