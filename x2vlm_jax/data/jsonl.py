"""Validation of the official JSON-lines pretraining records (docs/reference.md §4.1) into stored examples.

`convert_*` return (example, box_drops) or raise BadRecord(reason, detail); the builder counts
reasons, or re-raises with file and line in --strict mode.
"""

import base64
import binascii
import io
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
from absl import logging

from x2vlm_jax import fs
from x2vlm_jax.data import records
from x2vlm_jax.data.annotations import BadRecord
from x2vlm_jax.data.text import pre_caption_py

TF_DECODABLE = {"JPEG", "PNG", "GIF", "BMP"}


def _texts(value, field: str, max_words: int, languages: Optional[Sequence[str]] = None) -> List[str]:
  """str | list[str] | dict[lang → str] → the non-empty alternatives (after pre_caption).

  A dict holds one caption per language (the multilingual CCLM data); each language is one alternative,
  so the pipeline's uniform draw over alternatives is the official uniform draw over languages
  (`pretrain_dataset_multilingual.py: get_caption`). `languages` keeps only those (official
  `language_chosen`, applied once at build time here)."""
  if isinstance(value, str):
    vals = [value]
  elif isinstance(value, list):
    vals = value
  elif isinstance(value, dict):
    vals = [v for k, v in sorted(value.items()) if not languages or k in languages]
  else:
    raise BadRecord("bad_field_type", f"{field} is {type(value).__name__}")
  if not all(isinstance(v, str) for v in vals):
    raise BadRecord("bad_field_type", f"{field} holds a non-string")
  return [v.strip() for v in vals if pre_caption_py(v, max_words)]


def load_image(rec: Dict, image_key: str, image_is_path: bool, image_root: str) -> Tuple[bytes, int, int]:
  if image_key not in rec:
    raise BadRecord("missing_image", f"no field {image_key!r}")
  value = rec[image_key]
  if not isinstance(value, str):
    raise BadRecord("bad_field_type", f"{image_key} is {type(value).__name__}")
  if image_is_path:
    path = value if "://" in value or os.path.isabs(value) else os.path.join(image_root, value)
    try:
      data = fs.path(path).read_bytes()
    except (tf.errors.NotFoundError, OSError) as e:
      raise BadRecord("image_not_found", path) from e
  else:
    try:
      data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
      raise BadRecord("bad_base64", str(e)) from e
  return check_image(data)


def check_image(data: bytes) -> Tuple[bytes, int, int]:
  """Fully decodes once; formats tf cannot decode are re-encoded as PNG. A truncated file is kept as
  the official loaders keep it (`ImageFile.LOAD_TRUNCATED_IMAGES = True`): PIL's partial decode,
  stored as PNG so training reads exactly those pixels (tf would refuse the truncated bytes); it is
  logged and counted (`records.TRUNCATED`, printed by the builds as `truncated_images`)."""
  from x2vlm_jax.inference.images import open_image

  try:
    im, truncated = open_image(data)
    fmt = im.format
    w, h = im.size
  except Exception as e:  # noqa: BLE001 — PIL raises many types for bad bytes
    raise BadRecord("corrupt_image", f"{type(e).__name__}: {e}") from e
  if w < 1 or h < 1:
    raise BadRecord("corrupt_image", f"size {w}x{h}")
  if truncated:
    records.TRUNCATED.append(w * h)
    logging.warning("truncated image (%dx%d) kept as the official loaders decode it", w, h)
  if fmt not in TF_DECODABLE or truncated:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG")
    data = buf.getvalue()
  return data, w, h


def convert_image_text(rec, *, image_key, caption_key, image_is_path, image_root, max_words, languages=None):
  if caption_key not in rec:
    raise BadRecord("empty_caption", f"no field {caption_key!r}")
  caps = _texts(rec[caption_key], caption_key, max_words, languages)
  if not caps:
    raise BadRecord("empty_caption")
  data, w, h = load_image(rec, image_key, image_is_path, image_root)
  return records.image_example(data, w, h, caption=caps), {}


def _box(bb):
  """The official reader's box: `int()` of each of x, y, w, h (truncation toward zero)."""
  if not (
    isinstance(bb, (list, tuple))
    and len(bb) == 4
    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bb)
  ):
    return None, "box_bad_type"
  # Stored as float32, exact for integers up to 2^24; anything larger is not a pixel box.
  if any(abs(v) >= 2**24 for v in bb):
    return None, "box_bad_type"
  return [int(v) for v in bb], None


