"""The batch contract between the input pipeline and the trainer (no tensorflow here).

A training batch is `{stream: {field: np.ndarray}}` with `stream ∈ {"image", "region", "video", "mtext"}`;
only the streams a config enables are present. All shapes are fixed by the config; padding rows
carry `valid == 0` and are masked out of every loss (never duplicated, cf. docs/reference.md §10 item 7).

Per-host arrays have the per-host batch size; `x2vlm_jax.training` turns them into global arrays.

image stream  (B = batch_size)
  images           [B, R, R, 3]   float32  CLIP-normalised NHWC
  text_ids         [B, L]         int32    [CLS] wordpieces [SEP] 0-padded
  text_mask        [B, L]         int32    1 for real tokens
  text_ids_masked  [B, L]         int32    MLM input (docs/reference.md §3.3)
  masked_pos       [B, M]         int32    positions of masked tokens (0-padded)
  mlm_labels       [B, M]         int32    gold ids at masked_pos, -100 on padding
  valid            [B]            float32  1 real example, 0 padding

region stream (Bi = images per batch, Bt = texts per batch)
  images           [Bi, R, R, 3]  float32
  image_index      [Bt]           int32    index of each text's image in `images` (host-local)
  patch_mask       [Bt, 1+N]      int32    region patches (+ slot 0 = 1); all ones for whole-image texts
  target_bbox      [Bt, 4]        float32  (cx, cy, w, h) / R
  is_image         [Bt]           int32    1 for a whole-image caption (no box loss)
  text_ids, text_mask, text_ids_masked, masked_pos, mlm_labels, valid   as above with B = Bt

video stream  (B = batch_size, F = num_frames)
  frames           [B, F, R, R, 3] float32
  text fields and valid as in the image stream

mtext stream  (parallel text of the multilingual CCLM pre-training, docs/reference.md §3.7; B = batch_size,
               L = mtext.max_tokens, M = mtext.max_masks; XLM-R ids: <s>=0 <pad>=1 </s>=2, pad id 1)
  text_ids, text_mask            [B, L]  int32    a sentence (either side of the pair, swapped with p=0.5)
  para_ids, para_mask            [B, L]  int32    its translation
  text_ids_masked, masked_pos, mlm_labels         MLM on text_ids (conditioned on the translation)
  valid                          [B]     float32
  Only a multilingual (CCLM) task asks for this stream; the English pre-training never reads it.
"""

from typing import Dict

import numpy as np

IGNORE_ID = -100
# The English pre-training's streams: each brings pictures (images or frames) and their texts.
PICTURE_STREAMS = ("image", "region", "video")
TEXT_FIELDS = ("text_ids", "text_mask", "text_ids_masked", "masked_pos", "mlm_labels", "valid")


