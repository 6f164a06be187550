"""One jitted optimizer step over the split NNX state: forward all streams, backward, update."""

from typing import Any, Dict

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from x2vlm_jax.training import losses, objectives
from x2vlm_jax.training.train_state import param_norm


def make_train_step(graphdef, tx, learning_rate_fn, config):
  """Returns step(state, batch) → (state, metrics). `config` is the experiment ConfigDict."""
  weights = dict(config.loss_weights)
  group_sizes = dict(config.itm_group_size)
  itc_grad_scale = float(config.itc_grad_scale)
  stop_calc_itm = int(config.stop_calc_itm)
  # With gradient accumulation every call is one micro-step; the optimizer (optax.MultiSteps) applies
  # an update every `accum` calls and the schedule counts optimizer steps.
  accum = max(1, int(config.optim.get("grad_accum_steps", 1)))

  def step(state: Dict[str, Any], batch: Dict[str, Dict[str, jax.Array]]):
    rng = jax.random.fold_in(state["rng"], state["step"])
    itm_on = (state["step"] // accum < stop_calc_itm) if stop_calc_itm >= 0 else jnp.asarray(True)
    # The official code clamps the temperature in place before every forward pass (spec §3.1).
    params = {**state["params"], "temp": losses.clamp_temperature(state["params"]["temp"])}

    def loss_fn(p):
      model = nnx.merge(graphdef, p)
      per_stream = {}
      for i, (stream, fields) in enumerate(sorted(batch.items())):
        per_stream[stream] = objectives.stream_losses(
            model, stream, fields, jax.random.fold_in(rng, i),
            group_size=min(int(group_sizes.get(stream, _rows(fields))), _rows(fields)),
            itc_grad_scale=itc_grad_scale, itm_on=itm_on)
      return objectives.total_loss(per_stream, weights), per_stream

    (loss, per_stream), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    params["temp"] = losses.clamp_temperature(params["temp"])
    metrics = {"train/loss": loss, "train/lr": learning_rate_fn(state["step"] // accum),
               "train/grad_norm": optax.global_norm(grads), "train/param_norm": param_norm(params),
               "train/temp": params["temp"]}
    for stream, terms in per_stream.items():
      for k, v in terms.items():
        metrics[f"{stream}/{k}"] = v
    new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": state["rng"]}
    return new_state, metrics

  return step


def _rows(fields) -> int:
  return int(fields["text_ids"].shape[0])
