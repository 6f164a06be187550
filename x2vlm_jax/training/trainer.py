"""The pre-training loop: mesh → sharded state → (resume | init_from | scratch) → steps → checkpoints.

Resume order: a checkpoint in WORKDIR wins; else `config.init_from` (a directory written by
tools/convert_checkpoint.py: converted official weights, or BEiT-v2 + BERT initialisation); else
random initialisation. SIGTERM (and Orbax-detected preemption) saves the current step and exits 0; a
non-finite loss stops the run without saving, so the last good checkpoint stays the newest.
"""

import json
import os
import signal
import time
from typing import Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from x2vlm_jax import params_io
from x2vlm_jax.training import checkpointing, metrics as metrics_lib, optimizer, train_state
from x2vlm_jax.training import sharding as shd
from x2vlm_jax.training.train_step import make_train_step


class NonFiniteLossError(RuntimeError):
  pass


class _Preemption:
  """Turns SIGTERM into a flag that the loop checks after each step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    def handler(signum, frame):
      logging.warning("SIGTERM received: saving a checkpoint at the current step and stopping.")
      self.requested = True
    try:
      self._previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handler
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _new_params(init_from: str):
  """Params that the init checkpoint did not provide get lr × lr_mult (spec §6.1)."""
  if not init_from:
    return []
  path = epath.Path(init_from) / "conversion.json"
  if not path.exists():
    return []
  return json.loads(path.read_text()).get("new_params", [])


def _flatten(tree, prefix: str):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}/{k}"))
    else:
      out[f"{prefix}/{k}"] = v
  return out


def create_input(config, seed: int):
  if config.data.get("source", "tfds") == "synthetic":
    from x2vlm_jax.training.synthetic import SyntheticIterator
    return SyntheticIterator(config.data, config.model, seed=seed, process_index=jax.process_index(),
                             process_count=jax.process_count())
  from x2vlm_jax.data import pipeline  # tensorflow lives only behind this import
  return pipeline.create_train_iterator(config.data, seed=seed, process_index=jax.process_index(),
                                        process_count=jax.process_count())


def examples_per_step(config) -> int:
  return sum(int(config.data[s].batch_size) for s in ("image", "region", "video")
             if s in config.data and config.data[s].get("enabled", True))


def train(config, workdir: str, *, input_iter=None, max_steps: Optional[int] = None):
  """Runs (or resumes) the experiment. Returns (state, graphdef, last metrics)."""
  if "://" not in workdir:
    os.makedirs(workdir, exist_ok=True)
  mesh = shd.create_mesh(config.mesh)
  rules = [tuple(r) for r in config.sharding_rules]
  total_steps = int(config.total_steps)  # optimizer steps
  accum = max(1, int(config.optim.get("grad_accum_steps", 1)))
  tx, lr_fn = optimizer.build_optimizer(config.optim, new_params=_new_params(config.init_from),
                                        total_steps=total_steps)
  logging.info("mesh %s on %d devices (%d processes)", dict(mesh.shape), mesh.size, jax.process_count())

  with jax.set_mesh(mesh):
    graphdef, state, shardings = train_state.create(config.model, tx, mesh, rules, config.seed)
    ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                      async_save=config.get("async_checkpoints", True))
    input_iter = input_iter if input_iter is not None else create_input(config, config.seed)
    start = ckpt.latest_step()
    if start is not None:
      state, meta = ckpt.restore(start, train_state.abstract_like(state, shardings), input_iter)
      logging.info("resumed from %s at step %d", workdir, start)
    elif config.init_from:
      _, params = params_io.load(config.init_from, config.model, sharding=shardings["params"])
      state = train_state.replace_params(state, params, shardings)
      logging.info("initialised params from %s", config.init_from)
    start = int(jax.device_get(state["step"]))

    step_fn = jax.jit(make_train_step(graphdef, tx, lr_fn, config), donate_argnums=(0,),
                      out_shardings=(shardings, None))
    # The loop counts micro-steps (= optimizer steps without accumulation); so do log_every,
    # checkpoint_every and `step` in metrics.jsonl.
    total_micro = total_steps * accum
    logger = metrics_lib.MetricsLogger(workdir, total_steps=total_micro,
                                       examples_per_step=examples_per_step(config))
    last = {}
    end = total_micro if max_steps is None else min(total_micro, start + max_steps)
    profile = config.get("profile", False)
    profile_start = start + int(config.get("profile_start", 5))
    with _Preemption() as preempt:
      step = start
      try:
        while step < end:
          if profile and jax.process_index() == 0 and step == profile_start:
            jax.profiler.start_trace(os.path.join(workdir, "profile"))
          batch = shd.global_batch(mesh, next(input_iter))
          state, step_metrics = step_fn(state, batch)
          step += 1
          if profile and jax.process_index() == 0 and step == profile_start + int(config.get("profile_steps", 3)):
            jax.block_until_ready(state["step"])
            jax.profiler.stop_trace()
          if step % config.log_every == 0 or step == end:
            scalars = jax.device_get(step_metrics)
            if not metrics_lib.all_finite({k: np.asarray(v) for k, v in scalars.items()}):
              bad = sorted(k for k, v in scalars.items() if not np.all(np.isfinite(v)))
              raise NonFiniteLossError(
                  f"non-finite values at step {step}: {bad}; stopping without saving (the newest "
                  f"checkpoint in {workdir} is the last good one: step {ckpt.latest_step()})")
            extra = _flatten(getattr(input_iter, "stats", dict)(), "input")
            last = logger.log(step, {**scalars, **extra})
          else:
            # Block on each step's result: back-to-back collectives can deadlock fake CPU devices.
            if jax.default_backend() == "cpu":
              jax.block_until_ready(state["step"])
          if step % config.checkpoint_every == 0 or preempt.requested or ckpt.reached_preemption(step):
            ckpt.save(step, state, {"step": step, "time": time.time()}, input_iter,
                      force=preempt.requested or step == end)
          if preempt.requested:
            break
        if not preempt.requested and ckpt.latest_step() != step:
          ckpt.save(step, state, {"step": step, "time": time.time()}, input_iter, force=True)
      finally:
        ckpt.close()
        logger.close()
  return state, graphdef, last


def finished(config, state) -> bool:
  """True when the run reached its last step (not stopped by SIGTERM/preemption or --max_steps)."""
  accum = max(1, int(config.optim.get("grad_accum_steps", 1)))
  return int(jax.device_get(state["step"])) >= int(config.total_steps) * accum


def export(config, state, workdir: str) -> str:
  """Writes the final params in the inference format (WORKDIR/export): `inference.load(...)` reads it,
  and `--config.init_from` of a follow-up run (e.g. stage 2) starts from it. Every process calls it."""
  from jax.experimental import multihost_utils
  params = multihost_utils.process_allgather(state["params"], tiled=True)  # a collective: all hosts
  path = os.path.join(workdir, "export") if "://" not in workdir else workdir.rstrip("/") + "/export"
  params_io.save(path, config.model, params)
  return path
