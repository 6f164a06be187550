"""The one training loop, for pre-training and every fine-tuning task.

mesh → sharded state → (resume | init_from | scratch) → steps, evaluations, checkpoints → export.

The loop knows a task only through its contract (x2vlm_jax.tasks.base.Task: loss, input, init
additions) and evaluation only through a callback; `x2vlm_jax.experiment` builds both from the config,
so tasks and evaluators sit above training and never the other way round.

Resume order: a checkpoint in WORKDIR wins; else `config.init_from` (our export or a converted
official checkpoint, any resolution; see `init_from.py`); else random initialisation. Evaluators
(`config.evals`) run every N steps and at the end, their results are logged like any metric, and the
best step by `config.best_metric` is kept besides the newest checkpoints. Checkpoints every
`checkpoint_every` steps and every `checkpoint_every_minutes`; SIGTERM or Ctrl-C on any host saves the
current step everywhere and stops (`preemption.py`); a non-finite loss stops without saving.

WORKDIR/config.json (the run's full config; config_history.jsonl: every launch's), init.json (what
init_from loaded and which params got lr × lr_mult), metrics.jsonl (one row per step, also after a
resume: run_record.py), TensorBoard events, checkpoints/, eval/<name>/step_<n>/ (predictions).
"""

import itertools
import json
import math
import os
import time
from typing import Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from x2vlm_jax import fs, params_io
from x2vlm_jax import sharding as shd
from x2vlm_jax.training import checkpointing, init_from, optimizer, preemption, run_record, train_state
from x2vlm_jax.training import metrics as metrics_lib
from x2vlm_jax.training.train_step import jit_train_step


class NonFiniteLossError(RuntimeError):
  pass


_BARRIERS = itertools.count()


def _compiled_on_every_process(step_fn, state, batch):
  """Multi-process: the step compiled ahead of its first run, then a coordination-service barrier
  (not a device collective). CPU collectives (gloo) give up on a cross-process collective after
  30 s, so a process reaching the first step much later than the others (a compilation-cache miss:
  only process 0 writes JAX's persistent cache; process 0's TensorBoard writer, when it still
  imported tensorflow) failed the run with "Gloo context initialization failed". Seen on the 2-core box with
  2 CPU processes. Single process: the jitted step as it is."""
  if jax.process_count() == 1:
    return step_fn
  compiled = step_fn.lower(state, batch).compile()
  # Barrier keys must be unique within a job (train() may run more than once in one process).
  key = f"x2vlm_train_step_compiled_{next(_BARRIERS)}"
  ocp.multihost.get_barrier_sync_fn()(key=key, timeout_ms=3_600_000)
  return compiled


def resolve_total_steps(config, task) -> int:
  """Optimizer steps: `config.num_epochs` × ceil(train records / (global batch · accumulation)) when
  num_epochs is set (docs/reference.md §6.2, fine-tuning), else `config.total_steps`."""
  epochs = config.get("num_epochs", 0) or 0
  if not epochs:
    return int(config.total_steps)
  size = task.train_size()
  if not size:
    raise ValueError(
      f"num_epochs={epochs}: task {task.name!r} does not know its training set size; set config.total_steps instead"
    )
  accum = max(1, int(config.optim.get("grad_accum_steps", 1)))
  return int(math.ceil(epochs * math.ceil(size / task.examples_per_step() / accum)))


def _write_json(path: epath.Path, obj) -> None:
  if jax.process_index() == 0:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _init_plan(config, task, workdir: epath.Path, resuming: bool):
  """The init_from plan (shapes only) and its `new_params`. A resumed run re-reads the plan it
  started with (init.json), so its optimizer groups cannot drift if the source moved or changed."""
  record = workdir / "init.json"
  if resuming and record.exists():
    return None, json.loads(record.read_text())["new_params"]
  if not config.init_from:
    return None, []
  p = init_from.plan(config.init_from, config.model, task)
  _write_json(
    record,
    {
      "source": p.source,
      "new_params": p.new_params,
      "dropped": p.dropped,
      "actions": {
        a: sorted(k for k, v in p.actions.items() if v == a) for a in sorted(set(p.actions.values())) if a != "load"
      },
    },
  )
  return p, p.new_params


