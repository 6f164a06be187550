"""What the fine-tuning datasets share: reading the official annotation files, checking records into
counted skips, and one resumable single-stream training iterator.

Each task's data lives in its own module of this package (builder from the official JSON → TFDS,
tf.data training stream, iterator factory); `BUILDERS` maps `tools/build_tfds.py --kind` to them.
"""

import io
import json
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from x2vlm_jax.data import records
from x2vlm_jax.data.jsonl import BadRecord, load_image
from x2vlm_jax.data.pipeline import StreamDef, TrainIterator, _per_host
from x2vlm_jax.data.streams import pmap
from x2vlm_jax.data.source import StreamSource


def read_annotations(path: str) -> List[Dict]:
  """A JSON array (or JSON lines) of records, local or gs://."""
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
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


def write_image_groups(annotations: str, image_root: str, data_dir: str, name: str, kind: str, split: str,
                       groups: Dict[object, Tuple[str, List]], *, encode: Callable, rows: Callable,
                       report: records.BuildReport, strict: bool, rows_name: str = "caption") -> None:
  """Writes one record per image of `groups` ({key: (image path, [items])}, in order), so an image
  shared by many annotation rows is stored once.

  encode(record index, items) → the record's fields besides image/width/height; rows(record index,
  items) → that record's rows of the split's row table (the training order: an epoch is every row
  once, as the official per-row datasets), saved as `<split>.<rows_name>_rows.npy`. An image that is
  missing or does not decode skips all its items (counted by reason; `strict` raises instead)."""
  table: List[Sequence[int]] = []
  written = [0]

  def gen():
    for image, items in groups.values():
      try:
        data, w, h = load_image({"image": image}, "image", True, image_root)
      except BadRecord as e:
        report.skipped[e.reason] += len(items)
        if strict:
          raise ValueError(f"{annotations}: image {image!r}: {e}") from None
        continue
      record = written[0]
      written[0] += 1
      table.extend(rows(record, items))
      report.written += len(items)
      yield {**encode(record, items), "image": data, "width": np.int32(w), "height": np.int32(h)}

  w = records.DatasetWriter(data_dir, name, kind)
  w.write_split(split, gen())
  w.finish()
  width = len(table[0]) if table else 2
  buf = io.BytesIO()
  np.save(buf, np.asarray(table, np.int32).reshape(-1, width))
  with tf.io.gfile.GFile(records.rows_path(data_dir, name, split, rows_name), "wb") as f:
    f.write(buf.getvalue())
  report.extra["images"] = written[0]


def load_rows(data_dir: str, name: str, split: str, rows_name: str, kind: str) -> np.ndarray:
  path = records.rows_path(data_dir, name, split, rows_name)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"dataset {name}/{split}: no {rows_name}-row table {path}; build it with "
                            f"tools/build_tfds.py --kind {kind}")
  with tf.io.gfile.GFile(path, "rb") as f:
    return np.load(io.BytesIO(f.read()))


def transform_and_batch(ds, transform: Callable, cfg, batch_size: int):
  """The per-example augmentation, then fixed-size batches; a corrupt image fails in `transform` and
  is dropped there (the iterator counts it from the positions) unless `cfg.strict`."""
  ds = pmap(ds, transform, cfg)
  if not cfg.strict:
    ds = ds.ignore_errors()
  return ds.batch(batch_size, drop_remainder=True)


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
