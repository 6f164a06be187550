"""RefCOCO+ grounding (docs/reference.md §5.4) against independent references:

* the IoU is the official `computeIoU` (a plain-Python port of dataset/utils.py) on hand cases —
  boxes at the image border, one-pixel overlaps, degenerate boxes — and on random boxes;
* the evaluator scales the predicted box to the ORIGINAL image size (non-square hand case with a
  head whose output is known exactly);
* sharded over 4 devices it equals 1 device;
* the training crop always keeps the GT box, the target equals a numpy port of the official
  arithmetic, the flip rule follows careful_hflip, and the box lands on the object in the pixels;
* the builder counts bad records by reason; the REFER converter puts box, split and size into records.
"""

import json
import pickle

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.helpers import xla
from x2vlm_jax import sharding as shd
from x2vlm_jax import tasks
from x2vlm_jax.data.config import SHAPES_VOCAB
from x2vlm_jax.evaluation.grounding import official_iou, to_image_xywh
from x2vlm_jax.models import X2VLM, get_preset


def official_compute_iou(box1, box2):
  """dataset/utils.py: computeIoU, line by line (the reference)."""
  inter_x1 = max(box1[0], box2[0])
  inter_y1 = max(box1[1], box2[1])
  inter_x2 = min(box1[0] + box1[2] - 1, box2[0] + box2[2] - 1)
  inter_y2 = min(box1[1] + box1[3] - 1, box2[1] + box2[3] - 1)
  if inter_x1 < inter_x2 and inter_y1 < inter_y2:
    inter = (inter_x2 - inter_x1 + 1) * (inter_y2 - inter_y1 + 1)
  else:
    inter = 0
  union = box1[2] * box1[3] + box2[2] * box2[3] - inter
  return float(inter) / union


# ------------------------------------------------------------------------------------------ IoU


@pytest.mark.parametrize(
  "a, b, want",
  [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),  # identical, at the top-left border
    ([0, 0, 10, 10], [5, 0, 10, 10], 50 / 150),  # columns 5..9 shared: 5·10 of 100+100−50
    ([90, 40, 10, 20], [95, 50, 5, 10], 50 / 200),  # at the bottom-right border of a 100×60 image
    ([0, 0, 10, 10], [9, 0, 10, 10], 0.0),  # ONE shared column: strict test → no overlap
    ([0, 0, 10, 10], [8, 8, 10, 10], 4 / 196),  # a 2×2 corner
    ([3, 3, 0, 5], [0, 0, 10, 10], 0.0),  # zero-width box
    ([2.5, 2.5, 4.0, 4.0], [2.5, 2.5, 4.0, 4.0], 1.0),  # float boxes (predictions are floats)
    ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # empty union: ZeroDivisionError officially, 0 here
  ],
)
def test_iou_is_the_official_inclusive_pixel_formula(a, b, want):
  assert official_iou(np.asarray(a), np.asarray(b)) == pytest.approx(want)
  if a[2] * a[3] + b[2] * b[3] > 0:
    assert official_compute_iou(a, b) == pytest.approx(want)


def test_iou_matches_the_official_function_on_random_boxes():
  rs = np.random.RandomState(0)
  boxes1 = np.concatenate([rs.randint(0, 50, (500, 2)), rs.randint(0, 30, (500, 2))], 1).astype(float)
  boxes2 = np.abs(boxes1 + rs.uniform(-6, 6, (500, 4)))  # near boxes: IoU on both sides of 0.5
  want = [official_compute_iou(list(p), list(q)) if p[2] * p[3] + q[2] * q[3] else 0.0 for p, q in zip(boxes1, boxes2)]
  np.testing.assert_allclose(official_iou(boxes1, boxes2), want, rtol=1e-12)
  assert 0 < np.mean(np.asarray(want) >= 0.5) < 1


def test_box_scaling_to_the_original_image_is_the_official_order():
  # coord[0::2] *= W, coord[1::2] *= H, then x −= w/2, y −= h/2 on an 80×40 image.
  got = to_image_xywh(np.asarray([[0.5, 0.25, 0.5, 0.5]]), np.asarray([[80, 40]]))
  np.testing.assert_allclose(got, [[20.0, 0.0, 40.0, 20.0]])


# ------------------------------------------------------------------------------------------ evaluator


