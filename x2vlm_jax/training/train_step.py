"""One jitted optimizer step over the split NNX state: the task's loss, backward, update."""

from typing import Any, Dict

import jax
import optax
from flax import nnx

from x2vlm_jax import objectives
from x2vlm_jax.training.train_state import param_norm


def make_train_step(graphdef, tx, learning_rate_fn, task, config):
  """Returns step(state, batch) → (state, metrics) for `task` (see x2vlm_jax.tasks.base)."""
  # With gradient accumulation every call is one micro-step; the optimizer (optax.MultiSteps) applies
  # an update every `accum` calls, and the schedule and the task see optimizer steps.
  accum = max(1, int(config.optim.get("grad_accum_steps", 1)))

  def step(state: Dict[str, Any], batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    opt_step = state["step"] // accum
    # The official code clamps the temperature in place before every forward pass (docs/reference.md §3.1).
    params = {**state["params"], "temp": objectives.clamp_temperature(state["params"]["temp"])}

    def loss_fn(p):
      return task.loss(nnx.merge(graphdef, p), batch, rng, opt_step)

    (loss, task_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    params["temp"] = objectives.clamp_temperature(params["temp"])
    metrics = {
      "train/loss": loss,
      "train/lr": learning_rate_fn(opt_step),
      "train/grad_norm": optax.global_norm(grads),
      "train/param_norm": param_norm(params),
      "train/temp": params["temp"],
      **task_metrics,
    }
    new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": state["rng"]}
    return new_state, metrics

  return step


def jit_train_step(graphdef, tx, learning_rate_fn, task, config, state_shardings):
  """The train step as the trainer, tools/compile_check.py and tools/benchmark_train.py run it: jitted,
  the state donated (its buffers become the new state's) and the new state kept in `state_shardings`
  (the metrics' placement is XLA's choice)."""
  step = make_train_step(graphdef, tx, learning_rate_fn, task, config)
  return jax.jit(step, donate_argnums=(0,), out_shardings=(state_shardings, None))
