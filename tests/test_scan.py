"""Scan over layers (x2vlm_jax/models/scan.py) computes what the unrolled stacks compute.

Reference = the same tiny model unscanned (the layout of every checkpoint before scanning existed),
with the SAME weights moved into the stacked layout by `params_layout.stack_layers`; float32 to 1e-6:
every recipe and head, the inference API, the gradients of the full pre-training loss (with dropout and
drop-path on, per remat policy), caption / answer beam search with the KV cache, checkpoints both
ways, an export of the previous format, and the optimizer's lr groups and decay masks per element.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.configs import synthetic_tiny
from x2vlm_jax import hlo_flops, params_io, params_layout
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.training import optimizer

TOL = 1e-6


def _cfg(scan: bool, **heads):
  cfg = get_preset("tiny", scan_layers=scan, num_frames=2)
  cfg.vision.drop_path_rate = 0.2  # distinct per-block rates: block 0 has 0, block 1 has 0.2
  cfg.text.drop_path_rate = 0.1
  cfg.text.cross_drop_path_rate = 0.15
  cfg.heads.update(heads)
  return cfg


def _pair(**heads):
  """(unscanned model, scanned model) with the same weights, taken from the unscanned init."""
  ref = X2VLM(_cfg(False, **heads), rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(ref, nnx.Param))
  scanned = X2VLM(_cfg(True, **heads), rngs=nnx.Rngs(1))
  params_io.into_model(scanned, params_layout.stack_layers(params))
  return ref, scanned, params


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)))) for x, y in zip(a, b))


def _inputs():
  k = jax.random.split(jax.random.key(7), 4)
  images = jax.random.normal(k[0], (2, 32, 32, 3))
  frames = jax.random.normal(k[1], (2, 2, 32, 32, 3))
  ids = jnp.array([[1, 5, 6, 7, 9, 2, 0, 0], [1, 8, 9, 11, 2, 0, 0, 0]], jnp.int32)
  return images, frames, ids, (ids > 0).astype(jnp.int32)


def _outputs(m, rng):
  images, frames, ids, mask = _inputs()
  r = list(jax.random.split(rng, 8)) if rng is not None else [None] * 8
  img, img_feat = m.encode_image(images, r[0])
  vid, vid_feat = m.encode_video(frames, r[1])
  txt, txt_feat = m.encode_text(ids, mask, r[2])
  out = [img, img_feat, vid, vid_feat, txt, txt_feat]
  out.append(m.itm_logits(img, None, txt, mask, r[3]))
  out.append(m.itm_logits(img[:1], None, txt, mask, r[3]))  # one image shared by both texts
  out.append(m.mlm_logits(ids, mask, img, None, r[4]))
  out.append(m.predict_box(img, txt, mask, r[5]))
  out.append(m.similarity(img_feat, txt_feat))
  if m.nlvr_head is not None:
    out.append(m.nlvr_logits(img, img[::-1], ids, mask, r[6]))
  if m.cls_head is not None:
    out.append(m.cls_logits(vid, None, ids, mask, r[6]))
  if m.decoder is not None:
    memory = m.vqa_memory(ids, mask, img, None, r[7])
    answers = jnp.array([[[1, 4, 2, 0], [1, 6, 7, 2]], [[1, 9, 2, 0], [1, 3, 2, 0]]], jnp.int32)
    out.append(memory)
    out.append(m.vqa_loss(answers, (answers > 0).astype(jnp.int32), jnp.array([[0.7, 0.3], [1.0, 0.0]]), memory, mask))
  return out


@nnx.jit
def _all_outputs(m):
  """Deterministic and with dropout / drop-path on (one program per model)."""
  return _outputs(m, None), _outputs(m, jax.random.key(3))


# Slow, both: 25 s even for the smaller one (two models, every API output twice).
@pytest.mark.slow
@pytest.mark.parametrize("heads", [dict(nlvr=True, decoder_layers=2), dict(num_labels=3)], ids=["nlvr_vqa", "cls"])
def test_every_recipe_and_head_matches_unscanned(heads):
  ref, scanned, _ = _pair(**heads)
  (a, a_train), (b, b_train) = _all_outputs(ref), _all_outputs(scanned)
  assert len(a) == len(b) == len(a_train) == len(b_train)
  assert _max_diff(a, b) < TOL
  assert _max_diff(a_train, b_train) < TOL
  assert _max_diff(a[:1], a_train[:1]) > 1e-3  # dropout / drop-path were really on


def test_stacked_params_have_a_replicated_leading_layer_axis():
  from x2vlm_jax import sharding as shd

  cfg = _cfg(True, decoder_layers=2)
  model = params_io.abstract_model(cfg)
  shapes = params_io.param_shapes(cfg)
  assert shapes["vision/block_stack/attn/qkv/kernel"][0] == (2, 64, 192)
  assert shapes["text/text_stack/self_attn/query/kernel"][0] == (2, 64, 64)
  assert shapes["text/fusion_stack/cross_attn/key/kernel"][0] == (1, 64, 64)
  assert shapes["decoder/fusion_stack/intermediate/kernel"][0] == (2, 64, 256)
  assert not any("/blocks/" in p or "/layers/" in p for p in shapes)
  mesh = shd.create_mesh((1, 2, 2))
  specs = params_layout.flatten(shd.param_specs(model, shd.DEFAULT_RULES, mesh))
  # layer axis replicated; the per-layer axes keep the unscanned rules (embed→fsdp, heads→tensor)
  assert tuple(specs["vision/block_stack/attn/qkv/kernel"]) == (None, "fsdp", "tensor")
  assert tuple(specs["text/fusion_stack/intermediate/kernel"]) == (None, "fsdp", "tensor")
  unscanned = params_layout.flatten(
    shd.param_specs(params_io.abstract_model(_cfg(False, decoder_layers=2)), shd.DEFAULT_RULES, mesh)
  )
  assert tuple(unscanned["vision/blocks/0/attn/qkv/kernel"]) == ("fsdp", "tensor")


def _pretrain_loss_and_grads(scan: bool, params, policy="none"):
  from x2vlm_jax.tasks.pretrain import PretrainTask
  from x2vlm_jax.tasks.synthetic import SyntheticIterator

  config = synthetic_tiny.get_config()
  config.model.scan_layers = scan
  config.model.vision.drop_path_rate = 0.2
  config.model.text.drop_path_rate = 0.1
  config.model.remat.update(vision=policy, text=policy)
  graphdef = nnx.graphdef(X2VLM(config.model, rngs=nnx.Rngs(0)))
  batch = jax.tree.map(jnp.asarray, next(SyntheticIterator(config.data, config.model, seed=0)))
  task = PretrainTask(config)

  def loss(p):
    return task.loss(nnx.merge(graphdef, p), batch, jax.random.key(5), 0)[0]

  params = params_layout.to_layout(params, config.model)
  compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
  value, grads = compiled(params)
  flops = hlo_flops.compiled_flops(compiled).flops
  return float(value), params_layout.flatten(params_layout.unstack_layers(grads)), flops


@pytest.mark.slow
def test_pretraining_loss_gradients_match_unscanned():
  """Image + region streams, every loss term (ITC, ITM with hard negatives, MLM, boxes), dropout and
  drop-path on; scanned with the policy that saves only the projections. Each
  gradient array within 1e-6 relative to its largest element (float32 summation order differs
  between one scanned layer and the unrolled ones: the word-embedding gradient, |g| ≈ 10, moves by
  a few 1e-6 absolute)."""
  config = synthetic_tiny.get_config()
  params = nnx.to_pure_dict(nnx.state(X2VLM(config.model, rngs=nnx.Rngs(0)), nnx.Param))
  l0, g0, flops0 = _pretrain_loss_and_grads(False, params)
  assert set(g0) == set(params_layout.flatten(params))
  flops = {}
  # `none`: the same arithmetic as unrolled; the policy that saves only the projections exercises the
  # scanned body's recomputation.
  for policy in ("none", "dots_with_no_batch_dims_saveable"):
    l1, g1, flops[policy] = _pretrain_loss_and_grads(True, params, policy)
    assert l1 == pytest.approx(l0, abs=TOL), policy
    assert set(g1) == set(g0)
    for k in g0:
      a, b = np.asarray(g0[k]), np.asarray(g1[k])
      scale = max(1.0, float(np.max(np.abs(a))))
      assert float(np.max(np.abs(a - b))) <= TOL * scale, (policy, k)
  assert max(float(np.max(np.abs(np.asarray(v)))) for v in g0.values()) > 1e-3  # gradients are not trivial
  # FLOPs per step (loops per trip): scan adds no arithmetic (within 2 %); the policy adds its recompute
  # (attention's batched matmuls run again in the backward pass) and nothing else.
  assert abs(flops["none"] - flops0) <= 0.02 * flops0, (flops["none"], flops0)
  assert flops0 < flops["dots_with_no_batch_dims_saveable"] < 1.5 * flops0


def test_remat_booleans_are_aliases_of_full():
  cfg = get_preset("tiny", remat_vision=True)
  from x2vlm_jax.models.presets import remat_policy

  assert remat_policy(cfg, "vision") == "full" and remat_policy(cfg, "text") == "none"
  cfg.remat.text = "dots_saveable"
  assert remat_policy(cfg, "text") == "dots_saveable"
  with pytest.raises(ValueError, match="model.remat.vision"):
    get_preset("tiny", remat={"vision": "some", "text": "none"})


def test_layout_round_trip_and_official_names():
  cfg = _cfg(False, decoder_layers=2)
  flat = params_layout.flatten(nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(0)), nnx.Param)))
  stacked = params_layout.stack_flat(flat)
  # layer j of the fusion stack is layer fusion_start + j
  np.testing.assert_array_equal(
    stacked["text/fusion_stack/cross_attn/out/kernel"][0], flat["text/layers/2/cross_attn/out/kernel"]
  )
  np.testing.assert_array_equal(stacked["text/text_stack/ln/scale"][1], flat["text/layers/1/ln/scale"])
  np.testing.assert_array_equal(stacked["decoder/fusion_stack/ln/bias"][1], flat["decoder/layers/1/ln/bias"])
  back = params_layout.unstack_flat(stacked)
  assert set(back) == set(flat) and all(np.array_equal(back[k], flat[k]) for k in flat)
  names = params_layout.layer_paths(stacked)
  assert names["text/fusion_stack/ln/bias"] == ["text/layers/2/ln/bias"]
  assert [optimizer.official_name(n) for n in names["vision/block_stack/attn/rel_pos_table"]] == [
    f"vision_encoder.blocks.{i}.attn.relative_position_bias_table" for i in range(2)
  ]


@pytest.mark.slow
def test_checkpoint_restores_across_layouts_both_ways(tmp_path):
  ref, scanned, params = _pair(decoder_layers=2, nlvr=True)
  flat = params_layout.flatten(params)
  # unscanned on disk → scanned model, and scanned on disk → unscanned model
  params_io.save(str(tmp_path / "u"), _cfg(False, decoder_layers=2, nlvr=True), params)
  params_io.save(str(tmp_path / "s"), _cfg(True, decoder_layers=2, nlvr=True), params)
  assert json.loads((tmp_path / "s" / params_io.CONFIG_FILE).read_text())["scan_layers"] is True
  assert params_layout.is_stacked(params_io.load_numpy(str(tmp_path / "s"))[1])
  for src, scan in (("u", True), ("s", False), ("s", True), ("u", False)):
    cfg, loaded = params_io.load(str(tmp_path / src), _cfg(scan, decoder_layers=2, nlvr=True))
    assert params_layout.is_stacked(loaded) == scan
    got = params_layout.flatten(params_layout.unstack_layers(loaded))
    assert set(got) == set(flat) and all(np.array_equal(np.asarray(got[k]), flat[k]) for k in flat), (src, scan)


@pytest.mark.slow
def test_export_of_the_previous_format_loads_into_a_scanned_model(tmp_path):
  """What the code before scanning wrote: unstacked params, a model_config.json without scan_layers /
  remat (only the booleans)."""
  import orbax.checkpoint as ocp

  from x2vlm_jax import inference

  cfg = get_preset("tiny")
  cfg.heads.decoder_layers = 1
  old = cfg.to_dict()
  for key in ("scan_layers", "remat"):
    old.pop(key)
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(0)), nnx.Param))
  (tmp_path / params_io.CONFIG_FILE).write_text(json.dumps(old))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / params_io.PARAMS_DIR, jax.tree.map(np.asarray, params))
  stored = params_io.load_config(str(tmp_path))
  assert stored.scan_layers is False and stored.remat.vision == "none"
  images, _, ids, mask = _inputs()
  outs = []
  for scan in (False, True):
    m = inference.load(str(tmp_path), scan_layers=scan)
    assert m.config.scan_layers == scan
    assert params_layout.is_stacked(nnx.to_pure_dict(nnx.state(m._state, nnx.Param))) == scan
    img, feat = m.encode_image(np.asarray(images))
    txt, tfeat = m.encode_text(np.asarray(ids), np.asarray(mask))
    outs.append([img, feat, txt, m.itm_logits(img, None, txt, np.asarray(mask)), m.similarity(feat, tfeat)])
  assert _max_diff(outs[0], outs[1]) < TOL


@pytest.mark.slow
def test_caption_and_answer_beam_search_with_kv_cache_match_unscanned():
  from x2vlm_jax.inference import decoding

  ref, scanned, _ = _pair(decoder_layers=2)
  images, _, ids, mask = _inputs()
  results = []
  for m in (ref, scanned):
    img, _ = m.encode_image(images)
    cap = decoding.generate_captions(
      m, img, prompt_ids=(1, 5), mask_id=3, eos_id=2, num_beams=3, max_len=6, min_length=2, use_cache=True
    )
    memory = m.vqa_memory(ids, mask, img)
    ans = decoding.generate_answers(m, memory, mask, bos_id=1, eos_id=2, num_beams=3, max_len=4)
    results.append(jax.tree.leaves(cap) + jax.tree.leaves(ans))
  for a, b in zip(*results):
    if jnp.issubdtype(a.dtype, jnp.integer):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    else:
      assert float(jnp.max(jnp.abs(a - b))) < TOL


def _one_update(params, new_params, optim):
  tx, _ = optimizer.build_optimizer(optim, new_params=new_params, total_steps=10)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5) + 0.01 * p, params)
  state = tx.init(params)
  for _ in range(2):  # step 0 has lr 0 (warm-up from 0); the second update moves
    updates, state = tx.update(grads, state, params)
  return params_layout.flatten(params_layout.unstack_layers(updates))


@pytest.mark.slow
def test_lr_groups_and_decay_masks_select_the_same_elements_in_both_layouts():
  cfg = _cfg(False, decoder_layers=2)
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(0)), nnx.Param))
  # "new" only in some layers of a stack: the fusion layer's cross-attention, decoder layer 1's FFN
  new = ["text/layers/2/cross_attn/query/kernel", "decoder/layers/1/intermediate/kernel", "itm_head/fc0/bias"]
  optim = optimizer.default_config()
  optim.update(warmup_steps=1, lr=1e-2, lr_mult=5.0, vision_lr=3e-3, weight_decay=0.1)
  flat = params_layout.flatten(params)
  u0 = _one_update(params, new, optim)
  u1 = _one_update(params_layout.stack_layers(params), new, optim)
  assert set(u0) == set(u1) == set(flat)
  for k in flat:
    # rtol: the global-norm clip sums the squares in another order (stacked arrays)
    np.testing.assert_allclose(np.asarray(u1[k]), np.asarray(u0[k]), rtol=1e-6, atol=1e-12, err_msg=k)

  # element counts per group and decay, each layout's own bookkeeping
  def counts(tree):
    names = params_layout.layer_paths(params_layout.flatten(tree))
    fl = params_layout.flatten(tree)
    out = {}
    for path, layer_names in names.items():
      per_layer = int(np.prod(np.shape(fl[path]))) // len(layer_names)
      for n in layer_names:
        key = (optimizer.param_group(n, optim, frozenset(new)), optimizer.decays(n))
        out[key] = out.get(key, 0) + per_layer
    return out

  c0, c1 = counts(params), counts(params_layout.stack_layers(params))
  assert c0 == c1 and set(g for g, _ in c0) == {"base", "new", "vision"}
  # the mixed stacks really got per-layer rates: decoder layer 1's FFN (new) moved by lr_mult × layer 0's
  d = flat["decoder/layers/0/intermediate/kernel"], flat["decoder/layers/1/intermediate/kernel"]
  assert d[0].shape == d[1].shape
  ffn = [np.abs(u0[f"decoder/layers/{i}/intermediate/kernel"]).mean() for i in (0, 1)]
  r = ffn[1] / ffn[0]
  assert r == pytest.approx(5.0, rel=0.05)
  mask = params_layout.flatten(optimizer.decay_mask(params_layout.stack_layers(params)))
  assert mask["vision/block_stack/attn/rel_pos_table"] is False
  assert mask["text/fusion_stack/intermediate/kernel"] is True


@pytest.mark.slow
def test_train_state_checkpoint_resumes_in_the_other_layout(tmp_path):
  """An Orbax train-state checkpoint (params + Adam moments) written unscanned restores into a scanned
  run's abstract state, and back, every element in its place."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from x2vlm_jax.training import checkpointing

  cfg = _cfg(False, decoder_layers=1)
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(0)), nnx.Param))
  tx, _ = optimizer.build_optimizer(dict(optimizer.default_config(), warmup_steps=2), total_steps=10)

  def state_of(p, fill):
    opt = tx.init(p)
    opt = jax.tree.map(lambda x: x + fill if jnp.issubdtype(x.dtype, jnp.floating) else x, opt)
    return {"step": jnp.asarray(3, jnp.int32), "params": p, "opt_state": opt, "rng": jax.random.PRNGKey(1)}

  def with_mu(state, p):
    # distinct values in the moments: Adam's mu = params + 1 (so a mis-placed slice shows)
    chain = list(state["opt_state"])  # (clip, Adam, groups)
    chain[1] = chain[1]._replace(mu=jax.tree.map(lambda x: x + 1.0, p))
    return {**state, "opt_state": tuple(chain)}

  unscanned = with_mu(state_of(params, 0.0), params)
  stacked_params = params_layout.stack_layers(params)
  scanned = with_mu(state_of(stacked_params, 0.0), stacked_params)
  replicated = NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",)), P())
  for name, saved, target in (("u", unscanned, scanned), ("s", scanned, unscanned)):
    ckpt = checkpointing.Checkpointer(str(tmp_path / name), async_save=False)
    ckpt.save(3, saved, {"step": 3}, {"pos": 1}, force=True)
    ckpt.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), target)
    got, meta, inp = ckpt.restore(3, abstract)
    ckpt.close()
    assert meta["step"] == 3 and inp == {"pos": 1}
    assert jax.tree.structure(got) == jax.tree.structure(target)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(target)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_init_from_an_unscanned_export_fills_the_slices_of_a_scanned_vqa_model(tmp_path):
  """The decoder's official initialisation (decoder layer j ← fusion layer fusion_start + j) lands in
  slice j of the scanned decoder's stacked arrays; the cross-attention keys/values stay fresh."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from tests.configs import synthetic_vqa
  from x2vlm_jax import tasks
  from x2vlm_jax.training import init_from

  c = synthetic_vqa.get_config()
  src_cfg = c.model.copy_and_resolve_references()
  src_cfg.heads.decoder_layers = 0
  src = nnx.to_pure_dict(nnx.state(X2VLM(src_cfg, rngs=nnx.Rngs(5)), nnx.Param))
  params_io.save(str(tmp_path / "export"), src_cfg, src)
  c.model.scan_layers = True
  task = tasks.build(c)
  p = init_from.plan(str(tmp_path / "export"), c.model, task)
  fresh = nnx.to_pure_dict(nnx.state(X2VLM(c.model, rngs=nnx.Rngs(9)), nnx.Param))
  replicated = NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",)), P())
  state = {"params": jax.tree.map(jnp.asarray, fresh)}
  out = init_from.apply(p, state, {"params": jax.tree.map(lambda _: replicated, fresh)}, c.model, task)
  got = params_layout.flatten(jax.device_get(out["params"]))
  text = params_layout.flatten(src)
  fs = c.model.text.fusion_start
  for j in range(c.model.heads.decoder_layers):
    for sub in ("self_attn/query/kernel", "cross_attn/out/bias", "intermediate/kernel", "ln/scale"):
      np.testing.assert_array_equal(got[f"decoder/fusion_stack/{sub}"][j], text[f"text/layers/{fs + j}/{sub}"])
    np.testing.assert_array_equal(
      got["decoder/fusion_stack/cross_attn/key/kernel"][j],
      np.asarray(fresh["decoder"]["fusion_stack"]["cross_attn"]["key"]["kernel"][j]),
    )
  for i in range(c.model.text.num_layers):
    group, k = ("text_stack", i) if i < fs else ("fusion_stack", i - fs)
    np.testing.assert_array_equal(got[f"text/{group}/output/kernel"][k], text[f"text/layers/{i}/output/kernel"])
  np.testing.assert_array_equal(got["vision/block_stack/fc1/bias"][1], text["vision/blocks/1/fc1/bias"])


# --- the multilingual text side (XLM-R + cross encoder, models/xlmr.py) --------------------------------


def _ml_cfg(scan: bool):
  cfg = get_preset("cclm_tiny", scan_layers=scan)
  cfg.cross.num_layers = 2  # two layers in each scan: a layer-order mistake would show
  cfg.vision.drop_path_rate = 0.2
  cfg.text.drop_path_rate = 0.1  # XLM-R layers 0 and 1: rates 0 and 0.1
  return cfg


def test_multilingual_layout_stacks_the_xlmr_layers_and_the_cross_encoder_and_round_trips():
  ref = X2VLM(_ml_cfg(False), rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(ref, nnx.Param))
  flat = params_layout.flatten(params)
  stacked = params_layout.flatten(params_layout.stack_layers(params, _ml_cfg(True)))
  # XLM-R layers → text/text_stack, cross-encoder layers → text/cross_stack, in layer order.
  np.testing.assert_array_equal(
    stacked["text/cross_stack/cross_attn/key/kernel"][1], flat["text/cross/1/cross_attn/key/kernel"]
  )
  np.testing.assert_array_equal(stacked["text/text_stack/output/bias"][0], flat["text/layers/0/output/bias"])
  assert not any(p.startswith(("text/layers/", "text/cross/")) for p in stacked)
  back = params_layout.unstack_flat(stacked)
  assert set(back) == set(flat) and all(np.array_equal(back[k], flat[k]) for k in flat)
  names = params_layout.layer_paths(stacked)
  assert names["text/cross_stack/ln/bias"] == ["text/cross/0/ln/bias", "text/cross/1/ln/bias"]
  # Official names (the optimizer's decay and lr groups read them) per cross-encoder layer.
  official = [optimizer.official_name(n) for n in names["text/cross_stack/cross_attn/key/kernel"]]
  assert [o.split(".crossattention.")[0] for o in official] == [
    "cross_encoder.encoder.layer.0",
    "cross_encoder.encoder.layer.1",
  ]


@pytest.mark.slow
def test_multilingual_model_scanned_matches_unscanned_outputs_and_gradients():
  from x2vlm_jax import objectives
  from x2vlm_jax.batch import stream_spec, synthetic_stream

  ref = X2VLM(_ml_cfg(False), rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(ref, nnx.Param))
  flat = params_layout.flatten(params)
  stacked = params_layout.flatten(params_layout.stack_layers(params, _ml_cfg(True)))
  scanned = X2VLM(_ml_cfg(True), rngs=nnx.Rngs(1))
  params_io.into_model(scanned, params_layout.unflatten(stacked))

  @nnx.jit
  def outputs(m, rng):
    images, _, ids, mask = _inputs()
    r = jax.random.split(rng, 4)
    img, _ = m.encode_image(images, r[0])
    txt, txt_feat = m.encode_text(ids, mask, r[1])
    return img, txt, txt_feat, m.itm_logits(img, None, txt, mask, r[2]), m.mlm_logits(ids, mask, img, None, r[3])

  a, b = outputs(ref, jax.random.key(3)), outputs(scanned, jax.random.key(3))
  assert _max_diff(a, b) < TOL
  assert _max_diff(a, outputs(ref, jax.random.key(4))) > 1e-3  # dropout / drop-path were really on

  spec = stream_spec("region", batch_size=4, image_res=32, patch_size=16, max_tokens=8, max_masks=2, num_images=2)
  batch = {k: jnp.asarray(v) for k, v in synthetic_stream("region", spec, vocab_size=200).items()}

  def grads(model):
    graphdef, state = nnx.split(model, nnx.Param)

    def loss(p):
      terms = objectives.stream_losses(nnx.merge(graphdef, p), "region", batch, jax.random.key(0), group_size=4)
      return sum(terms[k] for k in objectives.LOSS_TERMS)

    value, g = jax.jit(jax.value_and_grad(loss))(state)
    return float(value), params_layout.flatten(params_layout.unstack_layers(nnx.to_pure_dict(g)))

  (l0, g0), (l1, g1) = grads(ref), grads(scanned)
  assert l1 == pytest.approx(l0, abs=TOL)
  assert set(g0) == set(g1) == set(flat)
  for k in g0:
    scale = max(1.0, float(np.max(np.abs(g0[k]))))
    assert float(np.max(np.abs(g0[k] - g1[k]))) <= TOL * scale, k
  assert float(np.max(np.abs(g0["text/cross/1/cross_attn/key/kernel"]))) > 0  # the cross encoder trains
