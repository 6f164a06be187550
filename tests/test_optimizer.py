"""Optimizer (x2vlm_jax.training.optimizer): official names, decay mask, groups, schedule, AdamW math."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from x2vlm_jax.training import optimizer as O


@pytest.fixture(scope="module")
def tiny_paths():
  from x2vlm_jax.models import get_preset
  from x2vlm_jax.params_io import param_shapes

  return param_shapes(get_preset("tiny", num_frames=3))


@pytest.fixture(scope="module")
def base_paths():
  """Every parameter of the base model, stacked layer arrays (the preset scans) named per layer."""
  from x2vlm_jax import params_layout
  from x2vlm_jax.models import get_preset
  from x2vlm_jax.params_io import param_shapes

  shapes = param_shapes(get_preset("base", num_frames=3))
  assert any(params_layout.is_stack_path(p) for p in shapes)
  return [n for names in params_layout.layer_paths({p: s for p, (s, _) in shapes.items()}).values() for n in names]


def _official_base_keys(depth=12, layers=18, fusion_start=12):
  """Trainable keys of the official base state dict, spelled out from docs/reference.md §7.2 (buffers and the
  tied duplicates cls.predictions.decoder.{weight,bias} left out)."""

  def wb(p):
    return {p + ".weight", p + ".bias"}

  keys = {"vision_encoder.cls_token", "temp", "absolute_frame_pos_embed"}
  keys |= wb("vision_encoder.patch_embed.proj") | wb("vision_encoder.fc_norm")
  for i in range(depth):
    b = f"vision_encoder.blocks.{i}."
    keys |= {
      b + "gamma_1",
      b + "gamma_2",
      b + "attn.q_bias",
      b + "attn.v_bias",
      b + "attn.relative_position_bias_table",
      b + "attn.qkv.weight",
    }
    for m in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2"):
      keys |= wb(b + m)
  e = "text_encoder.bert.embeddings."
  keys |= {e + "word_embeddings.weight", e + "position_embeddings.weight", e + "token_type_embeddings.weight"} | wb(
    e + "LayerNorm"
  )
  for layer in range(layers):
    p = f"text_encoder.bert.encoder.layer.{layer}."
    for a in ["attention"] + (["crossattention"] if layer >= fusion_start else []):
      for m in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
        keys |= wb(p + a + "." + m)
    for m in ("intermediate.dense", "output.dense", "output.LayerNorm"):
      keys |= wb(p + m)
  keys |= {"text_encoder.cls.predictions.bias"}
  keys |= wb("text_encoder.cls.predictions.transform.dense") | wb("text_encoder.cls.predictions.transform.LayerNorm")
  keys |= wb("vision_proj") | wb("text_proj")
  for h in ("itm_head", "bbox_head"):
    for i in (0, 1, 3):
      keys |= wb(f"{h}.{i}")
  return keys


# --- names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
  "ours, official",
  [
    ("vision/blocks/3/attn/rel_pos_table", "vision_encoder.blocks.3.attn.relative_position_bias_table"),
    ("vision/blocks/3/norm1/scale", "vision_encoder.blocks.3.norm1.weight"),
    ("text/layers/5/self_attn/ln/scale", "text_encoder.bert.encoder.layer.5.attention.output.LayerNorm.weight"),
    ("text/layers/13/cross_attn/query/kernel", "text_encoder.bert.encoder.layer.13.crossattention.self.query.weight"),
    ("text/layers/13/ln/bias", "text_encoder.bert.encoder.layer.13.output.LayerNorm.bias"),
    ("itm_head/ln/scale", "itm_head.1.weight"),
    ("bbox_head/fc1/kernel", "bbox_head.3.weight"),
    ("temp", "temp"),
    ("frame_pos", "absolute_frame_pos_embed"),
    ("vision/fc_norm/scale", "vision_encoder.fc_norm.weight"),
    ("vision/patch_embed/kernel", "vision_encoder.patch_embed.proj.weight"),
    ("vision/blocks/0/fc2/bias", "vision_encoder.blocks.0.mlp.fc2.bias"),
    ("text/mlm/bias", "text_encoder.cls.predictions.bias"),
    ("text/mlm/ln/scale", "text_encoder.cls.predictions.transform.LayerNorm.weight"),
    ("text/embeddings/ln/scale", "text_encoder.bert.embeddings.LayerNorm.weight"),
    ("text/embeddings/word/embedding", "text_encoder.bert.embeddings.word_embeddings.weight"),
  ],
)
def test_official_name_examples(ours, official):
  assert O.official_name(ours) == official
  assert O.official_name(tuple(int(p) if p.isdigit() else p for p in ours.split("/"))) == official


def test_official_names_cover_the_base_checkpoint_exactly(base_paths):
  names = [O.official_name(p) for p in base_paths]
  assert len(set(names)) == len(names) == 573
  assert set(names) == _official_base_keys()


def test_official_names_agree_with_the_converter_layout(tiny_paths):
  layout = pytest.importorskip("x2vlm_jax.convert.layout")
  from x2vlm_jax.models import get_preset

  entries = layout.layout(get_preset("tiny", num_frames=3))
  assert {e.path for e in entries} == set(tiny_paths)
  assert all(O.official_name(e.path) == e.key for e in entries)


def test_official_name_rejects_unknown():
  with pytest.raises(ValueError, match="no official"):
    O.official_name("text/layers/0/mystery/kernel")


def test_path_to_str_pure_dict_and_nnx_state():
  from flax import nnx

  tree = {"text": {"layers": {0: {"ln": {"scale": nnx.Param(jnp.ones(2))}}}}}
  state = nnx.State(tree)
  paths = [O.path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  assert paths == ["text/layers/0/ln/scale"]
  pure = nnx.to_pure_dict(state)
  assert [O.path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(pure)[0]] == paths
  assert O.path_to_str([jax.tree_util.GetAttrKey("vision"), jax.tree_util.SequenceKey(2)]) == "vision/2"


# --- decay mask ----------------------------------------------------------------------------------------
def _check_decay_consequences(paths):
  d = {p: O.decays(p) for p in paths}
  no_decay = [p for p, v in d.items() if not v]
  decay = [p for p, v in d.items() if v]
  # no decay: every bias, q/v biases, rel-pos tables, all norms except the heads' LN weights
  for p in paths:
    leaf = p.rsplit("/", 1)[-1]
    if leaf in ("bias", "q_bias", "v_bias", "rel_pos_table"):
      assert not d[p], p
    if "/ln/" in p and not p.startswith(("itm_head", "bbox_head")):
      assert not d[p], p  # BERT LayerNorms (embeddings, attention, cross-attention, output, MLM head)
    if "/norm1/" in p or "/norm2/" in p or "/fc_norm/" in p:
      assert not d[p], p
    if leaf in ("kernel", "embedding", "gamma_1", "gamma_2"):
      assert d[p], p
  for p in (
    "vision/cls_token",
    "vision/patch_embed/kernel",
    "text/embeddings/word/embedding",
    "text/embeddings/position/embedding",
    "text/embeddings/token_type/embedding",
    "temp",
    "frame_pos",
    "itm_head/ln/scale",
    "bbox_head/ln/scale",
    "vision/blocks/1/gamma_1",
    "vision/blocks/1/gamma_2",
  ):
    assert d[p], p
  for p in (
    "itm_head/ln/bias",
    "bbox_head/ln/bias",
    "vision/fc_norm/scale",
    "vision/fc_norm/bias",
    "vision/blocks/1/attn/rel_pos_table",
    "vision/blocks/1/attn/q_bias",
    "text/mlm/bias",
    "text/mlm/ln/scale",
    "text/embeddings/ln/scale",
    "vision/patch_embed/bias",
  ):
    assert not d[p], p
  return decay, no_decay


def test_decay_mask_tiny(tiny_paths):
  decay, no_decay = _check_decay_consequences(tiny_paths)
  assert decay and no_decay


# docs/reference.md §6.1's consequences, one parameter at a time (not its substring rule): the official names
# decay unless they are a bias of some kind or a BERT LayerNorm / vision norm1, norm2, fc_norm; the
# heads' LayerNorm weights are called "<head>.1.weight" and so DO decay, as do temp, γ and cls_token.
DECAY_DECISIONS = [
  ("temp", True),
  ("frame_pos", True),
  ("vision/cls_token", True),
  ("vision/patch_embed/kernel", True),
  ("vision/blocks/7/gamma_1", True),
  ("vision/blocks/7/gamma_2", True),
  ("vision/blocks/7/attn/qkv/kernel", True),
  ("vision/blocks/7/fc2/kernel", True),
  ("text/embeddings/word/embedding", True),
  ("text/embeddings/position/embedding", True),
  ("text/embeddings/token_type/embedding", True),
  ("text/layers/14/cross_attn/value/kernel", True),
  ("text/mlm/dense/kernel", True),
  ("vision_proj/kernel", True),
  ("itm_head/fc1/kernel", True),
  ("itm_head/ln/scale", True),
  ("bbox_head/ln/scale", True),
  ("cls_head/ln/scale", True),
  ("vision/patch_embed/bias", False),
  ("vision/blocks/7/attn/q_bias", False),
  ("vision/blocks/7/attn/v_bias", False),
  ("vision/blocks/7/attn/rel_pos_table", False),
  ("vision/blocks/7/norm1/scale", False),
  ("vision/blocks/7/norm1/bias", False),
  ("vision/blocks/7/norm2/scale", False),
  ("vision/fc_norm/scale", False),
  ("vision/fc_norm/bias", False),
  ("text/embeddings/ln/scale", False),
  ("text/layers/3/self_attn/ln/scale", False),
  ("text/layers/14/cross_attn/ln/scale", False),
  ("text/layers/3/ln/scale", False),
  ("text/layers/3/ln/bias", False),
  ("text/mlm/ln/scale", False),
  ("text/mlm/bias", False),
  ("text/layers/3/intermediate/bias", False),
  ("itm_head/ln/bias", False),
  ("bbox_head/fc0/bias", False),
  ("text_proj/bias", False),
  ("cls_head/ln/bias", False),
]


@pytest.mark.parametrize("path, expected", DECAY_DECISIONS)
def test_decay_decision_on_named_parameters(path, expected):
  assert O.decays(path) is expected


def test_decay_mask_base_matches_official_names(base_paths):
  """Every base parameter, decided on the official key list spelled out from docs/reference.md §7.2, by category."""

  def spec_decays(name):
    leaf = name.rsplit(".", 1)[-1]
    bias_like = leaf in ("bias", "q_bias", "v_bias", "relative_position_bias_table")
    norm = "LayerNorm" in name or any(f".{n}." in name for n in ("norm1", "norm2", "fc_norm"))
    return not (bias_like or norm)

  got = {O.official_name(p): O.decays(p) for p in base_paths}
  want = {k: spec_decays(k) for k in _official_base_keys()}
  assert got == want
  assert got["itm_head.1.weight"] and got["temp"] and not got["vision_encoder.fc_norm.weight"]


def test_decay_mask_tree_matches_structure():
  params = {"temp": jnp.float32(1.0), "itm_head": {"ln": {"scale": jnp.ones(2), "bias": jnp.ones(2)}}}
  assert O.decay_mask(params) == {"temp": True, "itm_head": {"ln": {"scale": True, "bias": False}}}


# --- groups and schedule -------------------------------------------------------------------------------
def test_param_groups_priority():
  cfg = O.default_config()
  new = frozenset({"itm_head/fc0/kernel", "text/layers/13/cross_attn/query/kernel"})
  assert O.param_group("itm_head/fc0/kernel", cfg, new) == "new"
  assert O.param_group("text/layers/13/cross_attn/query/kernel", cfg, new) == "new"
  assert O.param_group("text/layers/1/ln/scale", cfg, new) == "base"
  assert O.param_group("vision_proj/kernel", cfg, new) == "base"
  cfg.vision_lr = 1e-5
  cfg.text_lr = 2e-5
  assert O.param_group("vision/blocks/0/gamma_1", cfg, new) == "vision"
  # text_lr wins over "new" for cross-attention (official priority order)
  assert O.param_group("text/layers/13/cross_attn/query/kernel", cfg, new) == "text"
  assert O.param_group("vision_proj/kernel", cfg, new) == "base"  # not a vision_encoder.* name
  # cross_lr defaults to text_lr once vision_lr is set (official optim.py); no English param has that name.
  assert O.peak_learning_rates(cfg) == {"base": 1e-4, "new": 2e-4, "vision": 1e-5, "text": 2e-5, "cross": 2e-5}


def test_lr_schedule_values():
  def f(t):
    return float(O.lr_factor(t, 10, 110))

  assert [f(0), f(5), f(9), f(10), f(60), f(109), f(110), f(500)] == pytest.approx(
    [0.0, 0.5, 0.9, 1.0, 0.5, 0.01, 0.0, 0.0], abs=1e-7
  )
  cfg = O.default_config()
  cfg.update(lr=1e-4, warmup_steps=2500, total_steps=504_495)
  _, lr_fn = O.build_optimizer(cfg)
  np.testing.assert_allclose(
    [lr_fn(0), lr_fn(1250), lr_fn(2500), lr_fn(253_497.5), lr_fn(504_495)],
    [0.0, 5e-5, 1e-4, 5e-5, 0.0],
    rtol=1e-5,
    atol=1e-12,
  )
  assert O.resolve_warmup(0.1, 1000) == 100 and O.resolve_warmup(100, 1000) == 100


def test_bad_schedule_config():
  cfg = O.default_config()
  with pytest.raises(ValueError, match="total_steps"):
    O.build_optimizer(cfg)
  with pytest.raises(ValueError, match="warmup"):
    O.build_optimizer(cfg, total_steps=100)


def _cfg(**kw):
  cfg = O.default_config()
  cfg.update(dict(lr=0.1, warmup_steps=0, total_steps=1_000_000, weight_decay=0.0, clip_norm=None))
  cfg.update(kw)
  return cfg


def test_lr_mult_for_new_params():
  params = {"temp": jnp.float32(0.0), "itm_head": {"fc0": {"bias": jnp.zeros(3)}}}
  grads = {"temp": jnp.float32(1.0), "itm_head": {"fc0": {"bias": jnp.ones(3)}}}
  tx, _ = O.build_optimizer(_cfg(lr_mult=2.0), new_params=["itm_head/fc0/bias"])
  upd, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  # first Adam step: direction = sign(g) = 1 (up to ε), times the group lr
  np.testing.assert_allclose(upd["temp"], -0.1, rtol=1e-6)
  np.testing.assert_allclose(upd["itm_head"]["fc0"]["bias"], -0.2, rtol=1e-6)
  # every parameter new (training from scratch) → nobody gets the multiplier
  tx, _ = O.build_optimizer(_cfg(lr_mult=2.0), new_params=["itm_head/fc0/bias", ("temp",)])
  upd, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  np.testing.assert_allclose(upd["itm_head"]["fc0"]["bias"], -0.1, rtol=1e-6)
  tx, _ = O.build_optimizer(_cfg(), new_params=["itm_head/fc9/bias"])
  with pytest.raises(ValueError, match="not parameters"):
    tx.init(params)


# --- update math ---------------------------------------------------------------------------------------
def test_clip_by_global_norm_on_a_big_gradient():
  g = {"text": {"mlm": {"bias": jnp.full((4,), 30.0)}}, "temp": jnp.float32(40.0)}  # ‖g‖ = √5200
  clip = O.clip_by_global_norm_torch(1.0)
  out, _ = clip.update(g, clip.init(g))
  np.testing.assert_allclose(optax.global_norm(out), 1.0, rtol=1e-6)
  np.testing.assert_allclose(out["temp"] / out["text"]["mlm"]["bias"][0], 40 / 30, rtol=1e-6)
  small = jax.tree.map(lambda x: jnp.full_like(x, 0.1), g)
  out, _ = clip.update(small, clip.init(small))
  np.testing.assert_allclose(out["text"]["mlm"]["bias"], small["text"]["mlm"]["bias"])
  # inside the full chain, Adam's first moment sees the clipped gradient
  params = jax.tree.map(jnp.zeros_like, g)
  tx, _ = O.build_optimizer(_cfg(clip_norm=1.0))
  _, state = jax.jit(tx.update)(g, tx.init(params), params)
  adam = state[1]
  np.testing.assert_allclose(optax.global_norm(adam.mu), 0.1, rtol=1e-5)


def _hf_adamw(p, grads, lrs, b1=0.9, b2=0.98, eps=1e-8, wd=0.01):
  """transformers.AdamW (v4.12.5, correct_bias=True) written out in float64."""
  p = np.asarray(p, np.float64)
  m = np.zeros_like(p)
  v = np.zeros_like(p)
  for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
    p = p - step * m / (np.sqrt(v) + eps)
    p = p - lr * wd * p
  return p


def test_one_adamw_step_on_a_scalar_by_hand():
  params = {"temp": jnp.float32(2.0), "vision": {"blocks": {0: {"attn": {"q_bias": jnp.float32(2.0)}}}}}
  grads = {"temp": jnp.float32(0.5), "vision": {"blocks": {0: {"attn": {"q_bias": jnp.float32(0.5)}}}}}
  tx, _ = O.build_optimizer(_cfg(weight_decay=0.01))
  upd, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  new = optax.apply_updates(params, upd)
  # m̂ = 0.5, v̂ = 0.25 → Adam step = lr·0.5/0.5 = 0.1 → p' = 1.9; HF decays p' (not p): 1.9·(1 − 0.1·0.01)
  np.testing.assert_allclose(new["temp"], 1.9 * (1 - 0.001), rtol=1e-6)
  np.testing.assert_allclose(new["vision"]["blocks"][0]["attn"]["q_bias"], 1.9, rtol=1e-6)  # no decay
  # optax.adamw would decay the pre-update value: 2 − 0.1·(1 + 0.01·2) = 1.898 vs 1.8981 here
  stock = optax.adamw(0.1, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01)
  upd, _ = stock.update(grads["temp"], stock.init(params["temp"]), params["temp"])
  np.testing.assert_allclose(optax.apply_updates(params["temp"], upd), 1.898, rtol=1e-6)


def test_several_steps_match_hf_adamw_with_schedule_and_clipping():
  rng = np.random.default_rng(0)
  p0 = rng.normal(size=5).astype(np.float32)
  gs = [rng.normal(size=5).astype(np.float32) * s for s in (0.1, 3.0, 0.2, 0.05)]
  cfg = _cfg(lr=0.05, warmup_steps=2, total_steps=6, weight_decay=0.01, clip_norm=1.0)
  tx, lr_fn = O.build_optimizer(cfg)
  params = {"temp": jnp.asarray(p0)}
  state = tx.init(params)
  step = jax.jit(tx.update)
  for g in gs:
    upd, state = step({"temp": jnp.asarray(g)}, state, params)
    params = optax.apply_updates(params, upd)
  clipped = [g * min(1.0, 1.0 / (np.linalg.norm(g.astype(np.float64)) + 1e-6)) for g in gs]
  lrs = [0.05 * f for f in (0.0, 0.5, 1.0, 0.75)]
  np.testing.assert_allclose([float(lr_fn(i)) for i in range(4)], lrs, rtol=1e-6)
  np.testing.assert_allclose(params["temp"], _hf_adamw(p0, clipped, lrs), rtol=1e-5, atol=1e-7)


def test_grad_accumulation_equals_one_step_on_the_mean():
  params = {"temp": jnp.array([1.0, -2.0]), "text": {"mlm": {"bias": jnp.array([0.5, 0.5])}}}
  g1 = {"temp": jnp.array([3.0, -1.0]), "text": {"mlm": {"bias": jnp.array([0.2, 2.0])}}}
  g2 = {"temp": jnp.array([-1.0, 0.5]), "text": {"mlm": {"bias": jnp.array([1.0, -4.0])}}}
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  base = _cfg(weight_decay=0.01, clip_norm=1.0, warmup_steps=3, total_steps=10)

  tx1, _ = O.build_optimizer(base)
  step1 = jax.jit(tx1.update)
  s1 = tx1.init(params)
  ref = params
  for _ in range(2):  # two optimizer steps, so the lr is not 0
    u, s1 = step1(mean, s1, ref)
    ref = optax.apply_updates(ref, u)

  base.grad_accum_steps = 2
  tx2, _ = O.build_optimizer(base)
  step2 = jax.jit(tx2.update)
  s2 = tx2.init(params)
  got = params
  for _ in range(2):
    for g in (g1, g2):
      u, s2 = step2(g, s2, got)
      if g is g1:  # mid-accumulation: no change
        assert all(not np.asarray(x).any() for x in jax.tree.leaves(u))
      got = optax.apply_updates(got, u)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, ref)


def test_state_is_float32_and_nnx_state_gives_same_updates():
  from flax import nnx

  pure = {
    "temp": jnp.float32(0.07),
    "text": {"layers": {0: {"ln": {"scale": jnp.ones(3)}}}},
    "itm_head": {"ln": {"scale": jnp.ones(3)}},
  }
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), pure)
  state = nnx.State(jax.tree.map(nnx.Param, pure))
  gstate = nnx.State(jax.tree.map(nnx.Param, grads))
  cfg = _cfg(weight_decay=0.01, grad_accum_steps=2, clip_norm=1.0)
  tx, _ = O.build_optimizer(cfg, new_params=["itm_head/ln/scale"])
  for p, g in ((pure, grads), (state, gstate)):
    s = tx.init(p)
    floats = [x for x in jax.tree.leaves(s) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
    step = jax.jit(tx.update)
    _, s = step(g, s, p)
    u, s = step(g, s, p)
    if p is pure:
      ref = u
  got = nnx.to_pure_dict(u)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-7), got, ref)
  # first real step: Adam direction 1 → text LN (no decay) moves by −lr = −0.1; the head LN weight
  # (new: lr 0.2, and decayed as "itm_head.1.weight") by −0.2 − 0.2·0.01·(1 − 0.2)
  np.testing.assert_allclose(ref["text"]["layers"][0]["ln"]["scale"], -0.1, rtol=1e-5)
  np.testing.assert_allclose(ref["itm_head"]["ln"]["scale"], -0.2 - 0.2 * 0.01 * 0.8, rtol=1e-5)
