"""An experiment from its config: the task (`config.task`), its evaluators (`config.evals`, each built
by x2vlm_jax.tasks with the forward passes of the task that brings it) and the one training loop
(x2vlm_jax.training.trainer).

    from x2vlm_jax import experiment
    experiment.run(config, workdir)             # what main.py does: train (or resume), then export
    state, graphdef, last = experiment.train(config, workdir, max_steps=100)
"""

from typing import Optional

import jax
from absl import logging

from x2vlm_jax import fs, tasks
from x2vlm_jax import sharding as shd
from x2vlm_jax.evaluation import schedule
from x2vlm_jax.training import trainer


def ensure_embedded_data(config) -> None:
  """Builds the embedded `shapes` data a config names on first use (x2vlm_jax.embedded).
  Process 0 builds; on a data_dir that is not shared, every other host then builds its own copy."""
  from x2vlm_jax import embedded  # tf-free; the builders import tensorflow only when needed

  if not embedded.needed(config):
    return
  if jax.process_index() == 0:
    embedded.ensure_for_config(config)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("embedded data built")
    embedded.ensure_for_config(config)


def train(config, workdir: str, *, max_steps: Optional[int] = None, input_iter=None, task=None, force: bool = False):
  """Trains (or resumes) with the task and evaluators of `config` → (state, graphdef, last metrics)."""
  ensure_embedded_data(config)
  task = task if task is not None else tasks.build(config)
  mesh = shd.create_mesh(config.mesh)
  evaluators = tasks.build_evaluators(config, mesh)
  root = fs.path(workdir)

  def evaluate(step, graphdef, params, total, start):
    return schedule.run_due(
      evaluators, graphdef, params, step, total, root, start=start, num_epochs=config.get("num_epochs", 0)
    )

  return trainer.train(
    config,
    workdir,
    task,
    evaluate=evaluate if evaluators else None,
    mesh=mesh,
    input_iter=input_iter,
    max_steps=max_steps,
    force=force,
  )


def finished(config, state) -> bool:
  return trainer.finished(config, state, tasks.build(config))


def best_params(config, workdir: str):
  """(params, step) of the best evaluated step by `config.best_metric`, or (None, None)."""
  return trainer.best_params(config, workdir, tasks.build(config))


def run(config, workdir: str, *, max_steps: Optional[int] = None, force: bool = False):
  """Train, then (if the run reached its last step) export the final params to WORKDIR/export and
  the best step's to WORKDIR/export_best (when `config.best_metric` is set), with the vocabulary."""
  state, _, last = train(config, workdir, max_steps=max_steps, force=force)
  if not finished(config, state):
    # Preempted or --max_steps: the checkpoint is what matters; no export inside a grace period.
    logging.info("stopped before the last step: checkpoint saved, no export")
    return state, last
  trainer.export(config, state["params"], workdir)
  best, step = best_params(config, workdir)
  if best is not None:
    trainer.export(config, best, workdir, name="export_best")
    logging.info("exported the best step %d by %s", step, config.best_metric)
  return state, last
