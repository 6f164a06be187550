"""The official fine-tuning annotation files (docs/reference.md §4.2), read and checked without tensorflow.

Both sides read them here: the dataset builders of `x2vlm_jax.data.finetune` (a record they cannot use
is a counted skip, or with `strict` an error) and the evaluators of `x2vlm_jax.evaluation` (every record
is checked up front, and the first bad one is a ValueError naming the file, the record and the field,
before any model work starts).

Files are JSON arrays (JSON lines are accepted too), local or gs:// (through `x2vlm_jax.fs`). A record's
problem is a `BadRecord(reason, detail)`; the reasons are the builders' skip counters.
"""

import json
import math
import os
from typing import Any, Dict, List, Sequence, Tuple

from etils import epath

from x2vlm_jax import fs

MISSING_FIELD = "missing_field"
BAD_FIELD_TYPE = "bad_field_type"


class BadRecord(Exception):
  """A record that cannot be used, and why: `reason` (a skip counter's name) and `detail`."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason, self.detail = reason, detail

  def located(self, path: str, index: int) -> ValueError:
    """The evaluators' error: this record of that file, and what is wrong with it."""
    if self.reason == MISSING_FIELD:
      return ValueError(f"annotations {path!r}: record {index} has {self.detail}")
    return ValueError(f"annotations {path!r}: record {index}: {self.detail}")


def read_records(path: str, *, objects_only: bool = False) -> List[Any]:
  """The records of a JSON array or JSON-lines file. A file that is missing, is neither, or holds one
  object is a ValueError naming it; with `objects_only` (the evaluators) so is a record that is not an
  object (the builders count those as records without their fields)."""
  p = fs.path(path)
  if not p.exists():
    raise ValueError(f"annotations: {path!r} does not exist")
  text = p.read_text()
  try:
    data = json.loads(text)
  except json.JSONDecodeError:
    try:
      data = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
      raise ValueError(f"annotations {path!r}: neither a JSON array nor JSON lines ({e})") from e
  if isinstance(data, dict):
    raise ValueError(f"annotations {path!r}: expected a list of records, got an object with keys {sorted(data)[:5]}")
  if not isinstance(data, list):
    raise ValueError(f"annotations {path!r}: expected a list of records, got {type(data).__name__}")
  if objects_only:
    for i, rec in enumerate(data):
      if not isinstance(rec, dict):
        raise ValueError(f"annotations {path!r}: record {i} is {type(rec).__name__}, expected an object")
  return data


def field(rec, key: str, kinds, *, non_empty: bool = False):
  """rec[key] if present and of one of `kinds` (a bool counts only when bool is one of them; a list
  must hold strings); else a BadRecord."""
  kinds = kinds if isinstance(kinds, tuple) else (kinds,)
  if not isinstance(rec, dict) or key not in rec:
    fields = f" (fields: {sorted(rec)})" if isinstance(rec, dict) else ""
    raise BadRecord(MISSING_FIELD, f"no field {key!r}{fields}")
  value = rec[key]
  if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
    expected = " or ".join(k.__name__ for k in kinds)
    raise BadRecord(BAD_FIELD_TYPE, f"{key!r} is {type(value).__name__}, expected {expected}")
  if isinstance(value, list) and not all(isinstance(v, str) for v in value):
    raise BadRecord(BAD_FIELD_TYPE, f"{key!r} must hold strings")
  if non_empty and not value:
    raise BadRecord("empty_field", f"{key!r} is empty")
  return value


def require(path: str, records: Sequence[Dict[str, Any]], key: str, kinds, *, non_empty: bool = False) -> None:
  """Every record has `key` as `field` wants it; the first that has not is the evaluators' ValueError."""
  for i, rec in enumerate(records):
    try:
      field(rec, key, kinds, non_empty=non_empty)
    except BadRecord as e:
      raise e.located(path, i) from None


def box_xywh(value) -> List[float]:
  """A box [x, y, w, h] in pixels: four finite numbers with w, h ≥ 0; else a BadRecord. (Whether it lies
  inside its image needs the image's size: the grounding builder checks that.)"""
  if (
    not isinstance(value, (list, tuple))
    or len(value) != 4
    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
  ):
    raise BadRecord(
      BAD_FIELD_TYPE,
      f"'bbox' must be [x, y, w, h] numbers, got {value!r} "
      "(official files keep the box in REFER: convert them with tools/refer_to_grounding.py)",
    )
  if not all(math.isfinite(v) for v in value):
    raise BadRecord("bad_box", f"'bbox' {list(value)} is not finite")
  if value[2] < 0 or value[3] < 0:
    raise BadRecord("bad_box", f"'bbox' {list(value)} has a negative size")
  return [float(v) for v in value]