def _fixed_box_params(cfg, box):
  """Params whose bbox_head outputs logit(box) whatever the input: the prediction is known exactly."""
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(0)), nnx.Param))
  params["bbox_head"]["fc1"]["kernel"] = np.zeros_like(params["bbox_head"]["fc1"]["kernel"])
  b = np.asarray(box, np.float64)
  params["bbox_head"]["fc1"]["bias"] = np.log(b / (1 - b)).astype(np.float32)
  return params


def _evaluate(cfg, params, d, devices, **fields):
  c = ml_collections.ConfigDict()
  c.model = cfg
  c.data = ml_collections.ConfigDict({"vocab_file": SHAPES_VOCAB})
  e = ml_collections.ConfigDict(
    dict(type="grounding", annotations=str(d / "val.json"), image_root=str(d), batch_size=2, **fields)
  )
  mesh = shd.create_mesh((len(devices), 1, 1), devices=devices)
  with jax.set_mesh(mesh):
    return tasks.build_evaluator("g", c, e, mesh)(nnx.graphdef(X2VLM(cfg, rngs=nnx.Rngs(0))), params)


def test_evaluator_scales_the_box_to_the_original_non_square_image(tmp_path):
  cfg = get_preset("tiny")
  Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(tmp_path / "wide.png")  # W=80, H=40
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "square.png")
  # Prediction (cx, cy, w, h) = (0.5, 0.25, 0.5, 0.5) → on 80×40: x 20, y 0, w 40, h 20.
  records = [
    {"image": "wide.png", "text": "the red circle", "ref_id": 1, "bbox": [20, 0, 40, 20], "split": "val"},
    # 50% of the prediction: columns 20..39 of 20..59, IoU = 400/800 ≥ 0.5 → correct.
    {"image": "wide.png", "text": "the blue square", "ref_id": 2, "bbox": [20, 0, 20, 20], "split": "val"},
    # Had the box been scaled by the model's square 32 px (x 8, y 0, w 16, h 16), this one would match.
    {"image": "wide.png", "text": "a green thing", "ref_id": 3, "bbox": [8, 0, 16, 16], "split": "testA"},
    # The record's own width/height win over the file's (REFER's image size).
    {
      "image": "square.png",
      "text": "the large one",
      "ref_id": 4,
      "bbox": [20, 0, 40, 20],
      "split": "testB",
      "width": 80,
      "height": 40,
    },
  ]
  (tmp_path / "val.json").write_text(json.dumps(records))
  params = _fixed_box_params(cfg, [0.5, 0.25, 0.5, 0.5])
  metrics, pred = _evaluate(cfg, params, tmp_path, jax.devices()[:1])
  np.testing.assert_allclose(pred[0]["pred_bbox"], [20.0, 0.0, 40.0, 20.0], atol=0.01)
  # Record 3 against the correctly scaled box: columns 20..23 × rows 0..15 = 64 of 256 + 800 − 64.
  assert [p["iou"] for p in pred] == pytest.approx([1.0, 0.5, 64 / 992, 1.0], abs=1e-3)
  assert metrics["val_d"] == 1.0 and metrics["testA_d"] == 0.0 and metrics["testB_d"] == 1.0
  assert metrics["num_val"] == 2 and metrics["skipped_records"] == 0
  assert [p["ref_id"] for p in pred] == [1, 2, 3, 4]

  # The same through the eval-only CLI on the checkpoint directory (tools/evaluate.py --task grounding).
  import subprocess
  import sys

  from x2vlm_jax import params_io

  params_io.save(str(tmp_path / "ckpt"), cfg, params, vocab_file=SHAPES_VOCAB)
  out = subprocess.run(
    [
      sys.executable,
      "tools/evaluate.py",
      "--task",
      "grounding",
      "--checkpoint",
      str(tmp_path / "ckpt"),
      "--annotations",
      str(tmp_path / "val.json"),
      "--image_root",
      str(tmp_path),
      "--output",
      str(tmp_path / "out"),
    ],
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(__import__("os").environ, XLA_FLAGS=xla.cpu_flags(1)),
  )
  assert out.returncode == 0, out.stderr[-2000:]
  cli = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert {k: cli[k] for k in ("val_d", "testA_d", "testB_d")} == {"val_d": 1.0, "testA_d": 0.0, "testB_d": 1.0}
  assert len(json.loads((tmp_path / "out" / "predictions.json").read_text())) == 4


