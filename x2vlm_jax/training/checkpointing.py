"""Orbax checkpoints of the train state, plus the input pipeline's position, in WORKDIR/checkpoints.

    WORKDIR/checkpoints/<step>/{state,meta}   Orbax (async save, keep K, restore onto any mesh)
    WORKDIR/input_state/<step>/process_<i>/   each host's input-pipeline state, written synchronously

The input state is written before the Orbax save of the same step is committed, so the newest
committed checkpoint always has its input state; stale input states are deleted once Orbax has
dropped their step.
"""

import os
import shutil
from typing import Any, Dict, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
    root = epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))
    self._input_root = root / "input_state"
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(root / "checkpoints", options=options, item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def reached_preemption(self, step: int) -> bool:
    return self._mngr.reached_preemption(step)

  def _input_dir(self, step: int) -> epath.Path:
    return self._input_root / str(step) / f"process_{jax.process_index()}"

  def save(self, step: int, state, meta: Dict[str, Any], input_iter=None, *, force: bool = False) -> bool:
    if input_iter is not None:
      d = self._input_dir(step)
      d.mkdir(parents=True, exist_ok=True)
      input_iter.save_state(str(d))
    saved = self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                          meta=ocp.args.JsonSave(meta)), force=force)
    self._cleanup_inputs()
    return saved

  def restore(self, step: int, abstract_state, input_iter=None):
    restored = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                meta=ocp.args.JsonRestore()))
    if input_iter is not None:
      d = self._input_dir(step)
      if not d.exists():
        raise ValueError(f"checkpoint step {step}: no input-pipeline state at {d}; was this workdir written "
                         f"with a different number of processes ({jax.process_count()} now)?")
      input_iter.restore_state(str(d))
    return restored["state"], restored["meta"]

  def _cleanup_inputs(self):
    steps = self._mngr.all_steps()
    if not steps or not self._input_root.exists():
      return
    oldest = min(steps)
    for d in self._input_root.iterdir():
      if d.name.isdigit() and int(d.name) < oldest and jax.process_index() == 0:
        shutil.rmtree(str(d), ignore_errors=True)

  def wait(self):
    self._mngr.wait_until_finished()

  def close(self):
    self._mngr.wait_until_finished()
    self._mngr.close()
