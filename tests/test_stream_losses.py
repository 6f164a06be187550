"""A pre-training stream's losses with its passes batched (x2vlm_jax/objectives/pretraining.py: one text
call for the caption and its masked copy, one fusion call for the ITM pairs, the MLM rows and the box
rows) equal the official separate calls (`models/model_pretrain.py: XVLM.forward`: get_text_embeds,
get_matching_loss, get_mlm_loss, predict_bbox), rebuilt here from the model's public entry points and the
loss functions that tests/test_losses.py checks against numpy. Dropout is off and the hard negatives
are fixed, so both sides compute the same rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers.tiers import tiered
from x2vlm_jax import objectives
from x2vlm_jax.batch import stream_spec, synthetic_stream
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.objectives import itm
from x2vlm_jax.objectives.common import concat_blocks, concat_rows, split_blocks


def _no_dropout(name):
  cfg = get_preset(name)
  for tower in ("text", "cross"):
    if tower in cfg:
      cfg[tower].hidden_dropout = 0.0
      cfg[tower].attention_dropout = 0.0
  cfg.text.drop_path_rate = 0.0
  cfg.vision.drop_path_rate = 0.0
  return cfg


def _fixed_negatives(b):
  """Distinct, fixed negatives (image b+1, text b+2) with one invalid of each kind."""

  def sample(rng, image_feat, text_feat, temp, valid, group_size, ids=None):
    idx = jnp.arange(b)
    ok_img = jnp.ones((b,), bool).at[0].set(False)
    ok_txt = jnp.ones((b,), bool).at[1].set(False)
    return (idx + 1) % b, (idx + 2) % b, ok_img, ok_txt

  return sample


def _reference(model, stream, batch, negatives):
  """The separate calls of the official forward, one per objective."""
  valid = batch["valid"]
  if stream == "image":
    vis, vis_feat = model.encode_image(batch["images"])
    vis_mask = jnp.ones(vis.shape[:2], jnp.int32)
  elif stream == "video":
    vis, vis_feat = model.encode_video(batch["frames"])
    vis_mask = jnp.ones(vis.shape[:2], jnp.int32)
  else:
    images, _ = model.encode_image(batch["images"])
    vis, vis_feat = model.region_embeds(images, batch["patch_mask"], batch["image_index"])
    vis_mask = batch["patch_mask"]
  txt, txt_feat = model.encode_text(batch["text_ids"], batch["text_mask"])
  mask = batch["text_mask"]
  out = {"itc": objectives.itc_loss(vis_feat, txt_feat, model.temp[...], valid)}
  neg_img, neg_txt, ok_img, ok_txt = negatives
  pos = model.itm_logits(vis, vis_mask, txt, mask)
  with_neg_img = model.itm_logits(vis[neg_img], vis_mask[neg_img], txt, mask)
  with_neg_txt = model.itm_logits(vis, vis_mask, txt[neg_txt], mask[neg_txt])
  out["itm"] = objectives.itm_loss(pos, with_neg_img, with_neg_txt, valid, ok_img, ok_txt)
  logits = model.mlm_logits(batch["text_ids_masked"], mask, vis, vis_mask)
  at_masks = jnp.take_along_axis(logits, batch["masked_pos"][..., None], axis=1)
  out["mlm"], out["mlm_acc"] = objectives.mlm_loss(at_masks, batch["mlm_labels"], valid)
  if stream == "region":
    full = jnp.take(images, batch["image_index"], axis=0)
    box = model.predict_box(full, txt, mask)
    out["bbox"], out["giou"] = objectives.box_losses(box, batch["target_bbox"], batch["is_image"], valid)
  return out


@pytest.mark.parametrize("preset", ["tiny", "cclm_tiny"])
# The fast tier keeps the region stream (text, ITM groups, MLM and box rows batched); the image stream's
# cases run in `make test`.
@pytest.mark.parametrize("stream", tiered(["image", "region"], fast=["region"]))
def test_batched_passes_equal_the_separate_calls(monkeypatch, preset, stream):
  cfg = _no_dropout(preset)
  model = X2VLM(cfg, rngs=nnx.Rngs(0))
  spec = stream_spec(stream, batch_size=4, image_res=32, patch_size=16, max_tokens=8, max_masks=2, num_images=2)
  batch = {k: jnp.asarray(v) for k, v in synthetic_stream(stream, spec, vocab_size=cfg.text.vocab_size).items()}
  batch["valid"] = batch["valid"].at[3].set(0)  # a padding row
  sample = _fixed_negatives(4)
  negatives = sample(None, None, None, None, None, None)
  monkeypatch.setattr(itm, "sample_itm_negatives", sample)

  def losses(model, batch, itm_on):
    return objectives.stream_losses(model, stream, batch, jax.random.key(1), group_size=4, itm_on=itm_on)

  # Both sides in one program (op by op, each new shape compiles on its own: ~3x the time).
  @nnx.jit
  def run(model, batch, traced_on):
    return _reference(model, stream, batch, negatives), [losses(model, batch, on) for on in (True, traced_on, False)]

  # itm_on: a Python bool, traced (stop_calc_itm: ITM under lax.cond), and off.
  want, (on, traced, off) = jax.device_get(run(model, batch, jnp.asarray(True)))
  for name, got in (("True", on), ("traced True", traced)):
    assert set(got) == set(want)
    for k in want:
      np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6, err_msg=f"{k} (itm_on={name})")
  assert float(off["itm"]) == 0.0
  np.testing.assert_allclose(float(off["mlm"]), float(want["mlm"]), rtol=2e-5)


def _blocks_reference(parts):
  """concat_blocks by hand: G = gcd of the row counts; block g = part 0's g-th run of rows, then part 1's, …"""
  g = np.gcd.reduce([len(p) for p in parts])
  rows = []
  for block in range(g):
    for p in parts:
      run = len(p) // g
      rows.extend(p[block * run : (block + 1) * run])
  return np.stack(rows)


def test_concat_blocks_order_and_round_trip():
  rng = np.random.default_rng(0)
  parts = [rng.normal(size=(n, 3, 2)).astype(np.float32) for n in (8, 4, 12)]  # G = 4, distinct rows
  joint = np.asarray(concat_blocks([jnp.asarray(p) for p in parts]))
  np.testing.assert_array_equal(joint, _blocks_reference(parts))
  back = split_blocks(jnp.asarray(joint), [8, 4, 12])
  for got, want in zip(back, parts):
    np.testing.assert_array_equal(np.asarray(got), want)
  # Equal sizes: one row per block, i.e. the rows interleaved (concat_rows).
  equal = [rng.normal(size=(4, 2)).astype(np.float32) for _ in range(3)]
  np.testing.assert_array_equal(np.asarray(concat_rows([jnp.asarray(p) for p in equal])), _blocks_reference(equal))
  np.testing.assert_array_equal(np.asarray(concat_rows(equal))[1::3], equal[1])


def test_concat_blocks_keeps_each_devices_rows_on_it():
  """On 4 devices splitting every part's rows, the joint batch (split the same way) needs no
  communication; a plain concatenate does (the control: this check can fail)."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  rows = NamedSharding(mesh, P("data"))
  parts = [jax.device_put(jnp.arange(n * 6.0).reshape(n, 6) + 100 * n, rows) for n in (8, 4, 12)]
  collectives = ("all-to-all", "collective-permute", "all-gather", "all-reduce", "reduce-scatter")

  def hlo(f):
    return jax.jit(f, out_shardings=rows).lower(parts).compile().as_text()

  assert not [c for c in collectives if c in hlo(concat_blocks)]
  assert [c for c in collectives if c in hlo(lambda ps: jnp.concatenate(ps))]


