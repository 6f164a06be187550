"""Train-step properties: remat changes nothing numerically, gradient accumulation applies one update
per k micro-steps with the schedule in optimizer steps, bf16 compute keeps f32 params and state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.configs import synthetic_tiny
from x2vlm_jax.batch import stream_spec, synthetic_stream
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.tasks.pretrain import PretrainTask
from x2vlm_jax.training import objectives, optimizer, train_state
from x2vlm_jax.training import sharding as shd
from x2vlm_jax.training.synthetic import SyntheticIterator
from x2vlm_jax.training.train_step import make_train_step


def _loss_and_grads(remat: bool):
  cfg = get_preset("tiny", remat_vision=remat, remat_text=remat)
  graphdef, params = nnx.split(X2VLM(cfg, rngs=nnx.Rngs(0)))
  spec = stream_spec("region", batch_size=4, image_res=32, patch_size=16, max_tokens=8, max_masks=2, num_images=2)
  batch = {k: jnp.asarray(v) for k, v in synthetic_stream("region", spec, vocab_size=200).items()}

  def loss(p):
    terms = objectives.stream_losses(nnx.merge(graphdef, p), "region", batch, jax.random.key(0), group_size=4)
    return sum(terms[k] for k in objectives.LOSS_TERMS)

  return jax.jit(jax.value_and_grad(loss))(params)


def test_remat_per_tower_is_numerically_transparent():
  (l0, g0), (l1, g1) = _loss_and_grads(False), _loss_and_grads(True)
  assert float(l0) == pytest.approx(float(l1), abs=1e-6)
  diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)))
  assert diff < 1e-6


def _run_steps(config, n):
  mesh = shd.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  tx, lr_fn = optimizer.build_optimizer(config.optim, total_steps=int(config.total_steps))
  with jax.set_mesh(mesh):
    graphdef, state, shardings = train_state.create(config.model, tx, mesh,
                                                    [tuple(r) for r in config.sharding_rules], 0)
    it = SyntheticIterator(config.data, config.model, seed=0)
    step = jax.jit(make_train_step(graphdef, tx, lr_fn, PretrainTask(config), config),
                   out_shardings=(shardings, None))
    history = [(jax.device_get(state["params"]), None)]
    for _ in range(n):
      state, m = step(state, shd.global_batch(mesh, next(it)))
      history.append((jax.device_get(state["params"]), jax.device_get(m)))
  return history


def test_gradient_accumulation_updates_every_k_micro_steps():
  config = synthetic_tiny.get_config("steps=6")
  config.optim.grad_accum_steps = 2
  config.optim.warmup_steps = 0
  h = _run_steps(config, 4)
  changed = [any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(h[i][0]), jax.tree.leaves(h[i + 1][0])))
             for i in range(4)]
  assert changed == [False, True, False, True]
  lrs = [float(h[i][1]["train/lr"]) for i in range(1, 5)]
  assert lrs[0] == lrs[1] and lrs[2] == lrs[3] and lrs[2] < lrs[1]  # schedule counts optimizer steps


def test_bfloat16_step_keeps_float32_state():
  config = synthetic_tiny.get_config("steps=6")
  config.model.dtype = "bfloat16"
  h = _run_steps(config, 1)
  params, metrics = h[-1]
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(params))
  assert np.isfinite(float(metrics["train/loss"]))
