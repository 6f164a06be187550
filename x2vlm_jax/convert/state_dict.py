"""Reading a state dict (name → numpy array) from any of the containers the official code uses.

Accepted inputs:
  * `.th` / `.pth` / `.pt` / `.bin` / `.tar` torch pickles (X²-VLM `{"model": sd, "config": ...}`, BEiT-v2
    `{"model": sd}` or `{"module": sd}`, HF `pytorch_model.bin` as a bare dict);
  * `.npz` with the same keys (handy for tests and for machines without torch);
  * `.safetensors` (HF `model.safetensors`);
  * a directory holding `model.safetensors` or `pytorch_model.bin` (an HF model directory).

Pickles are always opened with `weights_only=True`: a malicious checkpoint cannot run code.
"""

import os
from typing import Dict

import numpy as np

# Wrapper keys under which the official scripts nest the real state dict (docs/reference.md §7.1, §7.4).
_WRAPPERS = ("model", "module", "state_dict")


def unwrap(obj) -> Dict[str, object]:
  """{'model': sd, 'config': ...} / {'module': sd} / sd → sd."""
  if not isinstance(obj, dict):
    raise ValueError(f"checkpoint: expected a dict (state dict or {{'model': state_dict}}), got {type(obj).__name__}")
  for key in _WRAPPERS:
    if key in obj and isinstance(obj[key], dict):
      return obj[key]
  return obj


def _to_numpy(value) -> np.ndarray:
  if isinstance(value, np.ndarray):
    return value
  if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
    t = value.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16
      t = t.float()
    return t.numpy()
  return np.asarray(value)


def _read_torch(path: str):
  import torch  # lazy: only pickled checkpoints need it

  return torch.load(path, map_location="cpu", weights_only=True)


def _read_npz(path: str):
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def _read_safetensors(path: str):
  from safetensors.numpy import load_file

  return load_file(path)


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Any supported file or HF model directory → flat {name: np.ndarray} (wrappers removed)."""
  if os.path.isdir(path):
    for name in ("model.safetensors", "pytorch_model.bin"):
      if os.path.exists(os.path.join(path, name)):
        return read_state_dict(os.path.join(path, name))
    raise ValueError(f"checkpoint: directory {path!r} has neither model.safetensors nor pytorch_model.bin")
  if not os.path.exists(path):
    raise ValueError(f"checkpoint: {path!r} does not exist")
  if path.endswith(".npz"):
    raw = _read_npz(path)
  elif path.endswith(".safetensors"):
    raw = _read_safetensors(path)
  else:
    raw = _read_torch(path)
  sd = unwrap(raw)
  out = {}
  for k, v in sd.items():
    if not isinstance(k, str):
      raise ValueError(f"checkpoint {path!r}: non-string key {k!r}")
    out[k] = _to_numpy(v)
  return out
