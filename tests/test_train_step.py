"""Train-step properties: remat changes nothing numerically, gradient accumulation applies one update
per k micro-steps with the schedule in optimizer steps, bf16 compute keeps f32 params and state; the
step's wiring (τ clamp, AdamW values, accumulation values) against the official formulas in numpy, and
the pre-training task's wiring (loss weights, ITM group sizes, ITC gradient scale per stream)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.configs import synthetic_tiny
from x2vlm_jax import objectives
from x2vlm_jax import sharding as shd
from x2vlm_jax.batch import stream_spec, synthetic_stream
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.tasks.pretrain import PretrainTask
from x2vlm_jax.tasks.synthetic import SyntheticIterator
from x2vlm_jax.training import optimizer, train_state
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


@pytest.mark.slow
def test_remat_per_tower_is_numerically_transparent():
  (l0, g0), (l1, g1) = _loss_and_grads(False), _loss_and_grads(True)
  assert float(l0) == pytest.approx(float(l1), abs=1e-6)
  # Relative to each gradient's size: the recomputed forward may fuse (hence round) differently — seen:
  # 2.9e-6 on the text embeddings' gradients of size 4.7 (6 float32 ulps) under the tests' XLA flags. A
  # remat that changed the maths (another dropout mask, a stopped gradient) moves them by orders more.
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 * max(1.0, float(np.abs(a).max())))


def _run_steps(config, n):
  mesh = shd.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  tx, lr_fn = optimizer.build_optimizer(config.optim, total_steps=int(config.total_steps))
  with jax.set_mesh(mesh):
    graphdef, state, shardings = train_state.create(
      config.model, tx, mesh, [tuple(r) for r in config.sharding_rules], 0
    )
    it = SyntheticIterator(config.data, config.model, seed=0)
    step = jax.jit(make_train_step(graphdef, tx, lr_fn, PretrainTask(config), config), out_shardings=(shardings, None))
    history = [(jax.device_get(state["params"]), None)]
    for _ in range(n):
      state, m = step(state, shd.global_batch(mesh, next(it)))
      history.append((jax.device_get(state["params"]), jax.device_get(m)))
  return history, jax.device_get(state)


@pytest.mark.slow
def test_bfloat16_step_with_gradient_accumulation_keeps_float32_state_and_updates_every_k_micro_steps():
  """One compile for two properties of the pre-training step: bfloat16 compute keeps float32 params
  and optimizer state, and with k = 2 micro-steps the params change on every 2nd step only, with the
  schedule counted in optimizer steps."""
  config = synthetic_tiny.get_config("steps=6")
  config.model.dtype = "bfloat16"
  config.optim.grad_accum_steps = 2
  config.optim.warmup_steps = 0
  h, state = _run_steps(config, 4)
  floats = [x for x in jax.tree.leaves(state) if np.issubdtype(np.asarray(x).dtype, np.floating)]
  assert len(floats) > len(jax.tree.leaves(h[-1][0]))  # params and the optimizer's moments
  assert all(np.asarray(x).dtype == np.float32 for x in floats)
  assert all(np.isfinite(float(m["train/loss"])) for _, m in h[1:])
  changed = [
    any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(h[i][0]), jax.tree.leaves(h[i + 1][0])))
    for i in range(4)
  ]
  assert changed == [False, True, False, True]
  lrs = [float(h[i][1]["train/lr"]) for i in range(1, 5)]
  assert lrs[0] == lrs[1] and lrs[2] == lrs[3] and lrs[2] < lrs[1]  # schedule counts optimizer steps


# ------------------------------------------------------------------------------------- step wiring
# The step's own wiring (τ clamp before the forward and after the update, the AdamW update values,
# gradient accumulation values) on a task whose loss has closed-form gradients, against the official
# formulas (docs/reference.md §3.1 clamp, §6.1 HF AdamW with decoupled decay after the Adam step,
# docs/reference.md §6.2 linear schedule, §6.3 torch global-norm clipping) written out in numpy. No model
# forward, so the step compiles fast.

LR, WD, CLIP, B1, B2, EPS, TOTAL = 0.01, 0.01, 1.0, 0.9, 0.98, 1e-8, 10
# Values, not speed, are tested: skipping LLVM's expensive passes roughly halves each compile on CPU.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
K, BETA = "itm_head/fc1/kernel", "itm_head/fc1/bias"
# Decay by the official name rule (docs/reference.md §6.1): temp and kernels decay, biases and BERT/BEiT norms do not,
# the heads' LayerNorm weight ("itm_head.1.weight") does.
WATCHED = {
  "temp": True,
  K: True,
  BETA: False,
  "itm_head/fc0/kernel": True,
  "itm_head/ln/scale": True,
  "text/embeddings/ln/scale": False,
  "vision/blocks/0/norm1/bias": False,
}


class _ClosedFormTask:
  """L = c/τ + Σ a⊙K + Σ b⊙β: dL/dτ = −c/τ², dL/dK = a, dL/dβ = b, every other gradient 0."""

  name = "closed_form"

  def loss(self, model, batch, rng, step):
    del rng, step
    t = model.temp[...]
    k, beta = model.itm_head.fc1.kernel[...], model.itm_head.fc1.bias[...]
    return batch["c"] / t + jnp.sum(batch["a"] * k) + jnp.sum(batch["b"] * beta), {}


def _closed_form_step(accum):
  import ml_collections

  config = ml_collections.ConfigDict(
    {
      "optim": dict(
        lr=LR, b1=B1, b2=B2, eps=EPS, weight_decay=WD, clip_norm=CLIP, warmup_steps=0, grad_accum_steps=accum
      )
    }
  )
  tx, lr_fn = optimizer.build_optimizer(config.optim, total_steps=TOTAL)
  mesh = shd.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  with jax.set_mesh(mesh):
    graphdef, state, _ = train_state.create(get_preset("tiny"), tx, mesh, [tuple(r) for r in shd.DEFAULT_RULES], 0)
  state = jax.device_get(state)
  batch = _batches(1, 0)[0]
  step = jax.jit(make_train_step(graphdef, tx, lr_fn, _ClosedFormTask(), config))
  return step.lower(state, batch).compile(compiler_options=FAST_COMPILE), state


def _flat(params):
  return {
    optimizer.path_to_str(p): np.asarray(v, np.float64) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
  }


def _batches(n, seed, scale=1.0, b_scale=1.0):
  rs = np.random.RandomState(seed)
  # scale 1: |a| ≈ 0.5 and dL/dτ ≈ −c/τ² large, so the global norm exceeds CLIP and clipping is active.
  return [
    {
      "c": np.float32(scale * rs.uniform(0.1, 0.5)),
      "a": (scale * rs.normal(0, 0.03, (128, 2))).astype(np.float32),
      "b": (b_scale * rs.normal(0, 1.0, (2,))).astype(np.float32),
    }
    for _ in range(n)
  ]


class _SpecAdamW:
  """docs/reference.md §6.1–§6.3 in float64 numpy for the watched params (others have zero gradient here)."""

  def __init__(self, flat):
    self.p = {k: flat[k].copy() for k in WATCHED}
    self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
    self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
    self.t = 0

  def tau(self):
    return np.clip(self.p["temp"], 0.001, 0.5)  # clamped before the forward pass

  def grads(self, batch):
    g = {k: np.zeros_like(v) for k, v in self.p.items()}
    g["temp"] = -batch["c"] / self.tau() ** 2
    g[K], g[BETA] = batch["a"].astype(np.float64), batch["b"].astype(np.float64)
    return g

  def loss(self, batch):
    return batch["c"] / self.tau() + np.sum(batch["a"] * self.p[K]) + np.sum(batch["b"] * self.p[BETA])

  def update(self, g):
    norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
    coef = CLIP / (norm + 1e-6)
    if coef < 1:
      g = {k: x * coef for k, x in g.items()}
    lr = LR * (TOTAL - self.t) / TOTAL  # no warm-up: linear decay from the peak, per optimizer step
    self.t += 1
    self.p["temp"] = np.clip(self.p["temp"], 0.001, 0.5)  # the update starts from the clamped value
    for k in self.p:
      self.m[k] = B1 * self.m[k] + (1 - B1) * g[k]
      self.v[k] = B2 * self.v[k] + (1 - B2) * g[k] ** 2
      step_size = lr * np.sqrt(1 - B2**self.t) / (1 - B1**self.t)
      self.p[k] = self.p[k] - step_size * self.m[k] / (np.sqrt(self.v[k]) + EPS)
      if WATCHED[k]:
        self.p[k] = self.p[k] - lr * WD * self.p[k]
    self.p["temp"] = np.clip(self.p["temp"], 0.001, 0.5)  # and is clamped again after it
    return lr

  def check(self, params, what):
    got = _flat(params)
    for k, want in self.p.items():
      np.testing.assert_allclose(got[k], want, rtol=2e-5, atol=1e-7, err_msg=f"{what}: {k}")


def _with_temp(state, tau):
  params = dict(state["params"])
  params["temp"] = np.float32(tau)
  return {**state, "params": params}


def test_step_clamps_tau_before_the_forward_and_after_the_update_and_applies_spec_adamw():
  step, state0 = _closed_form_step(accum=1)
  for tau0, batches in ((0.7, _batches(2, 0)), (0.0012, [{**b, "c": np.float32(-1.0)} for b in _batches(1, 1)])):
    # τ0 = 0.7: the forward must see 0.5 (loss and τ's gradient). τ0 = 0.0012 with c < 0: the update
    # drives τ to ≈ −0.009 and the clamp after it must bring it back to 0.001.
    state = _with_temp(state0, tau0)
    ref = _SpecAdamW(_flat(state["params"]))
    for i, batch in enumerate(batches):
      want_loss = ref.loss(batch)
      lr = ref.update(ref.grads(batch))
      state, m = step(state, batch)
      what = f"tau0={tau0}, step {i + 1}"
      np.testing.assert_allclose(float(m["train/loss"]), want_loss, rtol=1e-5, err_msg=what)
      np.testing.assert_allclose(float(m["train/lr"]), lr, rtol=1e-6, err_msg=what)
      ref.check(state["params"], what)
      assert float(m["train/temp"]) == float(state["params"]["temp"])
    if tau0 < 0.001 * 2:
      assert float(state["params"]["temp"]) == np.float32(0.001)


def test_gradient_accumulation_update_is_spec_adamw_on_the_mean_gradient():
  step, state0 = _closed_form_step(accum=2)
  state = _with_temp(state0, 0.07)
  ref = _SpecAdamW(_flat(state["params"]))
  # Adam's step is invariant to the gradient's scale except through ε, and clipping normalises it: with
  # clipping inactive (small gradients) and β's gradient of order ε, a SUM of micro-gradients instead
  # of their mean changes β's update by ~80%; distinct micro-batches catch using one of them only.
  batches = _batches(4, 2, scale=1e-3, b_scale=1e-8)
  for i in range(0, 4, 2):
    g1, g2 = ref.grads(batches[i]), ref.grads(batches[i + 1])  # both at the same (unchanged) params
    before = _flat(state["params"])
    state, m1 = step(state, batches[i])
    assert all(np.array_equal(before[k], v) for k, v in _flat(state["params"]).items()), "micro-step updated"
    lr = ref.update({k: (g1[k] + g2[k]) / 2 for k in g1})
    state, m2 = step(state, batches[i + 1])
    ref.check(state["params"], f"optimizer step {i // 2 + 1}")
    assert float(m1["train/lr"]) == float(m2["train/lr"]) == pytest.approx(lr, rel=1e-6)


# ----------------------------------------------------------------------------------- task wiring


@pytest.mark.slow
def test_pretrain_loss_weights_itc_grad_scale_and_group_sizes_reach_each_stream(monkeypatch):
  """PretrainTask.loss: L = Σ_s w_s·Σ terms (docs/reference.md §3.5) with each stream's own weight, ITM group size
  and the ITC feature-gradient scale (docs/reference.md §3.1) applied to every stream, τ's gradient unscaled."""
  from x2vlm_jax.objectives import itm

  config = synthetic_tiny.get_config("steps=6")
  config.data.region.batch_size = 6  # distinct row counts tell the streams apart below
  config.itm_group_size.update(image=4, region=2)
  batch = {
    s: {k: jnp.asarray(v) for k, v in b.items()}
    for s, b in next(SyntheticIterator(config.data, config.model, seed=0)).items()
  }
  graphdef, params = nnx.split(X2VLM(config.model, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(params)

  seen = []
  sample = itm.sample_itm_negatives

  def spy(rng, image_feat, text_feat, temp, valid, group_size, ids=None):
    seen.append((int(image_feat.shape[0]), group_size))
    return sample(rng, image_feat, text_feat, temp, valid, group_size, ids)

  monkeypatch.setattr(itm, "sample_itm_negatives", spy)

  def run(w_image, w_region, scale):
    task = PretrainTask(config)
    task.weights = {"image": w_image, "region": w_region}
    task.itc_grad_scale = scale

    def f(p):
      return task.loss(nnx.merge(graphdef, p), batch, jax.random.key(3), 0)

    return jax.value_and_grad(f, has_aux=True)(params)

  run = jax.jit(run).lower(*[np.float32(0)] * 3).compile(compiler_options=FAST_COMPILE)
  out = {
    args: jax.device_get(run(*map(np.float32, args)))
    for args in ((1, 0, 1), (0, 1, 1), (1, 0, 0), (0, 1, 0), (0.7, 1.9, 0.25))
  }
  assert sorted(set(seen)) == [(6, 2), (8, 4)], seen  # region rows 6 in groups of 2, image rows 8 in 4

  (loss, metrics), grads = out[(0.7, 1.9, 0.25)]
  terms = {"image": ("itc", "itm", "mlm"), "region": ("itc", "itm", "mlm", "bbox", "giou")}
  want = sum(w * sum(float(metrics[f"{s}/{t}"]) for t in terms[s]) for s, w in (("image", 0.7), ("region", 1.9)))
  assert float(loss) == pytest.approx(want, rel=1e-5)

  flat = {s: {sc: _flat(out[(1, 0, sc) if s == "image" else (0, 1, sc)][1]) for sc in (0, 1)} for s in terms}
  got = _flat(grads)
  for k in got:
    expect = sum(
      w * (flat[s][0][k] + 0.25 * (flat[s][1][k] - flat[s][0][k])) for s, w in (("image", 0.7), ("region", 1.9))
    )
    # atol: an entry that sums larger terms of both signs keeps float32 noise of a few 1e-7 (seen: 3.8e-7
    # on a 7e-4 word-embedding gradient); a weight or scale that missed a stream moves entries by ~1e-3.
    np.testing.assert_allclose(got[k], expect, rtol=2e-4, atol=1e-6, err_msg=k)
  for s in terms:
    # The scale reaches this stream's encoders (ITC is their only gradient source that it changes)…
    assert not np.allclose(flat[s][0]["vision_proj/kernel"], flat[s][1]["vision_proj/kernel"]), s
    # …but not τ, which receives the full ITC gradient (docs/reference.md §3.1).
    np.testing.assert_allclose(flat[s][0]["temp"], flat[s][1]["temp"], rtol=1e-5, err_msg=s)