def nlvr2_record(rec) -> Tuple[Tuple[str, str], str, int]:
  """An NLVR2 record {images: [left, right], sentence, label} → ((left, right), sentence, label), the
  label by the official rule (nlvr_dataset.py): True or "True" → 1, False or "False" → 0, else bad."""
  images = field(rec, "images", list)
  if len(images) != 2 or not all(images):
    raise BadRecord(BAD_FIELD_TYPE, f"'images' must hold two paths, got {images!r}")
  sentence = field(rec, "sentence", str)
  if "label" not in rec:
    raise BadRecord(MISSING_FIELD, f"no field 'label' (fields: {sorted(rec)})")
  label = rec["label"]
  if label is True or label == "True":
    return (images[0], images[1]), sentence, 1
  if label is False or label == "False":
    return (images[0], images[1]), sentence, 0
  raise BadRecord("bad_label", f'unsupported label {label!r} (expected true/false or "True"/"False")')


def image_path(image_root: str, name: str) -> str:
  """`image` fields are relative to image_root (absolute paths and URLs are kept)."""
  if not image_root or "://" in name or os.path.isabs(name):
    return name
  return str(epath.Path(image_root) / name)  # kept as given (relative stays relative in predictions)


def as_list(value) -> List[str]:
  return [value] if isinstance(value, str) else list(value)


def read_split_files(annotations: str, splits: str = "") -> List[Tuple[str, str, List[Dict[str, Any]]]]:
  """`annotations`: one file or several, comma-separated (the official `test_file: [val, test]`);
  `splits`: their names, comma-separated (default: each file's stem) → [(split, path, records)]."""
  paths = [p.strip() for p in annotations.split(",") if p.strip()]
  if not paths:
    raise ValueError("annotations: no file given")
  names = (
    [n.strip() for n in splits.split(",")] if splits else [os.path.splitext(os.path.basename(p))[0] for p in paths]
  )
  if len(names) != len(paths):
    raise ValueError(f"splits {splits!r}: {len(names)} names for {len(paths)} annotation files")
  return [(name, path, read_records(path, objects_only=True)) for name, path in zip(names, paths)]


XVNLI_LABELS = {"contradiction": 0, "entailment": 1, "neutral": 2}  # official xvnli_dataset.label_mapper


def xvnli_record(rec):
  """(image file, hypothesis, label id) of an official XVNLI record, or BadRecord."""
  if not isinstance(rec, dict):
    raise BadRecord("bad_field_type", f"record is {type(rec).__name__}")
  for key in ("Flikr30kID", "sentence2", "gold_label"):
    if key not in rec:
      raise BadRecord("missing_field", f"no field {key!r}")
  if not isinstance(rec["sentence2"], str) or not isinstance(rec["Flikr30kID"], (str, int)):
    raise BadRecord("bad_field_type", "sentence2 / Flikr30kID")
  if rec["gold_label"] not in XVNLI_LABELS:
    raise BadRecord("bad_label", repr(rec["gold_label"]))
  return f"{rec['Flikr30kID']}.jpg", rec["sentence2"], XVNLI_LABELS[rec["gold_label"]]


def iglue_retrieval_records(records: List[Any], *, train: bool) -> List[Any]:
  """IGLUE xFlickr&CO / Flickr30K records {"sentences": [...], "id", "img_path"} (official
  xflickrco_dataset.py) → the official retrieval format: train, one row per sentence {"image", "caption",
  "image_id"}; test, {"image", "caption": [...]} (an image whose sentences are all empty is dropped, as
  officially). Records already in the retrieval format pass unchanged."""
  if not records or not isinstance(records[0], dict) or "sentences" not in records[0]:
    return records
  out = []
  for rec in records:
    sentences = rec.get("sentences") or []
    if train:
      out += [{"image": rec["img_path"], "caption": s, "image_id": rec["id"]} for s in sentences]
    elif any(sentences):
      out.append({"image": rec["img_path"], "caption": list(sentences)})
  return out
