"""Region stream (docs/reference.md §2.2) against a plain-Python re-implementation of the reference reader:
int boxes, crop around a valid anchor, >50%-of-the-ORIGINAL-box visibility, flip, float64 scaling,
patch masks, targets, pixels (PIL), skipped records, and ITM groups."""

import io
import math

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from x2vlm_jax.data.region_stream import patch_masks, transform_boxes  # noqa: E402
from x2vlm_jax.models.presets import CLIP_MEAN, CLIP_STD  # noqa: E402

# ------------------------------------------------------------------ reference (docs/reference.md §2.2 steps 1, 4, 5)


def _ref_valid_anchor(bb, width, height):
  x, y, w, h = (int(v) for v in bb)
  return x >= 0 and y >= 0 and x + w <= width and y + h <= height and w > 0 and h > 0


def _ref_mask(x, y, w, h, res, patch):
  g = res // patch
  c0 = min(math.floor(x / patch), g - 1)
  c1 = max(c0 + 1, min(math.ceil((x + w) / patch), g))
  r0 = min(math.floor(y / patch), g - 1)
  r1 = max(r0 + 1, min(math.ceil((y + h) / patch), g))
  m = np.zeros((g, g), np.int32)
  m[r0:r1, c0:c1] = 1
  return np.concatenate([[1], m.ravel()])


def _ref_element(bb, crop, flipped, res, patch, min_perc=0.5):
  """None if the element gives no text, else (R-pixel box, patch mask, float32 target)."""
  x, y, w, h = (int(v) for v in bb)
  x0, y0, x1, y1 = (int(v) for v in crop)
  cw, ch = x1 - x0, y1 - y0
  xx, yy, xm, ym = max(x0, x), max(y0, y), min(x0 + cw, x + w), min(y0 + ch, y + h)
  if not (xm > xx and ym > yy and (xm - xx) * (ym - yy) / (w * h) > min_perc):
    return None
  x, y, w, h = xx - x0, yy - y0, xm - xx, ym - yy
  if flipped:
    x = (cw - x) - w
  x, w, y, h = res / cw * x, res / cw * w, res / ch * y, res / ch * h
  target = np.asarray([(x + 1 / 2 * w) / res, (y + 1 / 2 * h) / res, w / res, h / res], np.float32)
  return (x, y, w, h), _ref_mask(x, y, w, h, res, patch), target


# ------------------------------------------------------------------ patch masks and box transform


def test_patch_mask_worked_example():
  pm = patch_masks(tf.constant([[30.0, 50.0, 40.0, 20.0], [220.0, 220.0, 4.0, 4.0]]), 224, 16).numpy()
  assert pm.shape == (2, 197)
  assert np.nonzero(pm[0])[0].tolist() == [0, 44, 45, 46, 47, 58, 59, 60, 61]
  assert np.nonzero(pm[1])[0].tolist() == [0, 196]


def test_patch_mask_matches_reference():
  rs = np.random.RandomState(0)
  xy = rs.uniform(0, 224, size=(2000, 2))
  wh = rs.uniform(0, 120, size=(2000, 2)) * (rs.rand(2000, 1) > 0.1)  # some degenerate boxes
  grid = rs.rand(2000) < 0.3  # boxes on exact patch boundaries
  boxes = np.where(grid[:, None], np.round(np.concatenate([xy, wh], 1) / 16) * 16, np.concatenate([xy, wh], 1))
  got = patch_masks(tf.constant(boxes), 224, 16).numpy()
  np.testing.assert_array_equal(got, np.stack([_ref_mask(*b, 224, 16) for b in boxes]))


# (image W, H), crop (x0, y0, x1, y1), element boxes as stored (floats allowed, never clipped)
HAND_PICKED = [
  (
    (200, 150),
    (13, 7, 200, 127),
    [
      (20, 30, 40, 50),  # inside
      (170, 20, 60, 20),  # half outside the image: 30/60 of the ORIGINAL area → dropped
      (175, 40, 40, 10),  # 25/40 inside → kept, cut at the image edge
      (5, 50, 16, 10),  # exactly 50% inside the crop → dropped (strict >)
      (6, 50, 16, 10),  # 9/16 → kept
      (60.9, 80.99, 10.5, 9.7),  # int → (60, 80, 10, 9)
      (0, 60, 26.9, 20),  # int w = 26: 13/26 = 50% → dropped (float: 13.9/26.9 → kept)
      (-0.9, 60, 30, 20),  # int(-0.9) = 0: 17 px inside, not 16.1
      (100, 120, 10, 30),  # 7/30 → dropped
      (50, 50, 0.6, 10),  # int w = 0 → no text
      (150, 100, 50, 27),  # ends on the crop's right and bottom edges
    ],
  ),
  # float32 box arithmetic put these one patch column / row off (float64 gives 112.0 → column 7)
  ((120, 60), (7, 19, 99, 45), [(53, 30, 30, 7)]),
  ((80, 130), (33, 53, 67, 123), [(33, 74, 10, 24)]),
]


