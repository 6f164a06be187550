"""Region and video mechanics on top of the vision tokens (docs/reference.md §1.2 step 7, §1.7, §2.2 step 5).

The vision tower never sees a region: regions only restrict pooling (slot 0) and cross-attention.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def box_to_patch_mask(box_xywh, image_res: int, patch_size: int) -> np.ndarray:
  """Official `get_image_attns`: a box in R-pixel units → {0,1} mask [1+N] (slot 0 = 1).

  Every patch the box touches is included, and at least one patch always is.
  """
  x, y, w, h = (float(t) for t in box_xywh)
  grid = image_res // patch_size
  col_min = min(int(math.floor(x / patch_size)), grid - 1)
  col_max = max(col_min + 1, min(int(math.ceil((x + w) / patch_size)), grid))
  row_min = min(int(math.floor(y / patch_size)), grid - 1)
  row_max = max(row_min + 1, min(int(math.ceil((y + h) / patch_size)), grid))
  mask = np.zeros((grid, grid), dtype=np.int32)
  mask[row_min:row_max, col_min:col_max] = 1
  return np.concatenate([[1], mask.reshape(-1)]).astype(np.int32)


def region_pool(image_embeds: jax.Array, patch_masks: jax.Array, image_index: jax.Array):
  """Per-text region tokens: [Σ m·x / Σ m over patches, all N patches] gathered from its image.

  image_embeds [Bi,1+N,D], patch_masks [R,1+N] (slot 0 ignored), image_index [R] → [R,1+N,D].
  """
  patches = jnp.take(image_embeds, image_index, axis=0)[:, 1:]
  m = patch_masks[:, 1:].astype(patches.dtype)[..., None]
  # Guard against an all-zero mask (padding rows): pool over nothing → zeros, never NaN.
  pooled = (patches * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
  return jnp.concatenate([pooled[:, None], patches], axis=1)


def video_pool(frame_embeds: jax.Array, frame_pos=None):
  """[B,F,1+N,D] per-frame tokens (+ learned [1,F_max,1,D] frame embedding) → temporal mean [B,1+N,D]."""
  if frame_pos is not None:
    f = frame_embeds.shape[1]
    if f > frame_pos.shape[1]:
      raise ValueError(f"video frames: the model has {frame_pos.shape[1]} frame embeddings, got {f} frames")
    frame_embeds = frame_embeds + frame_pos[:, :f].astype(frame_embeds.dtype)
  return frame_embeds.mean(axis=1)