def train(
  config,
  workdir: str,
  task,
  *,
  evaluate: Optional[Callable] = None,
  mesh=None,
  input_iter=None,
  max_steps: Optional[int] = None,
  force: bool = False,
):
  """Runs (or resumes) the experiment. Returns (state, graphdef, last logged metrics).

  evaluate(step, graphdef, params, total_steps, start_step) → {"<name>/<metric>": value} of the
  evaluations due at that step ({} when none is); its results are logged, and a step with results
  is checkpointed with them (the best one by `config.best_metric` is kept). A resumed run refuses a
  config that changes what its remaining steps compute unless `force` (run_record.py).
  """
  root = fs.path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  mesh = mesh if mesh is not None else shd.create_mesh(config.mesh)
  rules = [tuple(r) for r in config.sharding_rules]
  total_steps = resolve_total_steps(config, task)
  accum = max(1, int(config.optim.get("grad_accum_steps", 1)))
  ckpt = checkpointing.Checkpointer(
    workdir,
    keep=config.keep_checkpoints,
    async_save=config.get("async_checkpoints", True),
    best_metric=config.get("best_metric", "") or None,
    best_mode=config.get("best_mode", "max"),
  )
  start = ckpt.latest_step()
  try:
    run_record.record_launch(root, json.loads(config.to_json_best_effort()), start, force=force)
  except run_record.ConfigChangedError:
    ckpt.close()
    raise
  run_record.drop_replayed_rows(root, start)
  plan, new_params = _init_plan(config, task, root, resuming=start is not None)
  tx, lr_fn = optimizer.build_optimizer(config.optim, new_params=new_params, total_steps=total_steps)
  logging.info(
    "task %s, %d optimizer steps, mesh %s on %d devices (%d processes)",
    task.name,
    total_steps,
    dict(mesh.shape),
    mesh.size,
    jax.process_count(),
  )

  with jax.set_mesh(mesh):
    graphdef, state, shardings = train_state.create(config.model, tx, mesh, rules, config.seed)
    input_iter = (
      input_iter
      if input_iter is not None
      else task.train_iterator(config.seed, jax.process_index(), jax.process_count())
    )
    if start is not None:
      state, meta, input_state = ckpt.restore(start, train_state.abstract_like(state, shardings))
      if input_state is not None:
        input_iter.set_state(input_state)
      logging.info("resumed from %s at step %d", workdir, start)
    elif plan is not None:
      state = init_from.apply(plan, state, shardings, config.model, task)
    start = int(jax.device_get(state["step"]))

    step_fn = jit_train_step(graphdef, tx, lr_fn, task, config, shardings)
    # The loop counts micro-steps (= optimizer steps without accumulation); so do log_every,
    # checkpoint_every, evals' `every` and `step` in metrics.jsonl.
    total_micro = total_steps * accum
    logger = metrics_lib.MetricsLogger(workdir, total_steps=total_micro, examples_per_step=task.examples_per_step())
    last = {}
    end = total_micro if max_steps is None else min(total_micro, start + max_steps)
    profile = config.get("profile", False)
    profile_start = start + int(config.get("profile_start", 5))

    def run_evals(step):
      results = evaluate(step, graphdef, state["params"], total_micro, start) if evaluate else {}
      if results:
        logger.log(step, results, timing=False)  # evaluation time is not training throughput
      return results

    timed = preemption.TimedCheckpoints(config.get("checkpoint_every_minutes", 0))

    def save(step, *, metrics=None, force=False):
      timed.saved()
      ckpt.save(
        step,
        state,
        {"step": step, "time": time.time()},
        input_iter.get_state() if hasattr(input_iter, "get_state") else None,
        metrics=metrics,
        force=force,
      )
      logger.flush()  # on an object store the events are uploaded now: a preempted run keeps them

    with preemption.StopSignals() as signals:
      step = start
      try:
        if step == 0 and max_steps != 0:
          run_evals(0)  # evaluators with at_start (e.g. zero-shot before fine-tuning)
        while step < end:
          if profile and jax.process_index() == 0 and step == profile_start:
            jax.profiler.start_trace(os.path.join(workdir, "profile"))
          batch = task.global_batch(mesh, next(input_iter))
          if step == start:
            # The first step waits for XLA (about a minute for the tiny model on 2 CPU cores).
            logging.info("compiling the train step (the first step waits for it)...")
            step_fn = _compiled_on_every_process(step_fn, state, batch)
          state, step_metrics = step_fn(state, batch)
          step += 1
          if profile and jax.process_index() == 0 and step == profile_start + int(config.get("profile_steps", 3)):
            jax.block_until_ready(state["step"])
            jax.profiler.stop_trace()
          logged = step % config.log_every == 0 or step == end
          if logged:
            scalars = jax.device_get(step_metrics)
            if not metrics_lib.all_finite({k: np.asarray(v) for k, v in scalars.items()}):
              bad = sorted(k for k, v in scalars.items() if not np.all(np.isfinite(v)))
              raise NonFiniteLossError(
                f"non-finite values at step {step}: {bad}; stopping without saving (the newest "
                f"checkpoint in {workdir} is the last good one: step {ckpt.latest_step()})"
              )
            extra = metrics_lib.flatten(getattr(input_iter, "stats", dict)(), "input")
            last = logger.log(step, {**scalars, **extra})
          elif jax.default_backend() == "cpu":
            # Block on each step's result: back-to-back collectives can deadlock fake CPU devices.
            jax.block_until_ready(state["step"])
          preempted = signals.stop_local or ckpt.reached_preemption(step)
          results = {} if preempted else run_evals(step)
          on_time = timed.due(logged)
          if results or step % config.checkpoint_every == 0 or preempted or on_time:
            save(step, metrics=results or None, force=preempted or on_time or bool(results))
          if preempted:
            logging.warning("preemption: saved step %d, stopping", step)
            break
        if ckpt.latest_step() != step:
          save(step, force=True)
      finally:
        ckpt.close()
        logger.close()
  return state, graphdef, last


