"""The shipped experiment configs (pretrain/, finetune/), inside the package so that an installed user
names them without a clone: `x2vlm-train --config=pretrain/x2vlm_base_4m.py` (README: Console
scripts). A clone's top-level `configs` is a symlink to this directory, so `--config=configs/...` paths
and `python main.py` work there as they always did.

A `--config` value is a path first: a file that exists (a user's own config, a clone's `configs/...`) is
taken as it is; otherwise it names a shipped config, relative to this directory, with or without a
leading `configs/` and the `.py` (`pretrain/shapes_tiny`, `configs/finetune/coco_retrieval.py:model=base`).
"""

import os
from typing import List, Optional, Sequence

DIR = os.path.dirname(os.path.abspath(__file__))
_PREFIXES = ("x2vlm_jax/configs/", "configs/")


def names() -> List[str]:
  """Every shipped config a run can name ('finetune/coco_retrieval.py', ...): the files with get_config."""
  out = []
  for group in ("pretrain", "finetune"):
    for f in sorted(os.listdir(os.path.join(DIR, group))):
      if f.endswith(".py") and not f.startswith("_"):
        with open(os.path.join(DIR, group, f)) as fh:
          if "\ndef get_config(" in fh.read():
            out.append(f"{group}/{f}")
  return out


def _shipped(name: str) -> Optional[str]:
  for prefix in _PREFIXES:
    if name.startswith(prefix):
      name = name[len(prefix) :]
      break
  for candidate in (name, name + ".py"):
    full = os.path.normpath(os.path.join(DIR, candidate))
    if full.startswith(DIR + os.sep) and os.path.isfile(full):
      return full
  return None


def path(name: str) -> str:
  """A shipped config's file: path('pretrain/x2vlm_base_4m.py') → its absolute path in the package."""
  full = _shipped(name)
  if full is None:
    raise FileNotFoundError(f"no shipped config {name!r}; shipped: {', '.join(names())}")
  return full


def resolve(spec: str) -> str:
  """A --config value `FILE[:arg]` → the same value with FILE made a real path: unchanged when FILE
  exists (or is a URL), a shipped config's absolute path when it names one, else unchanged (the
  config loader then reports the missing file)."""
  file, sep, arg = spec.partition(":")
  if not file or "://" in spec or os.path.isfile(file):
    return spec
  full = _shipped(file)
  return spec if full is None else full + sep + arg


def resolve_argv(argv: Sequence[str], flag: str = "config") -> List[str]:
  """Command-line arguments with every `--FLAG=VALUE` / `--FLAG VALUE` resolved (`--FLAG.key=...`
  overrides are left alone)."""
  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith(f"--{flag}="):
      out[i] = f"--{flag}=" + resolve(a[len(flag) + 3 :])
    elif a == f"--{flag}" and i + 1 < len(out):
      out[i + 1] = resolve(out[i + 1])
  return out
