"""The task contract: what differs between pre-training and each fine-tuning task.

The trainer (`x2vlm_jax.training.trainer`) owns the loop, the mesh, sharded state creation, Orbax
checkpoints with the input position, resume, preemption, the non-finite stop, metrics, profiling and
running evaluators. A task is the one plug of everything task-specific. It supplies:

  loss(model, batch, rng, step)      → (scalar loss, {metric name: scalar}); pure, jit-able
  train_iterator(seed, index, count) → host batches ({name: np.ndarray}, possibly nested), with
                                       get_state()/set_state(dict)/stats() for exact resume
  global_batch(mesh, host_batch)     → global jax arrays (default: every leaf split over the batch axes)
  examples_per_step()                → for throughput metrics
  batch_spec()                       → the global batch as (shape, dtype) leaves (compile-only checks)
  init_additions_plan / init_additions → params a task derives from a loaded checkpoint (e.g. VQA's
                                       decoder from the fusion layers) and which get lr × lr_mult
  train_size()                       → records per epoch (None if unknown), for `config.num_epochs`

and declares, as class attributes, what the rest of the framework looks up by its name (through
`x2vlm_jax.tasks`, never a table of its own):

  DATA_MODULE, BUILDER  its data module under x2vlm_jax.data (create_iterator, train_size; imported
                        lazily: tensorflow lives there) and the function of it that builds the TFDS
                        set from the official annotation file (`tools/build_tfds.py --kind <name>`)
  EVALUATORS            {evaluator type: class} of the evaluators it brings (`config.evals.*.type`)
  PREDICT_FNS           {name: fn(model, ...)}: the forward passes those evaluators run (as big_vision
                        hands `predict_fns` to its evaluators, so x2vlm_jax.evaluation never imports a task)
  EVALUATION            (evaluator type, fields): its own evaluation (`tools/evaluate.py --task <name>`,
                        `tools/compile_check.py` for a config without `evals`)

Which heads a task's model has is part of the model config (`config.model.heads`), so exports and
`inference.load` rebuild the same model without knowing the task.
"""

import importlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import numpy as np

from x2vlm_jax import sharding as shd

Spec = Dict[str, Tuple[tuple, Any]]


class Task:
  name = ""
  DATA_MODULE = ""
  BUILDER = ""
  EVALUATORS: Dict[str, type] = {}
  PREDICT_FNS: Dict[str, Callable] = {}
  EVALUATION: Optional[Tuple[str, Dict[str, Any]]] = None

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
  from TFDS by `DATA_MODULE` or, with `data.source = "synthetic"`, made by `synthetic_batch`
  (tests, benchmarks, GPU hosts without tensorflow). Its batches follow `spec`, the contract the data
  module's iterator checks every batch against and compile_check lowers the step on."""

  @staticmethod
  def spec(cfg, b: int) -> Spec:
    """The batch contract: {field: (shape, dtype)} of a batch of `b` rows, from the data config alone
    (tensorflow-free)."""
    raise NotImplementedError

  def synthetic_batch(self, seed: int, batch_size: int) -> Dict[str, np.ndarray]:
    """One random host batch of `batch_size` rows that follows `spec`."""
    raise NotImplementedError(f"task {self.name}: no synthetic batches")

  def data_module(self):
    return importlib.import_module(self.DATA_MODULE)

  def create_iterator(self, seed, process_index, process_count):
    return self.data_module().create_iterator(
      self.config.data, spec=self.spec, seed=seed, process_index=process_index, process_count=process_count
    )

  def _synthetic(self) -> bool:
    return self.config.data.get("source", "tfds") == "synthetic"

  def train_iterator(self, seed, process_index, process_count):
    if self._synthetic():
      from x2vlm_jax.tasks.synthetic import SyntheticBatches

      per_host = int(self.config.data.batch_size) // process_count
      return SyntheticBatches(lambda s: self.synthetic_batch(s, per_host), seed=seed, process_index=process_index)
    return self.create_iterator(seed, process_index, process_count)

  def examples_per_step(self) -> int:
    return int(self.config.data.batch_size)

  def batch_spec(self):
    return self.spec(self.config.data, int(self.config.data.batch_size))

  def train_size(self) -> Optional[int]:
    """Training rows of an official epoch (None for synthetic batches)."""
    if self._synthetic():
      return None
    return self.data_module().train_size(self.config.data)


# --- pieces of the batch contracts (tasks' `spec`) and of synthetic batches -----------------------
def text_spec(b: int, max_tokens: int) -> Spec:
  return {"text_ids": ((b, max_tokens), np.int32), "text_mask": ((b, max_tokens), np.int32)}


def images_spec(cfg, b: int) -> Spec:
  res = int(cfg.image_res)
  return {"images": ((b, res, res, 3), np.float32)}


def frames_spec(cfg, b: int) -> Spec:
  res, frames = int(cfg.image_res), int(cfg.num_frames)
  return {"frames": ((b, frames, res, res, 3), np.float32)}


def synthetic_text(rs: np.random.RandomState, b: int, max_tokens: int, vocab_size: int):
  """(ids, mask) [b, max_tokens]: random lengths ≥ 3, ids ≥ 5 (no special token), 0-padded."""
  lengths = rs.randint(3, max_tokens + 1, size=b)
  mask = (np.arange(max_tokens)[None] < lengths[:, None]).astype(np.int32)
  return rs.randint(5, vocab_size, size=(b, max_tokens)).astype(np.int32) * mask, mask
