"""What the fine-tuning datasets share: reading the official annotation files, checking records into
counted skips, and one resumable single-stream training iterator.

Each task's data lives in its own module of this package (builder from the official JSON → TFDS,
tf.data training stream, iterator factory); `BUILDERS` maps `tools/build_tfds.py --kind` to them.
"""

import json
import os
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from x2vlm_jax import fs
from x2vlm_jax.data import records
from x2vlm_jax.data.jsonl import BadRecord, load_image
from x2vlm_jax.data.pipeline import StreamDef, TrainIterator, _per_host
from x2vlm_jax.data.streams import pmap
from x2vlm_jax.data.source import StreamSource


def read_annotations(path: str) -> List[Dict]:
  """A JSON array (or JSON lines) of records, local or gs://."""
  text = fs.path(path).read_text()
  try:
    data = json.loads(text)
  except json.JSONDecodeError:
    data = [json.loads(line) for line in text.splitlines() if line.strip()]
  if not isinstance(data, list):
    raise ValueError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
  return data


def field(rec, key, kinds, reason="missing_field"):
  """rec[key] if present and of one of `kinds` (bools never count as ints); else BadRecord."""
  if not isinstance(rec, dict) or key not in rec:
    raise BadRecord(reason, f"no field {key!r}")
  if not isinstance(rec[key], kinds) or isinstance(rec[key], bool):
    raise BadRecord("bad_field_type", f"{key} is {type(rec[key]).__name__}")
  return rec[key]


def skip_or_raise(report, path, index, e: BadRecord, strict: bool):
  if strict:
    raise ValueError(f"{path}: record {index}: {e}") from None
  report.skipped[e.reason] += 1


ROWS_FORMAT = 1


def rows_path(data_dir: str, name: str, split: str) -> str:
  return os.path.join(records.dataset_dir(data_dir, name), f"{split}.rows.json")


def write_split(data_dir: str, name: str, kind: str, split: str, examples: Iterable[Dict],
                rows: List[Dict], total: Optional[int] = None, unit: str = "records") -> None:
  """Stores the split's media records (images or videos, once each) and its training rows, each
  row {"record": index of its media record, ...fields}; `rows` is filled while `examples` is read.
  `total` / `unit`: for the progress lines."""
  w = records.DatasetWriter(data_dir, name, kind)
  w.write_split(split, examples, total, unit)
  w.finish()
  fs.path(rows_path(data_dir, name, split)).write_text(json.dumps({"format": ROWS_FORMAT, "rows": rows}))


class RowsSource:
  """Random access over a split's training rows: row r → its media record with the row's own fields
  (e.g. COCO: the image with ONE of its captions, as the official dataset's __getitem__ returns)."""

  def __init__(self, data_dir: str, name: str, split: str):
    self.source = records.open_source(data_dir, name, split)
    path = rows_path(data_dir, name, split)
    if not fs.path(path).exists():
      raise FileNotFoundError(f"dataset {name}/{split}: no row table {path}; (re)build it with tools/build_tfds.py")
    table = json.loads(fs.path(path).read_text())
    if not isinstance(table, dict) or table.get("format") != ROWS_FORMAT:
      raise ValueError(f"dataset {name}/{split}: {path} is of an older format; rebuild it with tools/build_tfds.py")
    self.rows = table["rows"]

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, r):
    row = self.rows[r]
    rec = dict(self.source[row["record"]])
    rec.update({k: v for k, v in row.items() if k != "record"})
    return rec


def write_media_groups(annotations: str, data_dir: str, name: str, kind: str, split: str,
                       groups: Dict[object, Tuple[str, List]], *, load: Callable, example: Callable,
                       rows: Callable, report: records.BuildReport, strict: bool, what: str = "image") -> None:
  """One record per image/video of `groups` ({key: (path, [items])}, in order), so media shared by
  many annotation rows is stored once. load(path) → the media (BadRecord when missing or corrupt:
  all its items are skipped and counted, or `strict` raises); example(loaded) → the record;
  rows(record index, items) → that record's row dicts (the training order: an epoch is every row
  once, as the official per-row datasets)."""
  table: List[Dict] = []
  written = [0]

  def gen():
    for path, items in groups.values():
      try:
        loaded = load(path)
      except BadRecord as e:
        report.skipped[e.reason] += len(items)
        if strict:
          raise ValueError(f"{annotations}: {what} {path!r}: {e}") from None
        continue
      table.extend({"record": written[0], **row} for row in rows(written[0], items))
      written[0] += 1
      report.written += len(items)
      yield example(loaded)

  write_split(data_dir, name, kind, split, gen(), table, len(groups), f"{what}s")
  report.extra[f"{what}s"] = written[0]


def load_image_record(image_root: str):
  """`load` for images: path (relative to image_root) → the record of FINETUNE_IMAGE_FEATURES."""
  def load(path):
    data, w, h = load_image({"image": path}, "image", True, image_root)
    return {"image": data, "width": np.int32(w), "height": np.int32(h)}
  return load


def transform_and_batch(ds, transform: Callable, cfg, batch_size: int):
  """The per-example augmentation, then fixed-size batches; a corrupt image fails in `transform` and
  is dropped there (the iterator counts it from the positions) unless `cfg.strict`."""
  ds = pmap(ds, transform, cfg)
  if not cfg.strict:
    ds = ds.ignore_errors()
  return ds.batch(batch_size, drop_remainder=True)


def single_stream_iterator(cfg, name: str, *, stream_id: int, opener, build: Callable, spec: Callable,
                           seed: int, process_index: int, process_count: int) -> TrainIterator:
  """A resumable iterator over one fine-tuning stream: `cfg.train` datasets opened with `opener`,
  `build(source, position, counts, skipped, per_host_batch)` → batched tf.data graph,
  `spec(cfg, per_host_batch)` → the batch contract (a function of `specs`, which the task's
  `batch_spec` uses too). Batches come out flat ({field: array})."""
  bt = _per_host(int(cfg.batch_size), process_count, "data.batch_size")
  source = StreamSource(cfg.data_dir, [tuple(d) for d in cfg.train], seed=seed, stream_id=stream_id,
                        process_index=process_index, process_count=process_count, opener=opener)
  return TrainIterator(cfg, {name: StreamDef(source, lambda p, c, s: build(source, p, c, s, bt), spec(cfg, bt))},
                       seed=seed, process_index=process_index, process_count=process_count, flat=True)
