"""Region stream: patch masks (spec §2.2 step 5, §12) and boxes that survive crop/flip/resize."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from x2vlm_jax.data.region_stream import patch_masks  # noqa: E402
from x2vlm_jax.models.presets import CLIP_MEAN, CLIP_STD  # noqa: E402
from x2vlm_jax.models.regions import box_to_patch_mask  # noqa: E402


def test_patch_mask_worked_example():
  pm = patch_masks(tf.constant([[30.0, 50.0, 40.0, 20.0], [220.0, 220.0, 4.0, 4.0]]), 224, 16).numpy()
  assert pm.shape == (2, 197)
  assert np.nonzero(pm[0])[0].tolist() == [0, 44, 45, 46, 47, 58, 59, 60, 61]
  assert np.nonzero(pm[1])[0].tolist() == [0, 196]


def test_patch_mask_matches_numpy_reference():
  rs = np.random.RandomState(0)
  xy = rs.uniform(0, 224, size=(2000, 2))
  wh = rs.uniform(0, 120, size=(2000, 2)) * (rs.rand(2000, 1) > 0.1)  # some degenerate boxes
  grid = rs.rand(2000) < 0.3  # boxes on exact patch boundaries
  boxes = np.where(grid[:, None], np.round(np.concatenate([xy, wh], 1) / 16) * 16, np.concatenate([xy, wh], 1))
  boxes = boxes.astype(np.float32)
  got = patch_masks(tf.constant(boxes), 224, 16).numpy()
  ref = np.stack([box_to_patch_mask(b, 224, 16) for b in boxes])
  np.testing.assert_array_equal(got, ref)


def _colour_box(img, rgb, tol=45.0):
  """Bounding box of the object's pixels; a 3×3 erosion drops isolated background-noise matches."""
  m = np.abs(img - np.asarray(rgb, np.float32)).max(-1) < tol
  p = np.pad(m, 1)
  m = np.all([p[1 + dy: 1 + dy + m.shape[0], 1 + dx: 1 + dx + m.shape[1]]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
  ys, xs = np.nonzero(m)
  if len(xs) == 0:
    return None
  return xs.min() - 1, ys.min() - 1, xs.max() + 2, ys.max() + 2  # undo the erosion


def test_boxes_survive_augmentation(small_data_cfg):
  from x2vlm_jax.data import pipeline, shapes
  c = small_data_cfg(region=True)
  c.image_res, c.randaug = 64, False  # RandAugment is photometric here; off so colours are exact
  c.region.num_images, c.region.batch_size = 8, 40
  it = pipeline.TrainIterator(c, seed=3, keep_debug=True)
  tok = it._text.tok
  checked = 0
  for _ in range(6):
    b = next(it)["region"]
    imgs = (b["images"] * np.asarray(CLIP_STD) + np.asarray(CLIP_MEAN)) * 255.0
    for t in range(len(b["valid"])):
      pm_ref = box_to_patch_mask(b["_box_px"][t], 64, 16) if not b["is_image"][t] else np.ones(17, np.int32)
      np.testing.assert_array_equal(b["patch_mask"][t], pm_ref)
      if not b["valid"][t] or b["is_image"][t]:
        continue
      words = tok.tokens_of(b["text_ids"][t][b["text_mask"][t] == 1])
      colour = next(w for w in words if w in shapes.COLORS)
      cx, cy, w, h = b["target_bbox"][t] * 64
      x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
      assert -1e-3 <= x0 and -1e-3 <= y0 and x1 <= 64 + 1e-3 and y1 <= 64 + 1e-3 and w > 0 and h > 0
      got = _colour_box(imgs[b["image_index"][t]], shapes.COLORS[colour])
      assert got is not None, f"no {colour} pixels for text {words}"
      px0, py0, px1, py1 = got
      tol = 1.5  # bicubic resampling spreads an edge by about a pixel
      assert px0 >= x0 - tol and py0 >= y0 - tol and px1 <= x1 + tol and py1 <= y1 + tol, (got, (x0, y0, x1, y1))
      assert (px1 - px0) * (py1 - py0) >= 0.3 * w * h, (got, (x0, y0, x1, y1))
      checked += 1
  assert checked >= 50


def test_itm_groups_hold_their_own_images(small_data_cfg):
  """Every ITM group (contiguous text rows) draws its texts from its own block of images only, as one
  official GPU batch: `regions.batch_size` texts from that GPU's `max_images` images."""
  from x2vlm_jax.data import pipeline
  c = small_data_cfg(region=True)
  c.region.num_images, c.region.batch_size = 8, 16
  c.region.group_images, c.region.group_texts = 2, 4   # 4 groups
  it = pipeline.TrainIterator(c, seed=5, keep_debug=True)
  for _ in range(3):
    b = next(it)["region"]
    rows = np.arange(16)
    np.testing.assert_array_equal(b["image_index"] // 2, rows // 4)
    # shapes images have a caption and ≥ 1 object, so 2 images always offer ≥ 4 texts
    assert b["valid"].all()
    # sampled without replacement inside a group: no (image, box) twice
    assert len({(int(i), tuple(np.round(x, 4))) for i, x in zip(b["image_index"], b["_box_px"])}) == 16
  it.close()
  for gi, gt, what in ((3, 4, "group_images=3"), (2, 8, "same number of groups"), (2, 0, "must both be set")):
    c.region.group_images, c.region.group_texts = gi, gt
    with pytest.raises(ValueError, match=what):
      pipeline.TrainIterator(c, seed=5)


@pytest.mark.parametrize("name", ["x2vlm_base_4m", "x2vlm_large_4m", "x2vlm_base_1b_stage1",
                                  "x2vlm_large_1b_stage1", "x2vlm_base_1b_stage2", "x2vlm_large_1b_stage2",
                                  "shapes_tiny"])
def test_pretrain_configs_region_groups_are_the_official_gpu_batches(name):
  """Spec §6.4 per-GPU region batches; the trainer's ITM groups must be the data's groups."""
  import importlib
  c = importlib.import_module(f"configs.pretrain.{name}").get_config()
  official = {"x2vlm_base_4m": (50, 128), "x2vlm_large_4m": (25, 64), "x2vlm_base_1b_stage1": (26, 64),
              "x2vlm_large_1b_stage1": (14, 32), "x2vlm_base_1b_stage2": (26, 64),
              "x2vlm_large_1b_stage2": (14, 32), "shapes_tiny": (16, 32)}[name]
  r = c.data.region
  assert (r.group_images, r.group_texts) == official
  assert c.itm_group_size.region == r.group_texts
  assert r.num_images // r.group_images == r.batch_size // r.group_texts
  assert r.num_images % r.group_images == 0 and r.batch_size % r.group_texts == 0
