"""The task contract: what differs between pre-training and each fine-tuning task.

The trainer (`x2vlm_jax.training.trainer`) owns the loop, the mesh, sharded state creation, Orbax
checkpoints with the input position, resume, preemption, the non-finite stop, metrics, profiling and
running evaluators. A task supplies only:

  loss(model, batch, rng, step)      → (scalar loss, {metric name: scalar}); pure, jit-able
  train_iterator(seed, index, count) → host batches ({name: np.ndarray}, possibly nested), with
                                       get_state()/set_state(dict)/stats() for exact resume
  global_batch(mesh, host_batch)     → global jax arrays (default: every leaf split over the batch axes)
  examples_per_step()                → for throughput metrics
  batch_spec()                       → the global batch as (shape, dtype) leaves (compile-only checks)
  init_additions_plan / init_additions → params a task derives from a loaded checkpoint (e.g. VQA's
                                       decoder from the fusion layers) and which get lr × lr_mult
  train_size()                       → records per epoch (None if unknown), for `config.num_epochs`

Which heads a task's model has is part of the model config (`config.model.heads`), so exports and
`inference.load` rebuild the same model without knowing the task. Evaluators are configured
separately (`config.evals`, see `x2vlm_jax.evaluation.registry`).
"""

from typing import Any, Dict, List, Optional, Tuple

import jax

from x2vlm_jax.training import sharding as shd


class Task:
  name = ""

  def __init__(self, config):
    self.config = config

  # --- training --------------------------------------------------------------------------------
  def loss(self, model, batch, rng, step) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    raise NotImplementedError

  def train_iterator(self, seed: int, process_index: int, process_count: int):
    raise NotImplementedError

  def global_batch(self, mesh, host_batch):
    return shd.global_batch(mesh, host_batch)

  def examples_per_step(self) -> int:
    raise NotImplementedError

  def batch_spec(self):
    """The GLOBAL batch of one step as a pytree of (shape, dtype) (the input contract at the global batch
    size): tools/compile_check.py lowers the train step on it without any data."""
    raise NotImplementedError(f"task {self.name!r} does not describe its batch (batch_spec)")

  def train_size(self) -> Optional[int]:
    return None

  # --- initialisation from a checkpoint (x2vlm_jax.training.init_from) ---------------------------
  def init_additions_plan(self, model_cfg, actions: Dict[str, str]) -> Tuple[List[str], List[str]]:
    """From shapes only: (params this task derives from the checkpoint instead of a fresh init,
    params that go into the lr × lr_mult group besides the ones the checkpoint lacks)."""
    del model_cfg, actions
    return [], []

  def init_additions(self, flat: Dict[str, Any], model_cfg) -> Dict[str, Any]:
    """The values of the derived params, computed from the checkpoint's flat params."""
    del flat, model_cfg
    return {}