def finished(config, state, task) -> bool:
  """True when the run reached its last step (not stopped by preemption or --max_steps)."""
  accum = max(1, int(config.optim.get("grad_accum_steps", 1)))
  return int(jax.device_get(state["step"])) >= resolve_total_steps(config, task) * accum


def export(config, params, workdir: str, name: str = "export") -> str:
  """Writes params in the inference format (WORKDIR/<name>) with the run's vocabulary:
  `inference.load(...)` reads it, and `--config.init_from` of a follow-up run (a fine-tuning, stage 2)
  starts from it. Every process calls it (a collective)."""
  from jax.experimental import multihost_utils

  params = multihost_utils.process_allgather(params, tiled=True)
  path = str(fs.path(workdir) / name)
  vocab = config.get("data", {}).get("vocab_file") if "data" in config else None
  params_io.save(path, config.model, params, vocab_file=vocab or None)
  return path


def best_params(config, workdir: str, task):
  """Params of the best step by `config.best_metric` (None when no evaluated step is kept)."""
  if not config.get("best_metric"):
    return None, None
  ckpt = checkpointing.Checkpointer(
    workdir,
    keep=config.keep_checkpoints,
    async_save=False,
    best_metric=config.best_metric,
    best_mode=config.get("best_mode", "max"),
  )
  try:
    step = ckpt.best_step()
    if step is None:
      return None, None
    mesh = shd.create_mesh(config.mesh)
    # The optimizer only shapes the abstract state here; its groups and schedule do not matter.
    tx, _ = optimizer.build_optimizer(config.optim, total_steps=resolve_total_steps(config, task))
    with jax.set_mesh(mesh):
      abstract, shardings = train_state.abstract(
        config.model, tx, mesh, [tuple(r) for r in config.sharding_rules], config.seed
      )
      state, _, _ = ckpt.restore(step, train_state.abstract_like(abstract, shardings))
    return state["params"], step
  finally:
    ckpt.close()
