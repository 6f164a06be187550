"""Orbax checkpoints of the train state with the input pipeline's position, in WORKDIR/checkpoints.

    WORKDIR/checkpoints/<step>/state     the train state (async save; restores onto any mesh)
    WORKDIR/checkpoints/<step>/meta      {"step", "time", "best": {...}}
    WORKDIR/checkpoints/<step>/input     every host's input-pipeline state {"process_<i>": state}
    WORKDIR/checkpoints/<step>/metrics   evaluation results of that step, if it was evaluated

The input states are gathered from all hosts (a few integers each) and saved as one Orbax item, so
they commit atomically with the step they belong to and are garbage-collected with it, on any
filesystem. Kept: the newest `keep` steps, plus the best step by `best_metric` when one is named.

A state saved in the other layer layout (`model.scan_layers` changed between runs, x2vlm_jax/params_layout.py)
is restored on the host in its own layout, converted (params and the optimizer moments alike) and
placed onto the requested shardings.
"""

import json
from typing import Any, Dict, List, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from x2vlm_jax import fs, params_layout


def gather_host_states(local: Optional[Dict[str, Any]]) -> Dict[str, Any]:
  """Every host's (JSON-able) state → {"process_<i>": state} on every host (one small collective)."""
  if jax.process_count() == 1:
    return {"process_0": local}
  from jax.experimental import multihost_utils

  data = np.frombuffer(json.dumps(local).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int32))
  padded = np.zeros((int(np.max(sizes)),), np.uint8)
  padded[: data.size] = data
  blobs = multihost_utils.process_allgather(padded)
  return {f"process_{i}": json.loads(bytes(blobs[i][: int(sizes[i][0])]).decode()) for i in range(jax.process_count())}


class Checkpointer:
  def __init__(
    self,
    workdir: str,
    *,
    keep: int = 3,
    async_save: bool = True,
    best_metric: Optional[str] = None,
    best_mode: str = "max",
  ):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode: expected 'max' or 'min', got {best_mode!r}")
    self.best_metric = best_metric or None
    policies: List[Any] = [cm.LatestN(n=keep)]
    extra = {}
    if self.best_metric:
      metric = self.best_metric
      best_fn = lambda m: float(m[metric])  # noqa: E731
      policies.append(
        cm.BestN(get_metric_fn=best_fn, reverse=best_mode == "min", n=1, keep_checkpoints_without_metrics=False)
      )
      extra = dict(best_fn=best_fn, best_mode=best_mode)
    options = ocp.CheckpointManagerOptions(
      create=True,
      enable_async_checkpointing=async_save,
      preservation_policy=cm.AnyPreservationPolicy(policies),
      **extra,
    )
    self._mngr = ocp.CheckpointManager(
      fs.path(workdir) / "checkpoints", options=options, item_names=("state", "meta", "input")
    )

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def best_step(self) -> Optional[int]:
    """The kept step with the best `best_metric` (None without evaluated checkpoints)."""
    if not self.best_metric:
      return None
    return self._mngr.best_step() if any(self._mngr.metrics(s) is not None for s in self._mngr.all_steps()) else None

  def all_steps(self) -> List[int]:
    return list(self._mngr.all_steps())

  def reached_preemption(self, step: int) -> bool:
    """True on every host at the same step once any host received a preemption notice (multi-host:
    JAX's preemption sync point, fed by SIGTERM through the coordination service)."""
    return self._mngr.reached_preemption(step)

  def save(
    self,
    step: int,
    state,
    meta: Dict[str, Any],
    input_state: Optional[Dict[str, Any]] = None,
    *,
    metrics: Optional[Dict[str, float]] = None,
    force: bool = False,
  ) -> bool:
    """Collective: every host calls it. `input_state` is this host's iterator state."""
    inputs = gather_host_states(input_state)
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      raise ValueError(
        f"best_metric {self.best_metric!r} is not among the evaluation results {sorted(metrics)}; name one of them"
      )
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta), input=ocp.args.JsonSave(inputs)
    )
    return self._mngr.save(step, args=args, metrics=metrics if self.best_metric else None, force=force)

  def _stored_stacked(self, step: int) -> bool:
    meta = self._mngr.item_metadata(step)
    state = meta["state"] if meta is not None and "state" in meta else None
    return params_layout.tree_is_stacked(state) if state is not None else False

  def restore(self, step: int, abstract_state):
    """→ (state, meta, this host's input state or None)."""
    want = params_layout.tree_is_stacked(abstract_state)
    if self._stored_stacked(step) != want:
      return self._restore_other_layout(step, abstract_state, stacked_on_disk=not want)
    restored = self._mngr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore(), input=ocp.args.JsonRestore()
      ),
    )
    inputs = restored["input"] or {}
    key = f"process_{jax.process_index()}"
    if inputs and key not in inputs:
      raise ValueError(
        f"checkpoint step {step}: no input-pipeline state for {key} (saved by "
        f"{len(inputs)} processes, {jax.process_count()} now): resume with the same "
        "number of processes"
      )
    return restored["state"], restored["meta"], inputs.get(key)

  def _restore_other_layout(self, step: int, abstract_state, stacked_on_disk: bool):
    on_disk = params_layout.convert_tree(
      jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_state), stacked_on_disk
    )
    # numpy targets: Orbax restores host arrays (np.empty costs nothing until written).
    target = jax.tree.map(lambda x: np.empty(x.shape, x.dtype), on_disk)
    restored = self._mngr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore(), input=ocp.args.JsonRestore()
      ),
    )
    host = params_layout.convert_tree(restored["state"], not stacked_on_disk)
    state = jax.tree.map(
      lambda v, a: jax.make_array_from_callback(a.shape, a.sharding, lambda idx, v=np.asarray(v): v[idx]),
      host,
      abstract_state,
    )
    inputs = restored["input"] or {}
    return state, restored["meta"], inputs.get(f"process_{jax.process_index()}")

  def metrics(self, step: int) -> Optional[Dict[str, Any]]:
    return self._mngr.metrics(step)

  def wait(self):
    self._mngr.wait_until_finished()

  def close(self):
    self._mngr.wait_until_finished()
    self._mngr.close()