def convert_region(rec, *, image_key, caption_key, image_is_path, image_root, max_words, languages=None):
  """Element boxes are stored as the official reader sees them (int, NOT clipped): a box partly outside
  the image still counts its full area in the >50%-visible test, and one outside or empty can still be
  drawn as the crop anchor, which skips that read (the pipeline counts it). A record with no element
  that can be an anchor (caption-only records included) is never used by the official region reader
  (`random.choice(elems)` raises or the anchor check fails every time) and is skipped here.

  Multilingual elements ({lang: text} captions and attributes): caption and attribute languages are drawn
  independently in the pipeline, i.e. the official `code_switch: True` of the CCLM config, which
  prepends the attribute in a random language. Deviation: the whole attribute is prepended; the
  official line `self.get_caption(elem['attributes'])[0]` takes the first character of that string."""
  del caption_key  # region records always use `caption` (docs/reference.md §4.1)
  caps = _texts(rec["caption"], "caption", max_words, languages) if "caption" in rec else []
  elems = rec.get("elems", [])
  if not isinstance(elems, list):
    raise BadRecord("bad_field_type", f"elems is {type(elems).__name__}")
  data, w, h = load_image(rec, image_key, image_is_path, image_root)
  kept, drops = [], {}
  for e in elems:
    reason = None
    if not isinstance(e, dict):
      reason = "box_bad_type"
    else:
      box, reason = _box(e.get("bb"))
      if reason is None:
        try:
          texts = _texts(e.get("caption", ""), "elems.caption", max_words, languages)
          attrs = _texts(e.get("attributes", []), "elems.attributes", max_words, languages)
        except BadRecord:
          texts, reason = [], "box_bad_type"
        if reason is None and not texts:
          reason = "box_empty_caption"
    if reason:
      drops[reason] = drops.get(reason, 0) + 1
    else:
      kept.append((box, texts, attrs))
  if not any(records.valid_anchor(b, w, h) for b, _, _ in kept):
    raise BadRecord("no_valid_anchor", f"{len(elems)} elems, none inside the image with a caption")
  return records.image_example(data, w, h, caption=caps, elems=kept), drops


def convert_video(rec, *, image_key, caption_key, image_is_path, image_root, max_words):
  """Single-clip records; multi-clip records are expanded by `split_clips` before this."""
  del image_key, image_is_path, image_root
  frames = rec.get("video_frames")
  if not isinstance(frames, list) or not frames:
    raise BadRecord("missing_image", "video_frames missing or empty")
  caps = _texts(rec.get(caption_key, ""), caption_key, max_words)
  if not caps:
    raise BadRecord("empty_caption")
  out = []
  for f in frames:
    if not isinstance(f, str):
      raise BadRecord("bad_field_type", "video_frames holds a non-string")
    try:
      data = base64.b64decode(f, validate=True)
    except (binascii.Error, ValueError) as e:
      raise BadRecord("bad_base64", str(e)) from e
    out.append(check_image(data)[0])
  return {"frames": out, "caption": records.ALT_SEP.join(caps)}, {}


def split_clips(rec):
  """A multi-clip video record (list of clips + per-clip captions) → one record per clip;
  "[Music]" clips are dropped (docs/reference.md §2.4)."""
  frames = rec.get("video_frames")
  if isinstance(frames, list) and frames and isinstance(frames[0], list):
    texts = rec.get("text")
    if not isinstance(texts, list) or len(texts) != len(frames):
      raise BadRecord("bad_field_type", "multi-clip record: text must list one caption per clip")
    return [{"video_frames": f, "text": t} for f, t in zip(frames, texts) if t != "[Music]"]
  return [rec]


def convert_mtext(rec, *, max_words, source_key="source_text", target_key="target_text", **unused):
  """A parallel sentence pair (official `ParaTextDataset`: `source_key` / `target_key`, WikiMatrix). A pair
  with an empty side after `pre_caption` is skipped (officially the tokenizer assertion drops it per read)."""
  del unused  # no image, no caption key, no language tags
  out = {}
  for key, field in ((source_key, "source"), (target_key, "target")):
    value = rec.get(key)
    if not isinstance(value, str):
      raise BadRecord("empty_caption" if value is None else "bad_field_type", f"{key} is {type(value).__name__}")
    if not pre_caption_py(value, max_words):
      raise BadRecord("empty_caption", f"{key} is empty")
    out[field] = value.strip()
  return out, {}


CONVERTERS = {
  "image_text": convert_image_text,
  "region": convert_region,
  "video": convert_video,
  "mtext": convert_mtext,
}