def stream_spec(
  stream: str,
  *,
  batch_size: int,
  image_res: int,
  patch_size: int,
  max_tokens: int,
  max_masks: int,
  num_images: int = 0,
  num_frames: int = 0,
) -> Dict[str, tuple]:
  """{field: (shape, dtype)} for one stream's per-host batch."""
  b, r, length, m = batch_size, image_res, max_tokens, max_masks
  text = {
    "text_ids": ((b, length), np.int32),
    "text_mask": ((b, length), np.int32),
    "text_ids_masked": ((b, length), np.int32),
    "masked_pos": ((b, m), np.int32),
    "mlm_labels": ((b, m), np.int32),
    "valid": ((b,), np.float32),
  }
  if stream == "image":
    return {"images": ((b, r, r, 3), np.float32), **text}
  if stream == "video":
    return {"frames": ((b, num_frames, r, r, 3), np.float32), **text}
  if stream == "mtext":
    return {"para_ids": ((b, length), np.int32), "para_mask": ((b, length), np.int32), **text}
  if stream == "region":
    n = (r // patch_size) ** 2
    return {
      "images": ((num_images, r, r, 3), np.float32),
      "image_index": ((b,), np.int32),
      "patch_mask": ((b, 1 + n), np.int32),
      "target_bbox": ((b, 4), np.float32),
      "is_image": ((b,), np.int32),
      **text,
    }
  raise ValueError(f"stream: expected image/region/video/mtext, got {stream!r}")


def check_stream(stream: str, batch: Dict[str, np.ndarray], spec: Dict[str, tuple]) -> None:
  """Raises a ValueError naming the field if a batch violates the contract."""
  missing = sorted(set(spec) - set(batch))
  if missing:
    raise ValueError(f"{stream} batch: missing fields {missing}")
  for k, (shape, dtype) in spec.items():
    a = batch[k]
    if tuple(a.shape) != tuple(shape) or np.dtype(a.dtype) != np.dtype(dtype):
      raise ValueError(
        f"{stream} batch field {k!r}: expected {shape} {np.dtype(dtype).name}, "
        f"got {tuple(a.shape)} {np.dtype(a.dtype).name}"
      )


def synthetic_stream(
  stream: str, spec: Dict[str, tuple], *, vocab_size: int, seed: int = 0, mask_prob: float = 0.25
) -> Dict[str, np.ndarray]:
  """A random batch that satisfies the contract (benchmarks and tests; no tensorflow needed)."""
  if stream == "mtext":
    return synthetic_mtext(spec, vocab_size=vocab_size, seed=seed, mask_prob=mask_prob)
  rs = np.random.RandomState(seed)
  out = {}
  b, length = spec["text_ids"][0]
  m = spec["masked_pos"][0][1]
  lengths = rs.randint(max(3, length // 2), length + 1, size=b)
  ids = rs.randint(1000 if vocab_size > 2000 else 5, vocab_size, size=(b, length)).astype(np.int32)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = 101 if vocab_size > 103 else 1
  ids[np.arange(b), lengths - 1] = 102 if vocab_size > 103 else 2
  ids *= mask
  masked_pos = np.zeros((b, m), np.int32)
  labels = np.full((b, m), IGNORE_ID, np.int32)
  ids_masked = ids.copy()
  for i in range(b):
    k = int(min(m, max(1, round(lengths[i] * mask_prob))))
    pos = np.sort(rs.choice(np.arange(1, lengths[i]), size=min(k, lengths[i] - 1), replace=False))
    masked_pos[i, : len(pos)] = pos
    labels[i, : len(pos)] = ids[i, pos]
    ids_masked[i, pos] = 103 if vocab_size > 103 else 3
  out.update(
    text_ids=ids,
    text_mask=mask,
    text_ids_masked=ids_masked,
    masked_pos=masked_pos,
    mlm_labels=labels,
    valid=np.ones((b,), np.float32),
  )
  for k in ("images", "frames"):
    if k in spec:
      out[k] = rs.randn(*spec[k][0]).astype(np.float32)
  if stream == "region":
    bi = spec["images"][0][0]
    n1 = spec["patch_mask"][0][1]
    out["image_index"] = (np.arange(b) % bi).astype(np.int32)
    out["is_image"] = (np.arange(b) % 5 == 0).astype(np.int32)
    pm = (rs.rand(b, n1) < 0.3).astype(np.int32)
    pm[:, 0] = 1
    pm[:, 1] = 1
    pm[out["is_image"] == 1] = 1
    out["patch_mask"] = pm
    cxcy = rs.uniform(0.2, 0.8, size=(b, 2))
    wh = rs.uniform(0.1, 0.4, size=(b, 2))
    box = np.concatenate([cxcy, wh], 1).astype(np.float32)
    box[out["is_image"] == 1] = (0.5, 0.5, 1.0, 1.0)
    out["target_bbox"] = box
  check_stream(stream, out, spec)
  return out


def _xlmr_rows(rs, b, length, vocab_size):
  """Random XLM-R rows: <s> pieces </s>, <pad> (1) after; piece ids avoid the specials and <mask>."""
  lengths = rs.randint(max(3, length // 2), length + 1, size=b)
  ids = rs.randint(4, vocab_size - 1, size=(b, length)).astype(np.int32)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = 0
  ids[np.arange(b), lengths - 1] = 2
  ids = np.where(mask > 0, ids, 1).astype(np.int32)
  return ids, mask, lengths


def synthetic_mtext(spec: Dict[str, tuple], *, vocab_size: int, seed: int = 0, mask_prob: float = 0.4):
  """A random parallel-text batch (XLM-R ids, <mask> = vocab_size - 1) that satisfies the contract."""
  rs = np.random.RandomState(seed)
  b, length = spec["text_ids"][0]
  m = spec["masked_pos"][0][1]
  ids, mask, lengths = _xlmr_rows(rs, b, length, vocab_size)
  para_ids, para_mask, _ = _xlmr_rows(rs, b, length, vocab_size)
  masked_pos = np.zeros((b, m), np.int32)
  labels = np.full((b, m), IGNORE_ID, np.int32)
  ids_masked = ids.copy()
  for i in range(b):
    k = int(min(m, max(1, round(lengths[i] * mask_prob))))
    pos = np.sort(rs.choice(np.arange(1, lengths[i]), size=min(k, lengths[i] - 1), replace=False))
    masked_pos[i, : len(pos)] = pos
    labels[i, : len(pos)] = ids[i, pos]
    ids_masked[i, pos] = vocab_size - 1
  out = dict(
    text_ids=ids,
    text_mask=mask,
    para_ids=para_ids,
    para_mask=para_mask,
    text_ids_masked=ids_masked,
    masked_pos=masked_pos,
    mlm_labels=labels,
    valid=np.ones((b,), np.float32),
  )
  check_stream("mtext", out, spec)
  return out
