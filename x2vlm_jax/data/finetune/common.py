"""What the fine-tuning datasets share: reading the official annotation files, checking records into
counted skips, and one resumable single-stream training iterator.

Each task's data lives in its own module of this package (builder from the official JSON → TFDS,
tf.data training stream, iterator factory); `BUILDERS` maps `tools/build_tfds.py --kind` to them.
"""

import json
import os
from typing import Callable, Dict, Iterable, List

from x2vlm_jax import fs
from x2vlm_jax.data import records
from x2vlm_jax.data.jsonl import BadRecord
from x2vlm_jax.data.pipeline import StreamDef, TrainIterator, _per_host
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
                rows: List[Dict]) -> None:
  """Stores the split's media records (images or videos, once each) and its training rows, each
  row {"record": index of its media record, ...fields}; `rows` is filled while `examples` is read."""
  w = records.DatasetWriter(data_dir, name, kind)
  w.write_split(split, examples)
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


def single_stream_iterator(cfg, name: str, *, stream_id: int, opener, build: Callable, spec_fn: Callable,
                           seed: int, process_index: int, process_count: int) -> TrainIterator:
  """A resumable iterator over one fine-tuning stream: `cfg.train` datasets opened with `opener`,
  `build(source, position, counts, skipped, per_host_batch)` → batched tf.data graph,
  `spec_fn(per_host_batch)` → the batch contract. Batches come out flat ({field: array})."""
  bt = _per_host(int(cfg.batch_size), process_count, "data.batch_size")
  source = StreamSource(cfg.data_dir, [tuple(d) for d in cfg.train], seed=seed, stream_id=stream_id,
                        process_index=process_index, process_count=process_count, opener=opener)
  return TrainIterator(cfg, {name: StreamDef(source, lambda p, c, s: build(source, p, c, s, bt), spec_fn(bt))},
                       seed=seed, process_index=process_index, process_count=process_count, flat=True)
