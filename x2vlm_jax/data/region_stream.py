"""Region stream (docs/reference.md §2.2): box-safe crop, box clipping/rescaling, patch masks, fixed Bi/Bt batches."""

import numpy as np
import tensorflow as tf

from x2vlm_jax.data import augment, records
from x2vlm_jax.data.streams import (
  BATCH_SEED_OFFSET,
  STREAM_IDS,
  decode,
  example_seed,
  from_source,
  image_signature,
  meta,
  pmap,
)
from x2vlm_jax.data.text import pre_caption
from x2vlm_jax.data.textproc import pick_alternative

WHOLE_IMAGE_BOX = (0.5, 0.5, 1.0, 1.0)


def patch_masks(boxes, image_res, patch_size):
  """Graph twin of models/regions.py:box_to_patch_mask for boxes [K, 4] (R-pixel xywh) → [K, 1+N]."""
  g = image_res // patch_size
  b = tf.cast(boxes, tf.float64)
  x, y, w, h = tf.unstack(b, axis=-1)
  p = float(patch_size)
  col_min = tf.minimum(tf.floor(x / p), g - 1)
  col_max = tf.maximum(col_min + 1, tf.minimum(tf.math.ceil((x + w) / p), g))
  row_min = tf.minimum(tf.floor(y / p), g - 1)
  row_max = tf.maximum(row_min + 1, tf.minimum(tf.math.ceil((y + h) / p), g))
  idx = tf.range(g, dtype=tf.float64)
  cols = (idx[None] >= col_min[:, None]) & (idx[None] < col_max[:, None])  # [K, G]
  rows = (idx[None] >= row_min[:, None]) & (idx[None] < row_max[:, None])
  grid = rows[:, :, None] & cols[:, None, :]
  flat = tf.reshape(tf.cast(grid, tf.int32), [-1, g * g])
  return tf.concat([tf.ones_like(flat[:, :1]), flat], axis=1)


def box_safe_crop(height, width, box, seed):
  """Crop [x0,x1)×[y0,y1) that contains the int anchor box (x, y, w, h): docs/reference.md §2.2 step 1."""
  sx0, sy0, sx1, sy1 = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
  x, y, w, h = tf.unstack(box)

  def uniform_int(s, lo, hi):  # inclusive both ends
    return tf.random.stateless_uniform([], s, lo, hi + 1, dtype=tf.int32)

  x0, y0 = uniform_int(sx0, 0, x), uniform_int(sy0, 0, y)
  x1 = uniform_int(sx1, tf.minimum(x + w, width), width)
  y1 = uniform_int(sy1, tf.minimum(y + h, height), height)
  return x0, y0, x1, y1


def transform_boxes(boxes, crop, flipped, image_res, min_perc):
  """Element boxes → (kept [E], float64 boxes in R-pixel xywh [E, 4]) after crop, flip and resize.

  The reference's arithmetic exactly (docs/reference.md §2.2 step 4): int boxes; an element is kept when its
  intersection with the crop is non-empty and covers > min_perc of its ORIGINAL area (a box partly
  outside the image keeps counting the outside part); the scaling is float64 in the reference's
  operation order (R / W_crop) · v, since float32 put ~0.8% of random boxes a patch row/column off.
  """
  x, y, w, h = tf.unstack(tf.cast(boxes, tf.int64), axis=-1)  # truncation toward zero, as int()
  x0, y0, x1, y1 = (tf.cast(v, tf.int64) for v in crop)
  xx, yy = tf.maximum(x0, x), tf.maximum(y0, y)
  xm, ym = tf.minimum(x1, x + w), tf.minimum(y1, y + h)
  # w·h ≤ 0 never passes the intersection test, so its denominator is irrelevant.
  perc = tf.cast((xm - xx) * (ym - yy), tf.float64) / tf.cast(tf.maximum(w * h, 1), tf.float64)
  kept = (xm > xx) & (ym > yy) & (perc > min_perc)
  nx, ny, nw, nh = xx - x0, yy - y0, xm - xx, ym - yy
  nx = tf.where(flipped, (x1 - x0 - nx) - nw, nx)
  sx = image_res / tf.cast(x1 - x0, tf.float64)
  sy = image_res / tf.cast(y1 - y0, tf.float64)
  f64 = lambda v: tf.cast(v, tf.float64)  # noqa: E731
  return kept, tf.stack([sx * f64(nx), sy * f64(ny), sx * f64(nw), sy * f64(nh)], axis=-1)


