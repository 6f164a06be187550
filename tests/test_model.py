"""Model-core invariants (docs/reference.md §12) and the inference API contract (README "Inference")."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from x2vlm_jax import inference, params_io
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.models.regions import box_to_patch_mask
from x2vlm_jax.models.vision import relative_position_index


@pytest.fixture(scope="module")
def api(tiny_cfg):
  return inference.from_params(tiny_cfg, seed=1)


@pytest.fixture(scope="module")
def batch(tiny_cfg):
  rs = np.random.RandomState(0)
  images = rs.randn(3, 32, 32, 3).astype(np.float32)
  ids = np.array([[2, 10, 11, 12, 3, 0], [2, 13, 3, 0, 0, 0], [2, 14, 15, 16, 17, 3]], np.int32)
  return images, ids, (ids > 0).astype(np.int32)


def test_parameter_counts_match_official():
  for name, want in (("base", 254_758_401), ("large", 592_949_057)):
    shapes = params_io.param_shapes(get_preset(name))
    assert sum(int(np.prod(s)) for s, _ in shapes.values()) == want, name


@pytest.mark.slow
def test_model_summary_last_line():
  out = (
    subprocess.run(
      [sys.executable, "tools/model_summary.py", "--model", "base"], check=True, capture_output=True, text=True
    )
    .stdout.strip()
    .splitlines()
  )
  assert out[-1] == "params: 254758401"
  assert any("| vision/blocks/0/attn/rel_pos_table " in line and "(732, 12)" in line for line in out)


def test_relative_position_index_layout():
  g = 14
  idx = relative_position_index(g)
  t = (2 * g - 1) ** 2
  assert idx.shape == (197, 197)
  assert idx[0, 0] == t + 2 and (idx[0, 1:] == t).all() and (idx[1:, 0] == t + 1).all()
  # Query patch (r,c)=(0,0) (token 1) vs key patch (1,2) (token 1+16): (0-1+13)*27 + (0-2+13).
  assert idx[1, 1 + 1 * g + 2] == 12 * 27 + 11
  assert idx[1:, 1:].max() == t - 1 and idx[1:, 1:].min() == 0
  assert idx[1 + 5, 1 + 5] == (g - 1) * (2 * g - 1) + (g - 1)  # zero offset sits in the grid centre


def test_region_mask_examples_from_spec():
  m = box_to_patch_mask((30, 50, 40, 20), 224, 16)
  assert m.shape == (197,)
  assert np.flatnonzero(m).tolist() == [0, 44, 45, 46, 47, 58, 59, 60, 61]
  assert np.flatnonzero(box_to_patch_mask((220, 220, 4, 4), 224, 16)).tolist() == [0, 196]


def test_text_then_fusion_equals_multi_modal(api, batch):
  images, ids, mask = batch
  image_embeds, _ = api.encode_image(images)
  text_embeds, _ = api.encode_text(ids, mask)
  fused = api.fuse(image_embeds, None, text_embeds, mask)
  model = nnx.merge(api._graphdef, api._state)
  direct = model.text.multi_modal(jnp.asarray(ids), jnp.asarray(mask), image_embeds, None)
  np.testing.assert_allclose(np.asarray(fused), np.asarray(direct), atol=1e-6, rtol=0)


def test_vision_slot0_is_mean_of_normalised_patches(api, batch):
  image_embeds, image_feat = api.encode_image(batch[0])
  e = np.asarray(image_embeds)
  np.testing.assert_allclose(e[:, 0], e[:, 1:].mean(1), atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(image_feat), axis=-1), 1.0, atol=1e-5)


def test_region_with_all_ones_mask_equals_image(api, batch):
  image_embeds, image_feat = api.encode_image(batch[0])
  n1 = image_embeds.shape[1]
  region, region_feat = api.region_embeds(image_embeds, np.ones((4, n1), np.int32), np.array([2, 0, 1, 2]))
  np.testing.assert_allclose(np.asarray(region), np.asarray(image_embeds)[[2, 0, 1, 2]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(region_feat), np.asarray(image_feat)[[2, 0, 1, 2]], atol=1e-6)


def test_region_pooling_uses_only_box_patches(api, batch):
  image_embeds, _ = api.encode_image(batch[0])
  mask = np.zeros((1, image_embeds.shape[1]), np.int32)
  mask[0, [0, 2, 3]] = 1
  region, _ = api.region_embeds(image_embeds, mask, np.array([1]))
  e = np.asarray(image_embeds)
  np.testing.assert_allclose(np.asarray(region)[0, 0], e[1, [2, 3]].mean(0), atol=1e-6)
  np.testing.assert_allclose(np.asarray(region)[0, 1:], e[1, 1:], atol=0)


def test_video_of_identical_frames_with_zero_frame_embedding_equals_image(batch):
  cfg = get_preset("tiny", num_frames=3)
  model = X2VLM(cfg, rngs=nnx.Rngs(0))
  model.frame_pos[...] = jnp.zeros_like(model.frame_pos[...])
  api = inference.X2VLMInference(model, cfg)
  images = batch[0]
  video, video_feat = api.encode_video(np.stack([images] * 3, axis=1))
  image, image_feat = api.encode_image(images)
  np.testing.assert_allclose(np.asarray(video), np.asarray(image), atol=1e-5)
  np.testing.assert_allclose(np.asarray(video_feat), np.asarray(image_feat), atol=1e-5)


def test_api_shapes_and_no_recompile(api, batch, tiny_cfg):
  images, ids, mask = batch
  image_embeds, image_feat = api.encode_image(images)
  text_embeds, text_feat = api.encode_text(ids, mask)
  assert image_embeds.shape == (3, 5, 64) and image_feat.shape == (3, 32)
  assert text_embeds.shape == (3, 6, 64) and text_feat.shape == (3, 32)
  assert api.itm_logits(image_embeds, None, text_embeds, mask).shape == (3, 2)
  assert api.mlm_logits(ids, mask, image_embeds, None).shape == (3, 6, 200)
  box = np.asarray(api.predict_box(image_embeds, text_embeds, mask))
  assert box.shape == (3, 4) and (box > 0).all() and (box < 1).all()
  sim = np.asarray(api.similarity(image_feat, text_feat))
  # atol: float32 sums in another order leave ~1 ulp of the largest logits (~5) on an entry near zero
  # (seen once: 2.4e-7 on 0.0186); a wrong temperature or a transposed product is off by far more.
  np.testing.assert_allclose(
    sim, np.asarray(image_feat) @ np.asarray(text_feat).T / tiny_cfg.temp_init, rtol=1e-5, atol=1e-6
  )
  # An explicit all-ones image mask is the same as None.
  np.testing.assert_allclose(
    np.asarray(api.itm_logits(image_embeds, np.ones((3, 5), np.int32), text_embeds, mask)),
    np.asarray(api.itm_logits(image_embeds, None, text_embeds, mask)),
    atol=1e-6,
  )
  # Repeated calls with the same shapes reuse the compiled function; numpy or jax inputs alike.
  api.encode_image(jnp.asarray(images))
  api.encode_text(jnp.asarray(ids), jnp.asarray(mask))
  assert api._jit["encode_image"]._cache_size() == 1
  assert api._jit["encode_text"]._cache_size() == 1


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda m, im, ids, mask: m.encode_image(im[:, :16]), "images: expected resolution 32x32"),
    (lambda m, im, ids, mask: m.encode_image(im[..., :2]), "images: expected float"),
    (lambda m, im, ids, mask: m.encode_image((im > 0).astype(np.uint8)), "images: expected float32"),
    (lambda m, im, ids, mask: m.encode_text(ids + 500, mask), r"ids: expected ids in \[0, 200\)"),
    (lambda m, im, ids, mask: m.encode_text(-ids, mask), r"ids: expected ids in \[0, 200\)"),
    (lambda m, im, ids, mask: m.encode_text(ids, mask[:, :4]), r"mask: expected shape \(3, 6\)"),
    (lambda m, im, ids, mask: m.encode_text(ids.astype(np.float32), mask), "ids: expected integer"),
    (lambda m, im, ids, mask: m.encode_text(ids, mask * 2), "mask: expected a 0/1"),
    (
      lambda m, im, ids, mask: m.encode_text(np.zeros((1, 65), np.int32), np.ones((1, 65), np.int32)),
      "ids: expected length 1..64",
    ),
    (
      lambda m, im, ids, mask: m.itm_logits(
        np.zeros((3, 7, 64), np.float32), None, np.zeros((3, 6, 64), np.float32), mask
      ),
      r"image_embeds: expected float \[3x5x64\]",
    ),
    (
      lambda m, im, ids, mask: m.itm_logits(
        np.zeros((3, 5, 64), np.float32), None, np.zeros((2, 6, 64), np.float32), mask[:2]
      ),
      "text_embeds: expected batch 3",
    ),
    (
      lambda m, im, ids, mask: m.region_embeds(
        np.zeros((2, 5, 64), np.float32), np.ones((1, 5), np.int32), np.array([2])
      ),
      r"image_index: expected values in \[0, 2\)",
    ),
    (
      lambda m, im, ids, mask: m.region_embeds(
        np.zeros((2, 5, 64), np.float32), np.ones((1, 4), np.int32), np.array([0])
      ),
      r"patch_masks: expected \[R, 5\]",
    ),
  ],
)
def test_bad_input_raises_clear_value_error(api, batch, call, match):
  with pytest.raises(ValueError, match=match):
    call(api, *batch)


def test_bad_presets_raise():
  with pytest.raises(ValueError, match="model preset: expected one of"):
    get_preset("huge")
  with pytest.raises(ValueError, match="image_res: expected a multiple of patch_size"):
    get_preset("tiny", image_res=40)
  with pytest.raises(ValueError, match="unknown key 'resolution'"):
    get_preset("tiny", resolution=64)


def test_checkpoint_roundtrip_and_wrong_preset(tmp_path, api, batch, tiny_cfg):
  model = nnx.merge(api._graphdef, api._state)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  params_io.save(str(tmp_path / "ck"), tiny_cfg, params)
  loaded = inference.load(str(tmp_path / "ck"))
  assert loaded.num_params == api.num_params == 360_047
  a = np.asarray(api.encode_image(batch[0])[1])
  b = np.asarray(loaded.encode_image(batch[0])[1])
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="written for image_res=32"):
    params_io.load(str(tmp_path / "ck"), get_preset("tiny", image_res=64))
  with pytest.raises(ValueError, match="has no model_config.json"):
    inference.load(str(tmp_path))


def test_dropout_and_drop_path_are_active_only_with_rng(tiny_cfg, batch):
  model = X2VLM(tiny_cfg, rngs=nnx.Rngs(0))
  images, ids, mask = batch
  a = model.encode_image(jnp.asarray(images))[0]
  b = model.encode_image(jnp.asarray(images))[0]
  c = model.encode_image(jnp.asarray(images), rng=jax.random.key(3))[0]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4
  t1 = model.encode_text(jnp.asarray(ids), jnp.asarray(mask), rng=jax.random.key(1))[0]
  t2 = model.encode_text(jnp.asarray(ids), jnp.asarray(mask), rng=jax.random.key(2))[0]
  assert np.abs(np.asarray(t1) - np.asarray(t2)).max() > 1e-4


def test_bfloat16_compute_keeps_float32_params(batch):
  cfg = get_preset("tiny", dtype="bfloat16")
  model = X2VLM(cfg, rngs=nnx.Rngs(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  embeds, feat = model.encode_image(jnp.asarray(batch[0]))
  assert embeds.dtype == jnp.bfloat16 and feat.dtype == jnp.float32
  ref = X2VLM(get_preset("tiny"), rngs=nnx.Rngs(0)).encode_image(jnp.asarray(batch[0]))[1]
  np.testing.assert_allclose(np.asarray(feat), np.asarray(ref), atol=5e-2)


def test_fusion_with_shared_image_rows_equals_repeated_images(tiny_cfg):
  """One image fused with R texts (retrieval's i2t rerank) projects the image's keys/values once; the
  result must equal fusing R explicit copies of the image."""
  model = X2VLM(tiny_cfg, rngs=nnx.Rngs(2))
  rs = np.random.RandomState(1)
  images = jnp.asarray(rs.randn(3, 5, tiny_cfg.vision.width).astype(np.float32))
  image_mask = jnp.asarray([[1, 1, 1, 0, 1], [1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], jnp.int32)
  texts = jnp.asarray(rs.randn(12, 7, tiny_cfg.text.hidden).astype(np.float32))
  text_mask = jnp.asarray((rs.rand(12, 7) > 0.3).astype(np.int32)).at[:, 0].set(1)
  shared = model.itm_logits(images, image_mask, texts, text_mask)
  copies = model.itm_logits(jnp.repeat(images, 4, 0), jnp.repeat(image_mask, 4, 0), texts, text_mask)
  np.testing.assert_allclose(shared, copies, rtol=1e-6, atol=1e-6)
  assert not np.allclose(shared[:4], shared[4:8])  # the image rows differ, so a mix-up would show
  with pytest.raises(ValueError, match="cannot share"):
    model.itm_logits(images[:2], image_mask[:2], texts[:5], text_mask[:5])
