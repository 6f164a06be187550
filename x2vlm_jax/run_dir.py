"""A training run's workdir as a weights source, for runs that never exported (`--max_steps`, preempted).

    WORKDIR          the newest committed checkpoint of the run
    WORKDIR@STEP     that step's checkpoint (one of WORKDIR/checkpoints/<step>)

Wherever an export directory is accepted (`tools/evaluate.py --checkpoint`, `config.init_from`,
`inference.load`), params_io routes such a source here: the model config comes from WORKDIR/config.json,
the vocabulary from the run's `data.vocab_file`, and only the params of the saved train state are read
(Orbax partial restore: the optimizer state, twice the params' size, stays on disk).
"""

import json
import re
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import orbax.checkpoint as ocp

from x2vlm_jax import fs

_AT_STEP = re.compile(r"^(.*)@(\d+)$")


def parse(source: str) -> Tuple[str, Optional[int]]:
  """ "runs/x@1200" → ("runs/x", 1200); "runs/x" → ("runs/x", None)."""
  m = _AT_STEP.match(str(source))
  return (m.group(1), int(m.group(2))) if m else (str(source), None)


def is_run(source: str) -> bool:
  """True for a training workdir (config.json + checkpoints/), with or without @STEP."""
  root = fs.path(parse(source)[0])
  return (
    (root / "config.json").exists() and (root / "checkpoints").exists() and not (root / "model_config.json").exists()
  )


def run_config(source: str) -> ml_collections.ConfigDict:
  """The run's full config as it was saved (WORKDIR/config.json of its newest launch)."""
  return ml_collections.ConfigDict(json.loads((fs.path(parse(source)[0]) / "config.json").read_text()))


def model_config(source: str) -> ml_collections.ConfigDict:
  from x2vlm_jax.models import presets

  stored = json.loads((fs.path(parse(source)[0]) / "config.json").read_text())["model"]
  cfg = presets.get_preset(stored["name"])
  cfg.update(_tuples_like(cfg.to_dict(), stored))
  presets.validate(cfg)
  return cfg


def _tuples_like(reference: Dict[str, Any], stored: Dict[str, Any]) -> Dict[str, Any]:
  """JSON turned the preset's tuples into lists; give them back their type (ConfigDict checks it)."""
  out = {}
  for k, v in stored.items():
    ref = reference.get(k)
    if isinstance(ref, dict) and isinstance(v, dict):
      out[k] = _tuples_like(ref, v)
    elif isinstance(ref, tuple) and isinstance(v, list):
      out[k] = tuple(v)
    else:
      out[k] = v
  return out


def vocab_file(source: str) -> Optional[str]:
  vocab = run_config(source).get("data", {}).get("vocab_file", "")
  return vocab or None


def steps(source: str):
  root = fs.path(parse(source)[0])
  manager = ocp.CheckpointManager(root / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def step_of(source: str) -> int:
  """The checkpoint step `source` names (its newest when no @STEP), checked to exist."""
  path, step = parse(source)
  available = steps(source)
  if not available:
    raise ValueError(f"{path}: a training workdir without a committed checkpoint")
  if step is None:
    return available[-1]
  if step not in available:
    raise ValueError(f"{path}@{step}: no checkpoint of step {step}; saved steps: {available}")
  return step


def restore_params(source: str, target) -> Tuple[Any, int]:
  """The params of the run's train state at `source`'s step, restored onto `target` (a pytree of
  ShapeDtypeStructs with shardings, or of numpy arrays for host values) → (params, step)."""
  step = step_of(source)
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda x: (
      jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device)
      if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None
      else x
    ),
    target,
  )
  state_dir = fs.path(parse(source)[0]) / "checkpoints" / str(step) / "state"
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  with ocp.PyTreeCheckpointer() as ckptr:
    restored = ckptr.restore(
      state_dir,
      args=ocp.args.PyTreeRestore(item={"params": target}, restore_args={"params": restore_args}, partial_restore=True),
    )
  return restored["params"], step