def test_evaluator_rejects_records_without_a_box(tmp_path):
  cfg = get_preset("tiny")
  (tmp_path / "val.json").write_text(json.dumps([{"image": "a.png", "text": "x", "ref_id": 7}]))
  with pytest.raises(ValueError, match=r"record 0: 'bbox' must be \[x, y, w, h\].*refer_to_grounding"):
    _evaluate(cfg, _fixed_box_params(cfg, [0.5] * 4), tmp_path, jax.devices()[:1])


@pytest.mark.slow
def test_sharded_over_four_devices_equals_one_device(tmp_path):
  cfg = get_preset("tiny")
  rs = np.random.RandomState(1)
  records = []
  for i in range(7):  # 7 records: padding in the last batch of 4 devices × 2
    h, w = 30 + 3 * i, 50 - 2 * i
    Image.fromarray(rs.randint(0, 255, (h, w, 3), np.uint8)).save(tmp_path / f"im{i}.jpg")
    records.append(
      {
        "image": f"im{i}.jpg",
        "text": ["the red circle", "a small blue square left of it"][i % 2],
        "ref_id": i,
        "bbox": [2.0, 3.0, w / 2, h / 2],
        "split": ["val", "testA"][i % 2],
      }
    )
  (tmp_path / "val.json").write_text(json.dumps(records))
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(4)), nnx.Param))
  one, p1 = _evaluate(cfg, params, tmp_path, jax.devices()[:1])
  four, p4 = _evaluate(cfg, params, tmp_path, jax.devices()[:4])
  assert one == pytest.approx(four)
  np.testing.assert_allclose([p["pred_bbox"] for p in p1], [p["pred_bbox"] for p in p4], atol=0.02)
  assert len({tuple(p["pred_bbox"]) for p in p1}) > 1  # inputs differ, so do the boxes


# ------------------------------------------------------------------------------------------ training data

tf = pytest.importorskip("tensorflow")


def _reference_target(box, crop, flipped, r):
  """Official grounding_dataset_bbox training arithmetic (float64)."""
  x, y, w, h = box
  x0, y0, x1, y1 = crop
  wc, hc = x1 - x0, y1 - y0
  x, y = x - x0, y - y0
  if flipped:
    x = (wc - x) - w
  x, w, y, h = r / wc * x, r / wc * w, r / hc * y, r / hc * h
  return np.asarray([(x + 0.5 * w) / r, (y + 0.5 * h) / r, w / r, h / r], np.float32)


def test_crop_keeps_the_box_flip_rule_and_target_match_the_official_arithmetic():
  from x2vlm_jax.data.finetune.grounding import grounding_example

  r = 64
  cfg = ml_collections.ConfigDict(dict(image_res=r, randaug=False, careful_hflip=True))
  height, width = 60, 90
  box = (50.4, 12.7, 25.3, 30.6)  # float box, as REFER's
  img = np.full((height, width, 3), 100, np.uint8)
  img[13:43, 51:75] = (230, 20, 20)  # the object, inside the box
  img[13:43, 51:56] = (20, 20, 230)  # a blue stripe on its LEFT edge: shows a flip
  flips = {"the red thing": 0, "the thing on the left": 0}
  n = 40
  for text in flips:
    for s in range(n):
      image, target, flipped, crop = (
        np.asarray(v)
        for v in grounding_example(
          tf.constant(img), tf.constant(text), tf.constant(box, tf.float64), cfg, tf.constant([3, s], tf.int64)
        )
      )
      x0, y0, x1, y1 = crop.tolist()
      assert 0 <= x0 <= int(np.floor(box[0])) and 0 <= y0 <= int(np.floor(box[1]))
      assert min(int(np.ceil(box[0] + box[2])), width) <= x1 <= width
      assert min(int(np.ceil(box[1] + box[3])), height) <= y1 <= height
      np.testing.assert_allclose(target, _reference_target(box, crop.tolist(), bool(flipped), r), rtol=1e-6)
      flips[text] += int(flipped)
      # The target box, drawn on the output image, holds the object; its blue edge is on the left
      # unless the image was flipped.
      pix = image * np.asarray([0.26862954, 0.26130258, 0.27577711]) + np.asarray([0.48145466, 0.4578275, 0.40821073])
      cx, cy, w, h = target * r
      inner = pix[int(cy - h / 4) : int(cy + h / 4) + 1, int(cx - w / 4) : int(cx + w / 4) + 1]
      assert inner[..., 0].mean() > 0.6 and inner[..., 1].mean() < 0.3, (s, text)
      left = pix[int(cy), int(cx - w / 2 + 1.5), 2]
      right = pix[int(cy), int(cx + w / 2 - 1.5), 2]
      assert (right > left) if flipped else (left > right), (s, text, left, right)
  assert flips["the thing on the left"] == 0  # "left" in the text: never flipped
  assert 0.25 * n < flips["the red thing"] < 0.75 * n