def test_the_steps_joint_vision_pass_equals_each_streams_separate_calls(monkeypatch):
  """The pre-training step runs the vision tower once for the image, region and video streams
  (objectives.vision_passes); each stream's losses equal the official separate calls on its own pictures."""
  from tests.configs import synthetic_tiny
  from x2vlm_jax.tasks.pretrain import PretrainTask
  from x2vlm_jax.tasks.synthetic import SyntheticIterator

  config = synthetic_tiny.get_config("video=True")  # image 8 images, region 4 images, video 4 × 2 frames
  config.model = _no_dropout("tiny")
  config.model.num_frames = 2
  model = X2VLM(config.model, rngs=nnx.Rngs(0))
  batch = jax.tree.map(jnp.asarray, next(SyntheticIterator(config.data, config.model, seed=3)))
  assert sorted(batch) == ["image", "region", "video"]

  def fixed(rng, image_feat, text_feat, temp, valid, group_size, ids=None):
    return _fixed_negatives(valid.shape[0])(rng, image_feat, text_feat, temp, valid, group_size)

  monkeypatch.setattr(itm, "sample_itm_negatives", fixed)
  seen = []
  tower = type(model.vision).__call__

  def counting(self, pixels, rng=None):
    seen.append(pixels.shape[0])
    return tower(self, pixels, rng)

  monkeypatch.setattr(type(model.vision), "__call__", counting)

  @nnx.jit  # one program for both sides (op by op: ~3x the time)
  def run(model, batch):
    _, metrics = PretrainTask(config).loss(model, batch, jax.random.key(1), 0)
    want = {s: _reference(model, s, f, fixed(None, None, None, None, f["valid"], None)) for s, f in batch.items()}
    return metrics, want

  metrics, want = jax.device_get(run(model, batch))
  # One tower call in the step (the images, the region stream's images, the frames), then one per
  # stream in the reference.
  assert seen == [8 + 4 + 8, 8, 4, 8]
  for stream, terms in want.items():
    for k, v in terms.items():
      np.testing.assert_allclose(metrics[f"{stream}/{k}"], v, rtol=2e-5, atol=1e-6, err_msg=f"{stream}/{k}")
