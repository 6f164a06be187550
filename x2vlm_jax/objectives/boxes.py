"""Box regression: L1 + generalized IoU of (cx, cy, w, h) boxes, for regions in pre-training
(docs/reference.md §3.4) and referring-expression grounding (§5.4)."""

from typing import Tuple

import jax
import jax.numpy as jnp

from x2vlm_jax.objectives.common import f32, row_mask, safe_div


def box_cxcywh_to_xyxy(box):
  """[..., 4] (cx, cy, w, h) → (x1, y1, x2, y2) = (cx − w/2, cy − h/2, cx + w/2, cy + h/2)."""
  cx, cy, w, h = jnp.moveaxis(f32(box), -1, 0)
  return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def _nonzero(x):
  # Used for areas in denominators: a degenerate (zero-area) pair gives 0/1 instead of 0/0.
  return jnp.where(x > 0, x, 1.0)


def generalized_iou(a, b):
  """Elementwise GIoU of paired (x1, y1, x2, y2) boxes [..., 4] → [...].

  GIoU = IoU − (C − U)/C with U the union area and C the area of the smallest enclosing box.
  Boxes are assumed well formed (x2 ≥ x1, y2 ≥ y1), which sigmoid-predicted (cx,cy,w,h) boxes are.
  """
  a, b = f32(a), f32(b)
  area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
  area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  lt = jnp.maximum(a[..., :2], b[..., :2])
  rb = jnp.minimum(a[..., 2:], b[..., 2:])
  wh = jnp.clip(rb - lt, 0.0)
  inter = wh[..., 0] * wh[..., 1]
  union = area_a + area_b - inter
  iou = inter / _nonzero(union)
  enclosing_lt = jnp.minimum(a[..., :2], b[..., :2])
  enclosing_rb = jnp.maximum(a[..., 2:], b[..., 2:])
  enclosing_wh = jnp.clip(enclosing_rb - enclosing_lt, 0.0)
  enclosing = enclosing_wh[..., 0] * enclosing_wh[..., 1]
  return iou - (enclosing - union) / _nonzero(enclosing)


def box_losses(pred, target, is_image=None, valid=None) -> Tuple[jax.Array, jax.Array]:
  """Region box losses (docs/reference.md §3.4) → (L_bbox, L_giou).

  pred, target: [B,4] (cx, cy, w, h) in [0,1] (pred already through the sigmoid).
  is_image: [B] 1 for whole-image captions, which get no box loss (None = all regions).
  L_bbox = Σ_b m_b·Σ_c |pred_bc − target_bc| / Σ_b m_b,  L_giou = Σ_b m_b·(1 − GIoU_b) / Σ_b m_b,
  m_b = (1 − is_image_b)·valid_b.

  Deliberate deviation (docs/reference.md §10 item 8): the official code divides by Σ_b (1 − is_image_b) with no
  guard and returns NaN when a batch has no region box; here such a batch gives 0 for both losses
  (and zero gradient), so one unlucky batch cannot poison the parameters.
  Padding rows (e.g. all-zero boxes) never produce NaN either: degenerate areas are guarded.
  """
  b = pred.shape[0]
  m = row_mask(valid, b)
  if is_image is not None:
    m = m * (1.0 - (f32(is_image) > 0).astype(jnp.float32))
  l1 = jnp.sum(jnp.abs(f32(pred) - f32(target)), axis=-1)
  giou = generalized_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(target))
  n = jnp.sum(m)
  return safe_div(jnp.sum(m * l1), n), safe_div(jnp.sum(m * (1.0 - giou)), n)