def region_example(ex, cfg, seed):
  """One region record → image + up to max_regions texts. `ex["anchor"]` is the element drawn for
  the crop, already checked to lie inside the image (`anchor_picker`)."""
  rc, r = cfg.region, cfg.image_res
  k = rc.max_regions
  s_crop, s_flip, s_ra, s_order, s_cap, s_alt = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
  img = ex["image"]
  height, width = tf.shape(img)[0], tf.shape(img)[1]
  boxes = ex["boxes"]
  e = tf.shape(boxes)[0]
  crop = box_safe_crop(height, width, tf.cast(boxes[ex["anchor"]], tf.int32), s_crop)
  x0, y0, x1, y1 = crop
  patch = img[y0:y1, x0:x1]
  # English pretraining flips unconditionally, captions untouched (docs/reference.md §2.2 step 2, §10 item 6).
  patch, flipped = augment.random_flip(patch, s_flip)
  patch = tf.ensure_shape(augment.resize(patch, r), [r, r, 3])
  if cfg.randaug:
    patch = augment.rand_augment(patch, s_ra, ops=augment.PHOTOMETRIC_OPS)
  image = augment.normalize(patch)

  kept, rboxes = transform_boxes(boxes, crop, flipped, float(r), rc.min_perc_in_image)
  # Kept elements first, in random order.
  keys = tf.random.stateless_uniform([e], s_order) + tf.cast(~kept, tf.float32) * 2.0
  order = tf.argsort(keys, stable=True)
  alt_seeds = tf.random.experimental.stateless_split(s_alt, e * 2)

  def elem_text(i):
    cap = pick_alternative(ex["elem_caption"][i], alt_seeds[2 * i])
    attr = pick_alternative(ex["elem_attrs"][i], alt_seeds[2 * i + 1])
    return tf.where(tf.strings.length(attr) > 0, tf.strings.join([attr, " ", cap]), cap)

  elem_texts = tf.map_fn(elem_text, tf.range(e), fn_output_signature=tf.string)
  elem_texts = tf.gather(elem_texts, order)
  elem_kept = tf.gather(kept, order)
  elem_boxes = tf.gather(rboxes, order)

  caption = pick_alternative(ex["caption"], s_cap)
  has_cap = tf.strings.length(caption) > 0
  # Whole-image caption first (counts toward max_regions), then elements; pad to k.
  texts = tf.concat([tf.reshape(caption, [1]), elem_texts, tf.fill([k], "")], 0)
  valid = tf.concat([[has_cap], elem_kept, tf.zeros([k], tf.bool)], 0)
  is_image = tf.concat([[True], tf.zeros([e + k], tf.bool)], 0)
  bxs = tf.concat([tf.constant([[0.0, 0.0, r, r]], tf.float64), elem_boxes, tf.zeros([k, 4], tf.float64)], 0)
  # Stable selection of the first k valid entries keeps that order.
  sel = tf.argsort(tf.cast(~valid, tf.int32), stable=True)[:k]
  texts, valid = tf.ensure_shape(tf.gather(texts, sel), [k]), tf.ensure_shape(tf.gather(valid, sel), [k])
  is_image, bxs = tf.ensure_shape(tf.gather(is_image, sel), [k]), tf.ensure_shape(tf.gather(bxs, sel), [k, 4])
  # Padding rows behave as inert whole-image texts (valid = 0 masks them everywhere).
  is_image = is_image | ~valid
  pm = patch_masks(bxs, r, cfg.patch_size)
  pm = tf.where(is_image[:, None], tf.ones_like(pm), pm)
  x, y, w, h = tf.unstack(bxs, axis=-1)
  # (x + w/2) / R in float64, then float32: the reference's order of operations.
  target = tf.cast(tf.stack([x + 0.5 * w, y + 0.5 * h, w, h], axis=-1) / r, tf.float32)
  target = tf.where(is_image[:, None], tf.constant(WHOLE_IMAGE_BOX), target)
  return {
    "images": image,
    "text": pre_caption(texts, cfg.max_tokens),
    "valid": tf.cast(valid, tf.float32),
    "is_image": tf.cast(is_image, tf.int32),
    "patch_mask": pm,
    "target_bbox": target,
    "_box_px": bxs,
    "_crop": tf.stack(crop),
    "_flipped": flipped,
  }


