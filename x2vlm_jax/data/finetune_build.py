"""Official fine-tuning annotation files (JSON arrays, spec §4.2) → TFDS/ArrayRecord datasets.

Images are read from `image_root` (local or gs://), fully decoded once to catch corrupt files, and
stored encoded. A bad record is skipped and counted by reason (or, with strict, stops the build
naming the file and record). One builder per task kind; `tools/build_tfds.py --kind KIND` calls them.
"""

import io
import json
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from x2vlm_jax.data import records
from x2vlm_jax.data.jsonl import BadRecord, load_image
from x2vlm_jax.data.text_clean import pre_caption


def read_annotations(path: str) -> List[Dict]:
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    data = json.loads(text)
  except json.JSONDecodeError:
    data = [json.loads(line) for line in text.splitlines() if line.strip()]
  if not isinstance(data, list):
    raise ValueError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
  return data


def _field(rec, key, kinds, reason="missing_field"):
  if not isinstance(rec, dict) or key not in rec:
    raise BadRecord(reason, f"no field {key!r}")
  if not isinstance(rec[key], kinds) or isinstance(rec[key], bool):
    raise BadRecord("bad_field_type", f"{key} is {type(rec[key]).__name__}")
  return rec[key]


def _skip_or_raise(report, path, index, e: BadRecord, strict: bool):
  if strict:
    raise ValueError(f"{path}: record {index}: {e}") from None
  report.skipped[e.reason] += 1


def build_retrieval(annotations: str, image_root: str, data_dir: str, name: str, *, split: str = "train",
                    strict: bool = False, max_words: int = 30) -> records.BuildReport:
  """Rows {image, caption, image_id} (one per caption) → one record per image + the caption-row table.

  The dense image id follows the official first-appearance order of `image_id` (spec §4.2); captions
  that are empty after `pre_caption` are skipped (`empty_caption`), like an image that cannot be read
  (its rows are all skipped, `image_not_found` / `corrupt_image`)."""
  rows = read_annotations(annotations)
  report = records.BuildReport()
  by_id: Dict[object, Tuple[str, List[str]]] = {}
  order: List[object] = []
  for i, rec in enumerate(rows):
    try:
      image = _field(rec, "image", str)
      caption = _field(rec, "caption", str)
      image_id = _field(rec, "image_id", (str, int))
      if not pre_caption(caption, max_words):
        raise BadRecord("empty_caption")
      if image_id in by_id and by_id[image_id][0] != image:
        raise BadRecord("bad_field_type", f"image_id {image_id!r} names two images")
    except BadRecord as e:
      _skip_or_raise(report, annotations, i, e, strict)
      continue
    if image_id not in by_id:
      by_id[image_id] = (image, [])
      order.append(image_id)
    by_id[image_id][1].append(caption)

  examples, table = [], []

  def gen():
    for image_id in order:
      image, caps = by_id[image_id]
      try:
        data, w, h = load_image({"image": image}, "image", True, image_root)
      except BadRecord as e:
        report.skipped[e.reason] += len(caps)
        if strict:
          raise ValueError(f"{annotations}: image {image!r}: {e}") from None
        continue
      record = len(examples)
      examples.append(image_id)
      table.extend((record, j) for j in range(len(caps)))
      report.written += len(caps)
      yield {"image": data, "caption": records.ALT_SEP.join(caps), "image_id": np.int32(record),
             "width": np.int32(w), "height": np.int32(h)}

  w = records.DatasetWriter(data_dir, name, "retrieval")
  w.write_split(split, gen())
  w.finish()
  buf = io.BytesIO()
  np.save(buf, np.asarray(table, np.int32).reshape(-1, 2))
  with tf.io.gfile.GFile(records.rows_path(data_dir, name, split), "wb") as f:
    f.write(buf.getvalue())
  report.extra["images"] = len(examples)
  return report


class CaptionRows:
  """Random access over caption rows of a retrieval split: row r → its image record with the one
  caption of that row (what the official dataset's __getitem__ returns)."""

  def __init__(self, data_dir: str, name: str, split: str):
    self.source = records.open_source(data_dir, name, split)
    path = records.rows_path(data_dir, name, split)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"dataset {name}/{split}: no caption-row table {path}; build it with "
                              "tools/build_tfds.py --kind retrieval")
    with tf.io.gfile.GFile(path, "rb") as f:
      self.rows = np.load(io.BytesIO(f.read()))

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, r):
    record, j = (int(x) for x in self.rows[r])
    rec = dict(self.source[record])
    caps = rec["caption"].decode("utf-8") if isinstance(rec["caption"], bytes) else rec["caption"]
    rec["caption"] = caps.split(records.ALT_SEP)[j]
    return rec


BUILDERS = {"retrieval": build_retrieval}