def test_builder_counts_bad_records_and_the_stream_reads_the_rest(tmp_path):
  from x2vlm_jax.configs.finetune.common import finetune_data
  from x2vlm_jax.data.finetune import grounding
  from x2vlm_jax.tasks.grounding import GroundingTask

  Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "a.jpg")
  (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  good = {"image": "a.jpg", "text": "the red circle", "ref_id": 1, "bbox": [10, 5, 20, 30]}
  rows = [
    good,
    {"image": "a.jpg", "text": "no box", "ref_id": 2},  # missing_field
    {"image": "a.jpg", "text": "bad box", "ref_id": 3, "bbox": [1, 2, 3]},  # bad_field_type
    {"image": "a.jpg", "text": "outside", "ref_id": 4, "bbox": [50, 5, 20, 30]},  # box_outside_image
    {"image": "a.jpg", "text": "?!.", "ref_id": 5, "bbox": [1, 2, 3, 4]},  # empty_caption
    {"image": "missing.jpg", "text": "lost", "ref_id": 6, "bbox": [1, 2, 3, 4]},  # image_not_found
    {"image": "broken.jpg", "text": "broken", "ref_id": 7, "bbox": [1, 2, 3, 4]},  # corrupt_image
    {"image": "a.jpg", "text": "the blue square", "ref_id": 8, "bbox": [0, 0, 60, 40]},
  ]
  (tmp_path / "train.json").write_text(json.dumps(rows))
  report = grounding.build(str(tmp_path / "train.json"), str(tmp_path), str(tmp_path / "tfds"), "g")
  assert report.written == 2 and report.extra["images"] == 1
  assert dict(report.skipped) == {
    "missing_field": 1,
    "bad_field_type": 1,
    "box_outside_image": 1,
    "empty_caption": 1,
    "image_not_found": 1,
    "corrupt_image": 1,
  }
  with pytest.raises(ValueError, match=r"record 1: missing_field: no field 'bbox'"):
    grounding.build(str(tmp_path / "train.json"), str(tmp_path), str(tmp_path / "strict"), "g", strict=True)
  c = finetune_data(32, 2)
  c.data_dir, c.vocab_file, c.train, c.max_tokens, c.randaug = (
    str(tmp_path / "tfds"),
    SHAPES_VOCAB,
    [("g", "train")],
    8,
    False,
  )
  assert grounding.train_size(c) == 2
  batch = next(grounding.create_iterator(c, spec=GroundingTask.spec, seed=0, process_index=0, process_count=1))
  assert batch["images"].shape == (2, 32, 32, 3) and batch["target_bbox"].shape == (2, 4)
  whole = [t for t in batch["target_bbox"] if np.allclose(t, [0.5, 0.5, 1.0, 1.0])]
  assert len(whole) == 1  # the whole-image box stays the whole image under any crop and flip


def test_refer_converter_puts_box_split_and_size_into_records(tmp_path):
  import subprocess
  import sys

  refs = [
    {
      "ref_id": 10,
      "ann_id": 100,
      "image_id": 5,
      "split": "testA",
      "category_id": 1,
      "sentences": [{"sent": "man on the left", "raw": "Man on the left"}, {"sent": "left guy"}],
    },
    {
      "ref_id": 11,
      "ann_id": 101,
      "image_id": 5,
      "split": "train",
      "category_id": 1,
      "sentences": [{"sent": "red car"}],
    },
  ]
  d = tmp_path / "refcoco+"
  d.mkdir()
  (d / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
  (d / "instances.json").write_text(
    json.dumps(
      {
        "images": [{"id": 5, "width": 640, "height": 480, "file_name": "COCO_train2014_000000000005.jpg"}],
        "annotations": [{"id": 100, "bbox": [1.5, 2.0, 30.0, 40.0]}, {"id": 101, "bbox": [100, 50, 20, 10]}],
        "categories": [],
      }
    )
  )
  out = subprocess.run(
    [
      sys.executable,
      "tools/refer_to_grounding.py",
      "--refer_dir",
      str(d),
      "--output_dir",
      str(tmp_path / "out"),
      "--image_prefix",
      "train2014/",
    ],
    capture_output=True,
    text=True,
  )
  assert out.returncode == 0, out.stderr
  test = json.loads((tmp_path / "out" / "refcoco+_test.json").read_text())
  assert test == [
    {
      "image": "train2014/COCO_train2014_000000000005.jpg",
      "text": t,
      "ref_id": 10,
      "bbox": [1.5, 2.0, 30.0, 40.0],
      "split": "testA",
      "width": 640,
      "height": 480,
    }
    for t in ("man on the left", "left guy")
  ]
  assert [r["ref_id"] for r in json.loads((tmp_path / "out" / "refcoco+_train.json").read_text())] == [11]
  # A pickle that would construct an object is refused.
  (d / "refs(unc).p").write_bytes(pickle.dumps([{"ref_id": 1, "x": np.float32(1)}]))
  bad = subprocess.run(
    [sys.executable, "tools/refer_to_grounding.py", "--refer_dir", str(d), "--output_dir", str(tmp_path / "out2")],
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 1 and "refusing to load" in bad.stderr


def test_refer_converter_completes_the_official_files_present_without_a_train_file(tmp_path):
  """Evaluation needs only the official _val and _test files (Grounding_bbox.py --evaluate builds no
  training set); --official_dir used to demand refcoco+_train.json as well."""
  import subprocess
  import sys

  refs = [
    {"ref_id": 7, "ann_id": 70, "image_id": 3, "split": "val", "sentences": [{"sent": "the dog"}]},
    {"ref_id": 8, "ann_id": 80, "image_id": 4, "split": "testB", "sentences": [{"sent": "a cup"}]},
  ]
  d = tmp_path / "refer"
  d.mkdir()
  (d / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
  images = [{"id": 3, "width": 300, "height": 200, "file_name": "a.jpg"}, {"id": 4, "width": 50, "height": 60}]
  anns = [{"id": 70, "bbox": [1, 2, 3, 4]}, {"id": 80, "bbox": [5.5, 6, 7, 8]}]
  (d / "instances.json").write_text(json.dumps({"images": images, "annotations": anns}))
  official = tmp_path / "official"
  official.mkdir()
  (official / "refcoco+_val.json").write_text(json.dumps([{"image": "coco/a.jpg", "text": "dog", "ref_id": 7}]))
  (official / "refcoco+_test.json").write_text(json.dumps([{"image": "coco/b.jpg", "text": "cup", "ref_id": 8}]))
  cmd = [sys.executable, "tools/refer_to_grounding.py", "--refer_dir", str(d), "--official_dir", str(official)]
  out = subprocess.run([*cmd, "--output_dir", str(tmp_path / "out")], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert "refcoco+_train.json: not in" in out.stdout
  assert not (tmp_path / "out" / "refcoco+_train.json").exists()
  val = json.loads((tmp_path / "out" / "refcoco+_val.json").read_text())
  test = json.loads((tmp_path / "out" / "refcoco+_test.json").read_text())
  assert val == [
    {
      "image": "coco/a.jpg",
      "text": "dog",
      "ref_id": 7,
      "bbox": [1.0, 2.0, 3.0, 4.0],
      "split": "val",
      "width": 300,
      "height": 200,
    }
  ]
  assert test == [
    {
      "image": "coco/b.jpg",
      "text": "cup",
      "ref_id": 8,
      "bbox": [5.5, 6.0, 7.0, 8.0],
      "split": "testB",
      "width": 50,
      "height": 60,
    }
  ]
  empty = tmp_path / "empty"
  empty.mkdir()
  none = subprocess.run([*cmd[:-1], str(empty), "--output_dir", str(tmp_path / "out3")], capture_output=True, text=True)
  assert none.returncode == 1 and "none of ['refcoco+_test.json', 'refcoco+_train.json'" in none.stderr, none.stderr