@pytest.mark.parametrize("flipped", [False, True])
@pytest.mark.parametrize("case", range(len(HAND_PICKED)))
def test_transform_boxes_hand_picked(case, flipped):
  _, crop, boxes = HAND_PICKED[case]
  kept, px = transform_boxes(tf.constant(boxes, tf.float32), crop, tf.constant(flipped), 224.0, 0.5)
  kept, px = kept.numpy(), px.numpy()
  pm = patch_masks(tf.constant(px), 224, 16).numpy()
  for i, bb in enumerate(boxes):
    ref = _ref_element(bb, crop, flipped, 224, 16)
    assert bool(kept[i]) == (ref is not None), (i, bb)
    if ref is not None:
      np.testing.assert_array_equal(px[i], ref[0], err_msg=str(bb))  # bitwise: same float64 arithmetic
      np.testing.assert_array_equal(pm[i], ref[1], err_msg=str(bb))


def test_transform_boxes_random_sweep():
  """Random crops and boxes (ints and 2-decimal floats, some outside the image), both flips."""
  rs = np.random.RandomState(1)
  mismatches = []
  for t in range(120):
    w_img, h_img = rs.randint(40, 900, size=2)
    x0, y0 = rs.randint(0, w_img // 2), rs.randint(0, h_img // 2)
    crop = (x0, y0, rs.randint(x0 + 1, w_img + 1), rs.randint(y0 + 1, h_img + 1))
    flipped = bool(t % 2)
    xy = rs.uniform(-20, 1, size=(40, 2)) * [w_img, h_img] / 20 + rs.uniform(0, 1, size=(40, 2)) * [w_img, h_img]
    wh = rs.uniform(0, 0.8, size=(40, 2)) * [w_img, h_img]
    boxes = np.round(np.concatenate([xy, wh], 1), 2)
    boxes[t % 3 :: 3] = np.floor(boxes[t % 3 :: 3])
    boxes = boxes.astype(np.float32)
    kept, px = transform_boxes(tf.constant(boxes), crop, tf.constant(flipped), 224.0, 0.5)
    kept, px = kept.numpy(), px.numpy()
    pm = patch_masks(tf.constant(px), 224, 16).numpy()
    for i, bb in enumerate(boxes):
      ref = _ref_element(bb, crop, flipped, 224, 16)
      if bool(kept[i]) != (ref is not None) or (
        ref is not None and (not np.array_equal(px[i], ref[0]) or not np.array_equal(pm[i], ref[1]))
      ):
        mismatches.append((bb.tolist(), crop, flipped))
  assert not mismatches, mismatches[:5]


# ------------------------------------------------------------------ the stream end to end


def _png(seed, w, h):
  rs = np.random.RandomState(seed)
  img = rs.randint(0, 256, size=(h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
  img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))  # smooth, with detail
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")
  return buf.getvalue()


def _region_records():
  """Distinct captions from the shapes vocabulary so that a text row names its element."""

  def el(box, cap, attr=()):
    return box, [cap], list(attr)

  return [
    # every element is a valid anchor
    (
      _png(0, 160, 120),
      160,
      120,
      ["a picture"],
      [
        el((10, 12, 60, 40), "red circle", ["small"]),
        el((100.7, 30.2, 59.9, 50.5), "blue square"),
        el((-0.9, 70, 40, 50), "green triangle"),
        el((150.2, 10, 9.9, 10), "yellow diamond"),
      ],
    ),
    # anchor valid for element 0 only: skipped on about half of the reads
    (_png(1, 97, 133), 97, 133, [], [el((20, 20, 50, 60), "purple circle"), el((60, 100, 50, 40), "orange square")]),
    (_png(2, 64, 64), 64, 64, ["a picture"], []),  # caption only
    (
      _png(3, 80, 70),
      80,
      70,
      ["a picture"],
      [  # no valid anchor
        el((-1.5, 10, 20, 20), "cyan circle"),
        el((30, 30, 0.7, 20), "red square"),
      ],
    ),
    (
      _png(4, 128, 96),
      128,
      96,
      [],
      [
        el((0, 0, 128, 96), "large blue diamond"),
        el((64, 48, 64, 48), "green circle"),
        el((5, 5, 20, 20), "red triangle"),
        el((40, 10, 30, 70), "yellow square"),
        el((90, 60, 30, 30), "purple diamond"),
        el((100, 0, 28, 20), "orange circle"),
      ],
    ),
  ]


def test_region_stream_matches_reference(tmp_path):
  from x2vlm_jax.data import pipeline, records
  from x2vlm_jax.data.config import get_data_config

  recs = _region_records()
  w = records.DatasetWriter(str(tmp_path), "regions", "region")
  w.write_split(
    "train", [records.image_example(img, wd, ht, caption=cap, elems=elems) for img, wd, ht, cap, elems in recs] * 2
  )
  w.finish()
  c = get_data_config()
  c.data_dir, c.image_res, c.patch_size, c.randaug = str(tmp_path), 64, 16, False
  c.image.enabled = False
  c.region.datasets = [("regions", "train")]
  c.region.num_images, c.region.batch_size = 4, 20  # 5 texts per image fit: every candidate is drawn
  it = pipeline.TrainIterator(c, seed=11, keep_debug=True)
  tok = it._text.tok
  batches = [next(it)["region"] for _ in range(5)]
  # records without a valid anchor never reach a batch; every missing position is such a skip
  assert {int(r) % len(recs) for b in batches for r in b["_record"][:, 1]} == {0, 1, 4}
  st, pos = it.stats()["region"], it.get_state()["streams"]["region"]["position"]
  assert st["dropped_corrupt"] == 0 and st["skipped_invalid_anchor"] == pos - st["records"] > 0
  it.close()
  checked = 0
  for b in batches:
    imgs = (b["images"] * np.asarray(CLIP_STD) + np.asarray(CLIP_MEAN)) * 255.0
    for i in range(4):
      img_bytes, wd, ht, cap, elems = recs[int(b["_record"][i, 1]) % len(recs)]
      a, crop, flipped = int(b["_anchor"][i]), b["_crop"][i].tolist(), bool(b["_flipped"][i])
      # step 1: the anchor is a valid element and the crop contains it, within the image
      assert _ref_valid_anchor(elems[a][0], wd, ht)
      ax, ay, aw, ah = (int(v) for v in elems[a][0])
      x0, y0, x1, y1 = crop
      assert 0 <= x0 <= ax and 0 <= y0 <= ay and ax + aw <= x1 <= wd and ay + ah <= y1 <= ht
      # steps 2–3: pixels = PIL crop → flip → bicubic resize
      pil = Image.open(io.BytesIO(img_bytes)).convert("RGB").crop((x0, y0, x1, y1))
      if flipped:
        pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
      # width pass then height pass, as Pillow ≤ 12 in the official runs (see test_data_augment)
      ref = pil.resize((64, pil.height), Image.BICUBIC).resize((64, 64), Image.BICUBIC)
      d = np.abs(imgs[i] - np.asarray(ref, np.float64))
      assert d.mean() < 0.05 and d.max() < 2.01, (d.mean(), d.max())
      # steps 4–5: the texts of this image are the caption and ≤ 4 kept elements, each as the reference
      expected = {}
      for bb, caps, attrs in elems:
        ref = _ref_element(bb, crop, flipped, 64, 16)
        if ref is not None:
          expected[" ".join(attrs + caps)] = ref
      rows = np.nonzero((b["image_index"] == i) & (b["valid"] == 1))[0]
      texts = [" ".join(tok.tokens_of(b["text_ids"][t][b["text_mask"][t] == 1][1:-1])) for t in rows]
      assert len(set(texts)) == len(texts) == min(5, len(expected) + len(cap))
      for t, text in zip(rows, texts):
        if cap and text == cap[0]:
          assert b["is_image"][t] == 1 and (b["patch_mask"][t] == 1).all()
          np.testing.assert_array_equal(b["target_bbox"][t], [0.5, 0.5, 1.0, 1.0])
          continue
        assert b["is_image"][t] == 0 and text in expected, (text, sorted(expected))
        np.testing.assert_array_equal(b["patch_mask"][t], expected[text][1], err_msg=text)
        np.testing.assert_array_equal(b["target_bbox"][t], expected[text][2], err_msg=text)
        checked += 1
      if cap:
        assert cap[0] in texts
  assert checked >= 30, checked


def test_itm_groups_hold_their_own_images(small_data_cfg):
  """Every ITM group (contiguous text rows) draws its texts from its own block of images only, as one
  official GPU batch: `regions.batch_size` texts from that GPU's `max_images` images."""
  from x2vlm_jax.data import pipeline

  c = small_data_cfg(region=True)
  c.region.num_images, c.region.batch_size = 8, 16
  c.region.group_images, c.region.group_texts = 2, 4  # 4 groups
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


@pytest.mark.parametrize(
  "name",
  [
    "x2vlm_base_4m",
    "x2vlm_large_4m",
    "x2vlm_base_1b_stage1",
    "x2vlm_large_1b_stage1",
    "x2vlm_base_1b_stage2",
    "x2vlm_large_1b_stage2",
    "shapes_tiny",
  ],
)
def test_pretrain_configs_region_groups_are_the_official_gpu_batches(name):
  """docs/reference.md §6.4 per-GPU region batches; the trainer's ITM groups must be the data's groups."""
  import importlib

  c = importlib.import_module(f"x2vlm_jax.configs.pretrain.{name}").get_config()
  official = {
    "x2vlm_base_4m": (50, 128),
    "x2vlm_large_4m": (25, 64),
    "x2vlm_base_1b_stage1": (26, 64),
    "x2vlm_large_1b_stage1": (14, 32),
    "x2vlm_base_1b_stage2": (26, 64),
    "x2vlm_large_1b_stage2": (14, 32),
    "shapes_tiny": (16, 32),
  }[name]
  r = c.data.region
  assert (r.group_images, r.group_texts) == official
  assert c.itm_group_size.region == r.group_texts
  assert r.num_images // r.group_images == r.batch_size // r.group_texts
  assert r.num_images % r.group_images == 0 and r.batch_size % r.group_texts == 0
