"""Referring-expression grounding (RefCOCO+), the official box evaluation (docs/reference.md §5.4).

Per record: the image through the test transform (R×R), the expression (`pre_caption` 30 words,
padded to the longest, no truncation) in text mode, fusion with the full image, `bbox_head` → sigmoid
(cx, cy, w, h) in [0, 1]. As `Grounding_bbox.py: grounding_eval_bbox` does, the box is scaled to the
ORIGINAL image size (x by its width, y by its height), turned into (x, y, w, h) with x = cx − w/2, and
compared with the ground-truth box by the official `computeIoU` (inclusive pixels); a record is
correct when IoU ≥ 0.5. Accuracy is reported per split under the official keys `val_d`, `testA_d`,
`testB_d` (fractions, as officially).

Annotations: the official records `{image, text, ref_id}` read their box and split from the REFER
toolkit; here the box is IN the record: `{image, text, ref_id, bbox: [x, y, w, h]}` with an optional
`split` (else the file's split name) and optional `width`/`height` (else read from the image file).
`tools/refer_to_grounding.py` writes these files from REFER's `refs(unc).p` + `instances.json`.
Records are evaluated one by one (each runs the vision tower on its image), so memory does not grow
with the number of images.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from x2vlm_jax.data import annotations as ann
from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.evaluation.sharded import EvalBatches, to_host

THRESHOLD = 0.5


# ------------------------------------------------------------------------------------------------
# The official box arithmetic (host numpy; shared by the evaluator and the notebook API)
# ------------------------------------------------------------------------------------------------
def official_iou(box1: np.ndarray, box2: np.ndarray) -> np.ndarray:
  """`dataset/utils.py: computeIoU` on [..., 4] (x, y, w, h) boxes, elementwise.

  Inclusive pixels: a box covers columns x .. x+w−1. The official test is STRICT
  (inter_x1 < inter_x2 and inter_y1 < inter_y2), so an overlap one pixel wide counts as no overlap;
  kept as is. A zero union (two empty boxes) raises ZeroDivisionError officially; here it gives 0.
  """
  b1, b2 = np.asarray(box1, np.float64), np.asarray(box2, np.float64)
  x1 = np.maximum(b1[..., 0], b2[..., 0])
  y1 = np.maximum(b1[..., 1], b2[..., 1])
  x2 = np.minimum(b1[..., 0] + b1[..., 2] - 1, b2[..., 0] + b2[..., 2] - 1)
  y2 = np.minimum(b1[..., 1] + b1[..., 3] - 1, b2[..., 1] + b2[..., 3] - 1)
  inter = np.where((x1 < x2) & (y1 < y2), (x2 - x1 + 1) * (y2 - y1 + 1), 0.0)
  union = b1[..., 2] * b1[..., 3] + b2[..., 2] * b2[..., 3] - inter
  return np.where(union != 0, inter / np.where(union != 0, union, 1.0), 0.0)


def to_image_xywh(pred_cxcywh: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """Normalised (cx, cy, w, h) [n, 4] → (x, y, w, h) in pixels of images of (width, height) [n, 2]:
  coord[0::2] *= width, coord[1::2] *= height, then x −= w/2, y −= h/2 (the official order)."""
  p = np.asarray(pred_cxcywh, np.float64)
  w, h = sizes[:, 0].astype(np.float64), sizes[:, 1].astype(np.float64)
  cx, cy, bw, bh = p[:, 0] * w, p[:, 1] * h, p[:, 2] * w, p[:, 3] * h
  return np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class GroundingSet:
  images: List[str]  # full path per record
  texts: List[str]
  ref_ids: List[object]
  boxes: np.ndarray  # [n, 4] ground truth (x, y, w, h), original pixels
  splits: List[str]
  sizes: np.ndarray  # [n, 2] original (width, height); 0 = read from the image

  @classmethod
  def from_files(cls, annotations: str, image_root: str = "", splits: str = "") -> "GroundingSet":
    out = cls([], [], [], np.zeros((0, 4)), [], np.zeros((0, 2), np.int64))
    boxes, sizes = [], []
    for split, path, records in ann.read_split_files(annotations, splits):
      ann.require(path, records, "image", str, non_empty=True)
      ann.require(path, records, "text", str)
      for i, rec in enumerate(records):
        if "ref_id" not in rec:
          raise ValueError(f"annotations {path!r}: record {i} has no field 'ref_id' (fields: {sorted(rec)})")
        try:
          box = ann.box_xywh(rec.get("bbox"))
        except ann.BadRecord as e:
          raise e.located(path, i) from None
        size = [rec.get("width", 0), rec.get("height", 0)]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size):
          raise ValueError(f"annotations {path!r}: record {i}: width/height must be non-negative ints, got {size}")
        rec_split = rec.get("split", split)
        if not isinstance(rec_split, str) or not rec_split:
          raise ValueError(f"annotations {path!r}: record {i}: 'split' must be a non-empty string")
        out.images.append(ann.image_path(image_root, rec["image"]))
        out.texts.append(rec["text"])
        out.ref_ids.append(rec["ref_id"])
        out.splits.append(rec_split)
        boxes.append(box)
        sizes.append(size)
    out.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out.sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    return out


def split_metrics(
  iou: np.ndarray, splits: np.ndarray, ok: np.ndarray, threshold: float = THRESHOLD, suffix: str = "_d"
) -> Dict[str, float]:
  """{"<split>_d": fraction of the split's (readable) records with IoU ≥ threshold}."""
  out = {}
  for s in sorted(set(splits.tolist())):
    sel = (splits == s) & ok
    out[f"{s}{suffix}"] = float(np.mean(iou[sel] >= threshold)) if sel.any() else 0.0
  return out


# ------------------------------------------------------------------------------------------------
# The evaluator
# ------------------------------------------------------------------------------------------------
class GroundingEvaluator(Evaluator):
  """config.evals.<name> = dict(type="grounding", annotations="val.json,test.json", image_root=...).

  Besides `<split>_d` it reports `<split>_mean_iou` and two constant-box references on the same
  records: `<split>_whole_image_d` (the box is the whole image) and `<split>_mean_box_d` (the mean
  ground-truth box of the split, in image-relative units: the best a position prior alone can do).

  predict_fns: predict_box(model, images, ids, mask) → normalised (cx, cy, w, h) [B, 4]."""

  PREDICT_FNS = ("predict_box",)
  HEADS = ("bbox_head",)

  DEFAULTS = dict(
    annotations="",
    image_root="",
    splits="",
    batch_size=32,
    max_tokens=0,
    max_words=30,
    threshold=THRESHOLD,
    strict=False,
  )

  def setup(self):
    ecfg = self.ecfg
    self.data = GroundingSet.from_files(ecfg.annotations, ecfg.image_root, ecfg.splits)
    if not self.data.texts:
      raise ValueError(f"grounding evaluation {self.name!r}: {ecfg.annotations} holds no record")
    self.text_ids, self.text_mask = self.tokenize_texts(self.data.texts, ecfg.max_tokens, ecfg.max_words)
    self.batches = EvalBatches(self.mesh, ecfg.batch_size)

  def _fn(self, graphdef):
    predict_box = self.predict_fns["predict_box"]

    def boxes(params, batch):
      model = nnx.merge(graphdef, params)
      return predict_box(model, batch["images"], batch["ids"], batch["mask"]), batch["sizes"], batch["valid"]

    return self.jitted(graphdef, lambda: jax.jit(boxes))

  def compile_targets(self, graphdef, params, *, num_images: int, num_texts: int):
    """The box program on one evaluation batch (records run batch by batch)."""
    del num_images, num_texts
    res, length = int(self.model_cfg.image_res), self.compile_text_tokens()
    batch = self.sharded_batch(
      EvalBatches(self.mesh, int(self.ecfg.batch_size)),
      {
        "images": ((res, res, 3), jnp.float32),
        "ids": ((length,), jnp.int32),
        "mask": ((length,), jnp.int32),
        "sizes": ((2,), jnp.int32),
        "valid": ((), jnp.float32),
      },
    )
    return [(f"{self.name}/predict_box", self._fn(graphdef), (params, batch))]

  def _load(self, idx: np.ndarray):
    sizes = np.zeros((len(idx), 2), np.int64)
    pixels, valid = self.load_images(self.data.images, idx, sizes=sizes)
    safe = np.maximum(idx, 0)
    given = self.data.sizes[safe]
    sizes = np.where(given > 0, given, sizes)  # a record's own width/height wins (the REFER values)
    return {
      "images": pixels,
      "ids": self.text_ids[safe],
      "mask": self.text_mask[safe],
      "sizes": sizes.astype(np.int32),
      "valid": valid,
    }

  def predict(self, graphdef, params) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised (cx,cy,w,h) [n,4], original sizes [n,2], readable [n]) for every record."""
    n = len(self.data.texts)
    self.bad_images = []
    fn = self._fn(graphdef)
    outs = self.batches.map(lambda b: fn(params, b), n, self._load)
    pred, sizes, valid = (to_host(x)[:n] for x in self.batches.concat(outs))
    return pred, sizes, valid > 0

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[list]]:
    data, thr = self.data, float(self.ecfg.threshold)
    pred, sizes, ok = self.predict(graphdef, params)
    if not ok.any():
      raise ValueError(f"grounding evaluation {self.name!r}: no image of {self.ecfg.annotations} could be read")
    boxes = to_image_xywh(pred, sizes)
    iou = official_iou(data.boxes, boxes)
    splits = np.asarray(data.splits)
    metrics = split_metrics(iou, splits, ok, thr)
    # Constant-box references on the same records (image-relative boxes scaled like predictions).
    rel = np.stack(
      [
        (data.boxes[:, 0] + data.boxes[:, 2] / 2) / np.maximum(sizes[:, 0], 1),
        (data.boxes[:, 1] + data.boxes[:, 3] / 2) / np.maximum(sizes[:, 1], 1),
        data.boxes[:, 2] / np.maximum(sizes[:, 0], 1),
        data.boxes[:, 3] / np.maximum(sizes[:, 1], 1),
      ],
      1,
    )
    whole = official_iou(data.boxes, to_image_xywh(np.tile([0.5, 0.5, 1.0, 1.0], (len(iou), 1)), sizes))
    metrics.update(split_metrics(whole, splits, ok, thr, "_whole_image_d"))
    for split in sorted(set(data.splits)):
      sel = (splits == split) & ok
      if not sel.any():
        continue
      constant = np.tile(rel[sel].mean(0), (int(sel.sum()), 1))
      mean_box = official_iou(data.boxes[sel], to_image_xywh(constant, sizes[sel]))
      metrics[f"{split}_mean_box_d"] = float(np.mean(mean_box >= thr))
      metrics[f"{split}_mean_iou"] = float(np.mean(iou[sel]))
      metrics[f"num_{split}"] = float(sel.sum())
    metrics["skipped_records"] = float((~ok).sum())
    if not ok.all():
      logging.warning(
        "grounding %s: %d of %d records left out (unreadable images, e.g. %s)",
        self.name,
        int((~ok).sum()),
        len(ok),
        self.bad_images[:3],
      )
    predictions = [
      {
        "ref_id": data.ref_ids[i],
        "text": data.texts[i],
        "split": data.splits[i],
        "image": data.images[i],
        "pred_bbox": [round(float(v), 2) for v in boxes[i]],
        "bbox": data.boxes[i].tolist(),
        "iou": round(float(iou[i]), 4),
      }
      for i in np.flatnonzero(ok)
    ]
    return metrics, predictions