def anchor_picker(base):
  """(position, record) → {"anchor": element index} or None to skip the record, as the reference reader
  does (docs/reference.md §2.2 step 1): one element drawn uniformly; a record without elements, or whose drawn
  element is not inside the image on the int box, yields nothing for that read. Drawn here, before
  decoding, so the stream can count skips apart from corrupt images."""

  def pick(position, rec):
    boxes = rec["boxes"]
    if len(boxes) == 0:
      return None
    a = int(np.random.default_rng([base % (1 << 63), int(position)]).integers(len(boxes)))
    if not records.valid_anchor([int(v) for v in boxes[a]], int(rec["width"]), int(rec["height"])):
      return None
    return {"anchor": np.int32(a)}

  return pick


def select_texts(b, num_texts, seed, num_groups=1):
  """[Bi, K] per-image texts → Bt texts in `num_groups` ITM groups (docs/reference.md §2.2 step 6, per group).

  Officially each GPU's region batch of `batch_size` texts comes from its own `max_images` images,
  and ITM hard negatives are drawn inside that batch, so regions of one image are each other's hard
  negatives. Group j takes images [j·Bi/G, (j+1)·Bi/G) and fills text rows [j·Bt/G, (j+1)·Bt/G),
  sampled without replacement among the group's valid texts; missing texts are invalid padding rows.
  """
  bi, k = b["valid"].shape[0], b["valid"].shape[1]
  gi, gt = bi // num_groups, num_texts // num_groups
  n = gi * k  # candidates per group
  flat = {
    key: tf.reshape(v, [num_groups, n] + v.shape[2:].as_list())
    for key, v in b.items()
    if key in ("text", "valid", "is_image", "patch_mask", "target_bbox", "_box_px")
  }
  flat["image_index"] = tf.reshape(tf.repeat(tf.range(bi, dtype=tf.int32), k), [num_groups, n])
  keys = tf.random.stateless_uniform([num_groups, n], seed) + (1.0 - flat["valid"]) * 2.0
  order = tf.argsort(keys, axis=1, stable=True)
  if n < gt:  # more text slots than candidates: pad with (invalid) copies of the last candidate
    order = tf.concat([order, tf.repeat(order[:, -1:], gt - n, axis=1)], 1)
    extra = tf.concat([tf.zeros([n]), tf.ones([gt - n])], 0)
  else:
    extra = tf.zeros([gt])
  order = order[:, :gt]
  out = {key: tf.gather(v, order, batch_dims=1) for key, v in flat.items()}
  out = {key: tf.reshape(v, [num_groups * gt] + v.shape[2:].as_list()) for key, v in out.items()}
  out["valid"] = out["valid"] * tf.tile(1.0 - extra, [num_groups])
  return out


def region_stream(source, cfg, text_stage, *, position, counts, skipped, seed, num_images, num_texts, num_groups=1):
  base = seed * 8 + STREAM_IDS["region"]
  signature = {**image_signature(len(source.sources)), "anchor": tf.TensorSpec([], tf.int32)}
  ds = from_source(source, position, counts, signature, skipped=skipped, prepare=anchor_picker(base))

  def dec(ex):
    out = dict(ex)
    out["image"] = decode(ex["image"])
    return out

  ds = pmap(ds, dec, cfg)
  if not cfg.strict:
    ds = ds.ignore_errors()

  def per_example(ex):
    out = region_example(ex, cfg, example_seed(base, ex["_pos"]))
    out.update(meta(ex), _anchor=ex["anchor"])
    return out

  ds = pmap(ds, per_example, cfg)
  ds = ds.batch(num_images, drop_remainder=True)

  def per_batch(b):
    s_sel, s_txt = tf.unstack(
      tf.random.experimental.stateless_split(example_seed(base + BATCH_SEED_OFFSET, b["_pos"][0]), 2)
    )
    t = select_texts(b, num_texts, s_sel, num_groups)
    out = {
      "images": b["images"],
      "image_index": t["image_index"],
      "patch_mask": t["patch_mask"],
      "target_bbox": t["target_bbox"],
      "is_image": t["is_image"],
      "_box_px": t["_box_px"],
      **{k: b[k] for k in ("_crop", "_flipped", "_anchor")},
    }
    out.update(text_stage(t["text"], t["valid"], s_txt))
    out.update(meta(b))
    return out

  return pmap(ds, per_batch, cfg)
