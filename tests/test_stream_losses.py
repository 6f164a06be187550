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

  want = jax.device_get(_reference(model, stream, batch, negatives))
  for itm_on in (True, jnp.asarray(True)):  # a Python bool, and traced (stop_calc_itm): ITM under lax.cond
    got = jax.device_get(objectives.stream_losses(model, stream, batch, jax.random.key(1), group_size=4, itm_on=itm_on))
    assert set(got) == set(want)
    for k in want:
      np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6, err_msg=f"{k} (itm_on={itm_on!r})")
  off = objectives.stream_losses(model, stream, batch, jax.random.key(1), group_size=4, itm_on=False)
  assert float(off["itm"]) == 0.0
  np.testing.assert_allclose(float(off["mlm"]), float(want["mlm"]), rtol=2e-5)
