"""Whole-model parity: random tiny official-format weights → .npz → tools/convert_checkpoint.py →
`inference.load` agrees with the PyTorch reference (tests/reference, written from docs/reference.md) on every
output of docs/reference.md §12's converter round-trip list. float32, CPU, 1e-5 absolute."""

import numpy as np
import pytest
import torch
from convert_helpers import random_official_state_dict
from reference.x2vlm_torch import X2VLMReference

from tests.helpers.tools import load_tool
from x2vlm_jax import inference
from x2vlm_jax.models import get_preset

ATOL = 1e-5


def load_cli():
  """tools/convert_checkpoint.py (= the x2vlm-convert console script, x2vlm_jax/cli/convert_checkpoint.py)."""
  return load_tool("convert_checkpoint")


def close(ours, ref, atol=ATOL):
  ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  # 48 px → a 3×3 grid (a 2×2 grid would leave most of the rel-pos table unused); 3 frame embeddings.
  cfg = get_preset("tiny", image_res=48, num_frames=3)
  sd = random_official_state_dict(cfg, seed=1)
  tmp = tmp_path_factory.mktemp("parity")
  np.savez(tmp / "x2vlm_tiny.npz", **sd)
  out = str(tmp / "converted")
  # No --image_res / --num_frames: both must be taken from the checkpoint.
  assert load_cli().main(["--input", str(tmp / "x2vlm_tiny.npz"), "--model", "tiny", "--output", out]) == 0
  model = inference.load(out)
  assert (model.config.image_res, model.config.num_frames) == (48, 3)
  ref = X2VLMReference(
    sd,
    vision_heads=cfg.vision.num_heads,
    text_heads=cfg.text.num_heads,
    fusion_start=cfg.text.fusion_start,
    num_layers=cfg.text.num_layers,
  )

  rng = np.random.default_rng(0)
  images = rng.standard_normal((2, 48, 48, 3)).astype(np.float32)  # NHWC for us
  ids = rng.integers(1, cfg.text.vocab_size, (2, 7)).astype(np.int32)
  mask = np.ones((2, 7), np.int32)
  mask[1, 5:] = 0  # padding must be masked (−10000) in self-attention
  image_mask = np.ones((2, 10), np.int32)
  image_mask[0, 4:] = 0  # a region-like cross-attention mask (−1e9)
  return dict(
    cfg=cfg,
    model=model,
    ref=ref,
    images=images,
    ids=ids,
    mask=mask,
    image_mask=image_mask,
    t_images=torch.from_numpy(images).permute(0, 3, 1, 2),
    t_ids=torch.from_numpy(ids).long(),
    t_mask=torch.from_numpy(mask),
    t_image_mask=torch.from_numpy(image_mask),
  )


def test_image_embeds_and_feats(setup):
  s = setup
  embeds, feat = s["model"].encode_image(s["images"])
  r = s["ref"].vision_tokens(s["t_images"])
  close(embeds, r)
  close(feat, s["ref"].image_feat(r))


def test_text_embeds_and_feats(setup):
  s = setup
  embeds, feat = s["model"].encode_text(s["ids"], s["mask"])
  r = s["ref"].text(s["t_ids"], s["t_mask"])
  close(embeds, r)
  close(feat, s["ref"].text_feat(r))


def test_fused_itm_box(setup):
  s, ref = setup, setup["ref"]
  v, _ = s["model"].encode_image(s["images"])
  t, _ = s["model"].encode_text(s["ids"], s["mask"])
  rv = ref.vision_tokens(s["t_images"])
  rt = ref.text(s["t_ids"], s["t_mask"])
  close(s["model"].fuse(v, s["image_mask"], t, s["mask"]), ref.fusion(rt, s["t_mask"], rv, s["t_image_mask"]))
  close(s["model"].itm_logits(v, s["image_mask"], t, s["mask"]), ref.itm_logits(rv, s["t_image_mask"], rt, s["t_mask"]))
  close(s["model"].predict_box(v, t, s["mask"]), ref.predict_box(rv, rt, s["t_mask"]))


def test_mlm_logits(setup):
  s, ref = setup, setup["ref"]
  v, _ = s["model"].encode_image(s["images"])
  ours = s["model"].mlm_logits(s["ids"], s["mask"], v, s["image_mask"])
  theirs = ref.mlm_logits(s["t_ids"], s["t_mask"], ref.vision_tokens(s["t_images"]), s["t_image_mask"])
  close(ours, theirs)


def test_region_embeds(setup):
  s, ref = setup, setup["ref"]
  v, _ = s["model"].encode_image(s["images"])
  patch_masks = np.zeros((3, 10), np.int32)
  patch_masks[:, 0] = 1
  patch_masks[0, [1, 2, 4]] = 1
  patch_masks[1, 9] = 1
  patch_masks[2, 1:] = 1  # whole image: region cls == image cls (docs/reference.md §12)
  index = np.array([0, 1, 1], np.int32)
  embeds, feat = s["model"].region_embeds(v, patch_masks, index)
  r = ref.region_tokens(ref.vision_tokens(s["t_images"]), torch.from_numpy(patch_masks), torch.from_numpy(index).long())
  close(embeds, r)
  close(feat, ref.image_feat(r))
  close(embeds[2, 0], np.asarray(v)[1, 0])


def test_similarity_and_temperature(setup):
  s, ref = setup, setup["ref"]
  _, fi = s["model"].encode_image(s["images"])
  _, ft = s["model"].encode_text(s["ids"], s["mask"])
  ri = ref.image_feat(ref.vision_tokens(s["t_images"]))
  rt = ref.text_feat(ref.text(s["t_ids"], s["t_mask"]))
  close(s["model"].similarity(fi, ft), ref.similarity(ri, rt))


def test_video_embeds(setup):
  s, ref = setup, setup["ref"]
  rng = np.random.default_rng(5)
  frames = rng.standard_normal((1, 2, 48, 48, 3)).astype(np.float32)  # 2 of the 3 frame embeddings
  embeds, feat = s["model"].encode_video(frames)
  r = ref.encode_video(torch.from_numpy(frames).permute(0, 1, 4, 2, 3))
  close(embeds, r)
  close(feat, ref.image_feat(r))
