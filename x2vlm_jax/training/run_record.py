"""The run's record in its workdir stays true across resumes: config.json, its history, metrics.jsonl.

  WORKDIR/config.json            the config of the newest launch
  WORKDIR/config_history.jsonl   one row per launch: {time, start_step, forced, changed: {key: [old, new]},
                                 config}; the first row holds the launch that started the run
  WORKDIR/metrics.jsonl          one row per logged step (and evaluation): a resumed run re-runs the steps
                                 after its checkpoint, so their rows from the interrupted launch move to
  WORKDIR/metrics.superseded.jsonl  (nothing is lost; readers and `sweep --table` see each step once)

A resumed launch whose config differs from the previous one logs the changed keys. Keys that change
what the remaining steps compute (batch size, lr, data, model, seed, ...) would make the resumed run
something no single config describes: they are refused unless `--force`. The keys below steer only
logging, checkpointing, evaluation, profiling or the device layout (Orbax restores onto any mesh) and
may change freely.
"""

import json
import time
from typing import Any, Dict, Optional, Tuple

import jax
from absl import logging

from x2vlm_jax.training import metrics as metrics_lib

# Prefixes of keys that leave the trajectory of the training steps as it is.
FREE_TO_CHANGE = (
  "log_every",
  "checkpoint_every",
  "checkpoint_every_minutes",
  "keep_checkpoints",
  "async_checkpoints",
  "evals",
  "best_metric",
  "best_mode",
  "profile",
  "profile_start",
  "profile_steps",
  "mesh",
  "sharding_rules",
  "init_from",  # ignored on resume: the checkpoint wins
  "data.data_dir",  # the same data, moved
)

HISTORY = "config_history.jsonl"
SUPERSEDED = "metrics.superseded.jsonl"


class ConfigChangedError(ValueError):
  pass


def flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
  """{"optim": {"lr": 1}} → {"optim.lr": 1}; lists stay values (compared as JSON)."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def diff(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
  """Changed keys of two configs (as JSON dicts) → {dotted key: (old, new)}; absent = None."""
  a, b = flatten(old), flatten(new)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _free(key: str) -> bool:
  return any(key == p or key.startswith(p + ".") for p in FREE_TO_CHANGE)


def breaking(changed: Dict[str, Tuple[Any, Any]]) -> Dict[str, Tuple[Any, Any]]:
  return {k: v for k, v in changed.items() if not _free(k)}


def _format(changed) -> str:
  return "\n".join(
    f"  {k}: {json.dumps(o, default=str)} -> {json.dumps(n, default=str)}" for k, (o, n) in changed.items()
  )


def record_launch(root, config_json: Dict[str, Any], start_step: Optional[int], *, force: bool = False) -> None:
  """Checks a resumed launch's config against the previous one (every host reads; all raise alike),
  then (process 0) writes config.json and appends the launch to the history."""
  previous_path = root / "config.json"
  changed = {}
  if start_step is not None and previous_path.exists():
    changed = diff(json.loads(previous_path.read_text()), config_json)
    bad = breaking(changed)
    if bad and not force:
      raise ConfigChangedError(
        f"{root}: resuming step {start_step} with a config that changes what the remaining steps compute:\n"
        f"{_format(bad)}\nThe resumed run would not be the run either config describes. Use a new workdir, "
        f"restore these values, or pass --force to resume anyway (recorded in {HISTORY})."
      )
    if changed:
      logging.warning(
        "resuming step %d with a changed config%s:\n%s",
        start_step,
        " (--force)" if bad else "",
        _format(changed),
      )
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    # Every host has read the previous config.json (and raised or not, alike) before process 0 replaces it.
    multihost_utils.sync_global_devices("run_record: config checked")
  if jax.process_index() != 0:
    return
  previous_path.write_text(json.dumps(config_json, indent=2, sort_keys=True, default=str))
  row = {
    "time": time.time(),
    "start_step": start_step or 0,
    "forced": bool(breaking(changed)),
    "changed": {k: [o, n] for k, (o, n) in changed.items()},
    "config": config_json,
  }
  metrics_lib.JsonLines(root / HISTORY).append(json.dumps(row, default=str))


def drop_replayed_rows(root, start_step: Optional[int]) -> int:
  """Process 0, before a resumed launch logs: rows of metrics.jsonl past the checkpoint it resumes
  (`start_step`) are re-logged by this launch, so they move to metrics.superseded.jsonl. → how many."""
  path = root / "metrics.jsonl"
  if jax.process_index() != 0 or start_step is None or not path.exists():
    return 0
  kept, moved = [], []
  for line in path.read_text().splitlines():
    try:
      step = json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
      continue  # a line cut short by a kill
    (moved if step > start_step else kept).append(line)
  if moved:
    target = root / SUPERSEDED
    before = target.read_text() if target.exists() else ""
    target.write_text(before + "".join(line + "\n" for line in moved))
  if moved or len(kept) != len(path.read_text().splitlines()):
    path.write_text("".join(line + "\n" for line in kept))
  if moved:
    logging.info(
      "metrics.jsonl: %d rows past step %d moved to %s (this launch re-runs them)", len(moved), start_step, SUPERSEDED
    )
  return len(moved)
