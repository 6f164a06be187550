"""Reading the official fine-tuning annotation files (docs/reference.md §4.2) for evaluation, without tensorflow.

Files are JSON arrays (JSON lines are accepted too), local or gs:// (through epath). Every record is
checked up front: a missing or mistyped field is a ValueError naming the file, the record number and
the field, before any model work starts.
"""

import json
import os
from typing import Any, Dict, List, Sequence, Tuple

from etils import epath

from x2vlm_jax.data.text_clean import image_id_from_name  # noqa: F401  (the evaluators' name for it)


def read_records(path: str) -> List[Dict[str, Any]]:
  p = epath.Path(path)
  if not p.exists():
    raise ValueError(f"annotations: {path!r} does not exist")
  text = p.read_text()
  try:
    data = json.loads(text)
  except json.JSONDecodeError:
    try:  # JSON lines
      data = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
      raise ValueError(f"annotations {path!r}: neither a JSON array nor JSON lines ({e})") from e
  if isinstance(data, dict):
    raise ValueError(f"annotations {path!r}: expected a list of records, got an object with keys {sorted(data)[:5]}")
  for i, rec in enumerate(data):
    if not isinstance(rec, dict):
      raise ValueError(f"annotations {path!r}: record {i} is {type(rec).__name__}, expected an object")
  return data


def require(path: str, records: Sequence[Dict[str, Any]], field: str, kinds, *, non_empty=False) -> None:
  """Every record has `field` of one of `kinds` (a list field must hold strings)."""
  kinds = kinds if isinstance(kinds, tuple) else (kinds,)
  for i, rec in enumerate(records):
    if field not in rec:
      raise ValueError(f"annotations {path!r}: record {i} has no field {field!r} (fields: {sorted(rec)})")
    value = rec[field]
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
      raise ValueError(
        f"annotations {path!r}: record {i}: {field!r} is {type(value).__name__}, expected "
        f"{' or '.join(k.__name__ for k in kinds)}"
      )
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
      raise ValueError(f"annotations {path!r}: record {i}: {field!r} must hold strings")
    if non_empty and not value:
      raise ValueError(f"annotations {path!r}: record {i}: {field!r} is empty")


def image_path(image_root: str, name: str) -> str:
  """`image` fields are relative to image_root (absolute paths and URLs are kept)."""
  if not image_root or "://" in name or os.path.isabs(name):
    return name
  return str(epath.Path(image_root) / name)


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
  return [(name, path, read_records(path)) for name, path in zip(names, paths)]
