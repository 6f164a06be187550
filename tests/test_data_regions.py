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
