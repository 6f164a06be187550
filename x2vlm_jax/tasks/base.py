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

import importlib
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

from x2vlm_jax import sharding as shd


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


class FinetuneTask(Task):
  """A single-stream fine-tuning task: `config.data` is one stream with a GLOBAL `batch_size`, read
  from TFDS by `DATA_MODULE` (its `create_iterator` / `train_size`, imported lazily: tensorflow lives
  there) or, with `data.source = "synthetic"`, made by `synthetic_batch(seed, per_host_batch)`
  (tests, benchmarks, GPU hosts without tensorflow). Its batches are `SPEC` of
  x2vlm_jax.data.finetune.specs (tensorflow-free), the contract the data module's iterator checks every
  batch against."""

  DATA_MODULE = ""
  SPEC = ""
  # synthetic(seed, batch_size, image_res, max_tokens, vocab_size) → one host batch of the contract;
  # tasks whose batches need more than these override `synthetic_batch` instead.
  synthetic = None

  def synthetic_batch(self, seed: int, batch_size: int):
    if type(self).synthetic is None:
      raise NotImplementedError(f"task {self.name}: no synthetic batches")
    d = self.config.data
    return type(self).synthetic(seed, batch_size, d.image_res, d.max_tokens, self.config.model.text.vocab_size)

  def create_iterator(self, module, seed, process_index, process_count):
    return module.create_iterator(self.config.data, seed=seed, process_index=process_index, process_count=process_count)

  def _synthetic(self) -> bool:
    return self.config.data.get("source", "tfds") == "synthetic"

  def train_iterator(self, seed, process_index, process_count):
    if self._synthetic():
      from x2vlm_jax.tasks.synthetic import SyntheticBatches

      per_host = int(self.config.data.batch_size) // process_count
      return SyntheticBatches(lambda s: self.synthetic_batch(s, per_host), seed=seed, process_index=process_index)
    return self.create_iterator(importlib.import_module(self.DATA_MODULE), seed, process_index, process_count)

  def examples_per_step(self) -> int:
    return int(self.config.data.batch_size)

  def batch_spec(self):
    from x2vlm_jax.data.finetune import specs  # tf-free

    return getattr(specs, self.SPEC)(self.config.data, int(self.config.data.batch_size))

  def train_size(self) -> Optional[int]:
    """Training rows of an official epoch (None for synthetic batches)."""
    if self._synthetic():
      return None
    return importlib.import_module(self.DATA_MODULE).train_size(self.config.data)


def synthetic_text(rs: np.random.RandomState, b: int, max_tokens: int, vocab_size: int):
  """(ids, mask) [b, max_tokens]: random lengths ≥ 3, ids ≥ 5 (no special token), 0-padded."""
  lengths = rs.randint(3, max_tokens + 1, size=b)
  mask = (np.arange(max_tokens)[None] < lengths[:, None]).astype(np.int32)
  return rs.randint(5, vocab_size, size=(b, max_tokens)).astype(np.int32) * mask, mask
