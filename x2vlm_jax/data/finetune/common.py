"""What the fine-tuning datasets share: reading the official annotation files, checking records into
counted skips, and one resumable single-stream training iterator.

Each task's data lives in its own module of this package (builder from the official JSON → TFDS,
tf.data training stream, iterator factory); `BUILDERS` maps `tools/build_tfds.py --kind` to them.
"""

import json
from typing import Callable, Dict, List, Sequence, Tuple

import tensorflow as tf

from x2vlm_jax.data import records
from x2vlm_jax.data.jsonl import BadRecord, load_image
from x2vlm_jax.data.pipeline import StreamDef, TrainIterator, _per_host
from x2vlm_jax.data.source import StreamSource
from x2vlm_jax.data.streams import pmap
from x2vlm_jax.data.text import Tokenizer


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


def task_iterator(cfg, kind: str, *, stream_id: int, opener, stream: Callable, spec: Callable, seed: int,
                  process_index: int, process_count: int, **stream_kw) -> TrainIterator:
  """`single_stream_iterator` for a task module: `stream(source, cfg, tokenizer, position=, counts=,
  skipped=, seed=, batch_size=, **stream_kw)` → its tf.data graph, `spec(batch, image_res, max_tokens)`
  → its batch contract."""
  tokenizer = Tokenizer(cfg.vocab_file, cfg.max_tokens)

  def build(source, position, counts, skipped, batch_size):
    return stream(source, cfg, tokenizer, position=position, counts=counts, skipped=skipped, seed=seed,
                  batch_size=batch_size, **stream_kw)

  return single_stream_iterator(cfg, kind, stream_id=stream_id, opener=opener, build=build,
                                spec_fn=lambda b: spec(b, cfg.image_res, cfg.max_tokens), seed=seed,
                                process_index=process_index, process_count=process_count)


def batch_and_tokenize(ds, cfg, tokenizer: Tokenizer, batch_size: int):
  """Transformed examples (with a cleaned `text`) → batches whose `text` became text_ids/text_mask and
  `valid` (0 for an empty text); a corrupt image is dropped (counted by the iterator) unless strict."""
  if not cfg.strict:
    ds = ds.ignore_errors()
  ds = ds.batch(batch_size, drop_remainder=True)

  def per_batch(b):
    ids, mask = tokenizer(b["text"])
    out = {k: v for k, v in b.items() if k != "text"}
    out.update(text_ids=ids, text_mask=mask, valid=tf.cast(tf.strings.length(b["text"]) > 0, tf.float32))
    return out

  return pmap(ds, per_batch, cfg)


# ------------------------------------------------------------------------ image store + row table

def write_image_store(rows: Sequence[Tuple[int, Tuple[str, ...], object]], annotations: str, image_root: str,
                      data_dir: str, name: str, split: str, report: records.BuildReport, strict: bool,
                      check: Callable = None) -> int:
  """Tasks with several rows per image, or several images per row (grounding, NLVR2).

  rows: (annotation record number, the row's image paths, the row's payload: JSON-serialisable).
  Every distinct image is read once and stored as one record {image, width, height}; a row whose
  image is missing or corrupt is skipped and counted (`image_not_found` / `corrupt_image`, once per
  row). The table `<split>.rows.json` holds [[image record, ...], payload] per written row, in the
  annotation order. Returns the number of images written."""
  index: Dict[str, object] = {}   # path → record number, or the BadRecord of an unreadable image
  order: List[str] = []
  for _, paths, _ in rows:
    for path in paths:
      if path not in index:
        index[path] = None
        order.append(path)
  sizes: Dict[str, Tuple[int, int]] = {}

  def gen():
    for path in order:
      try:
        data, w, h = load_image({"image": path}, "image", True, image_root)
      except BadRecord as e:
        index[path] = e
        continue
      index[path] = len(sizes)
      sizes[path] = (w, h)
      yield {"image": data, "width": w, "height": h}

  w = records.DatasetWriter(data_dir, name, "image_store")
  w.write_split(split, gen())
  w.finish()
  table = []
  for i, paths, payload in rows:
    bad = [index[p] for p in paths if isinstance(index[p], BadRecord)]
    if bad:
      skip_or_raise(report, annotations, i, BadRecord(bad[0].reason, f"image {paths}: {bad[0]}"), strict)
      continue
    if check is not None:
      try:
        check(payload, [sizes[p] for p in paths])
      except BadRecord as e:
        skip_or_raise(report, annotations, i, e, strict)
        continue
    table.append([[index[p] for p in paths], payload])
    report.written += 1
  with tf.io.gfile.GFile(records.row_table_path(data_dir, name, split), "w") as f:
    json.dump(table, f)
  return len(sizes)


class RowTable:
  """Random access over a row table: row r → `make(row images' stored records, payload)`."""

  def __init__(self, data_dir: str, name: str, split: str, make: Callable, kind: str):
    self.source = records.open_source(data_dir, name, split)
    path = records.row_table_path(data_dir, name, split)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"dataset {name}/{split}: no row table {path}; build it with "
                              f"tools/build_tfds.py --kind {kind}")
    with tf.io.gfile.GFile(path) as f:
      self.rows = json.load(f)
    self.make = make

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, r):
    images, payload = self.rows[r]
    return self.make([self.source[i] for i in images], payload)
