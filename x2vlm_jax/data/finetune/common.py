"""What the fine-tuning datasets share: records turned into counted skips (the official annotation files
are read by `x2vlm_jax.data.annotations`, as the evaluators read them), media stored once with a row
table, and one resumable single-stream training iterator.

Each task's data lives in its own module of this package (builder from the official JSON → TFDS,
tf.data training stream, iterator factory); the task names its module and builder
(`x2vlm_jax.tasks`: `tools/build_tfds.py --kind <task>`).
"""

import json
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from x2vlm_jax import fs
from x2vlm_jax.data import records
from x2vlm_jax.data.annotations import BadRecord
from x2vlm_jax.data.jsonl import load_image
from x2vlm_jax.data.pipeline import StreamDef, TrainIterator, _per_host
from x2vlm_jax.data.source import StreamSource
from x2vlm_jax.data.streams import pmap
from x2vlm_jax.data.text import Tokenizer


def skip_or_raise(report, path, index, e: BadRecord, strict: bool):
  if strict:
    raise ValueError(f"{path}: record {index}: {e}") from None
  report.skipped[e.reason] += 1


ROWS_FORMAT = 1


def rows_path(data_dir: str, name: str, split: str) -> str:
  return os.path.join(records.dataset_dir(data_dir, name), f"{split}.rows.json")


def write_split(
  data_dir: str,
  name: str,
  kind: str,
  split: str,
  examples: Iterable[Dict],
  rows: List[Dict],
  total: Optional[int] = None,
  unit: str = "records",
) -> None:
  """Stores the split's media records (images or videos, once each) and its training rows, each
  row {"record": index of its media record, ...fields}; `rows` is filled while `examples` is read.
  `total` / `unit`: for the progress lines."""
  w = records.DatasetWriter(data_dir, name, kind)
  w.write_split(split, examples, total, unit)
  w.finish()
  fs.path(rows_path(data_dir, name, split)).write_text(json.dumps({"format": ROWS_FORMAT, "rows": rows}))


class RowsSource:
  """Random access over a split's training rows: row r → its media record with the row's own fields
  (e.g. COCO: the image with ONE of its captions, as the official dataset's __getitem__ returns); a
  row of several media ({"records": [i, j], ...}) gets each record's fields numbered (image0, image1)."""

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
    if "records" in row:  # several media per row (NLVR2's image pair): fields image0, image1, ...
      rec = {f"{k}{j}": v for j, i in enumerate(row["records"]) for k, v in self.source[i].items()}
    else:
      rec = dict(self.source[row["record"]])
    rec.update({k: v for k, v in row.items() if k not in ("record", "records")})
    return rec


def write_media_groups(
  annotations: str,
  data_dir: str,
  name: str,
  kind: str,
  split: str,
  groups: Dict[object, Tuple[str, List]],
  *,
  load: Callable,
  example: Callable,
  rows: Callable,
  report: records.BuildReport,
  strict: bool,
  what: str = "image",
) -> None:
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


def write_image_rows(
  annotations: str,
  image_root: str,
  data_dir: str,
  name: str,
  split: str,
  rows: Sequence[Tuple[int, Tuple[str, ...], Dict]],
  report: records.BuildReport,
  strict: bool,
  check: Callable = None,
) -> None:
  """Rows that name their images themselves (NLVR2: two per row; grounding: the image and its box):
  rows = (annotation record number, the row's image paths, the row's fields). Every distinct image is
  stored once; a row with a missing or corrupt image is skipped and counted (once per row), as is one
  that `check(fields, [(width, height) of its images])` rejects with a BadRecord. The table keeps the
  annotation order: {"record": i, ...} for one image, {"records": [i, j], ...} for several."""
  load = load_image_record(image_root)
  index: Dict[str, object] = {}  # path → record number, or the BadRecord of an unreadable image
  for _, paths, _ in rows:
    index.update((p, None) for p in paths if p not in index)
  sizes: Dict[str, Tuple[int, int]] = {}

  table: List[Dict] = []

  def fill_table():
    for i, paths, fields in rows:
      bad = [index[p] for p in paths if isinstance(index[p], BadRecord)]
      try:
        if bad:
          raise BadRecord(bad[0].reason, f"image {paths}: {bad[0]}")
        if check is not None:
          check(fields, [sizes[p] for p in paths])
      except BadRecord as e:
        skip_or_raise(report, annotations, i, e, strict)
        continue
      refs = [index[p] for p in paths]
      table.append({"record": refs[0], **fields} if len(refs) == 1 else {"records": refs, **fields})
      report.written += 1

  def examples():
    for path in list(index):
      try:
        rec = load(path)
      except BadRecord as e:
        index[path] = e
        continue
      index[path] = len(sizes)
      sizes[path] = (int(rec["width"]), int(rec["height"]))
      yield rec
    fill_table()  # every image is read now; write_split writes `table` after this generator ends

  write_split(data_dir, name, "finetune_image", split, examples(), table)
  report.extra["images"] = len(sizes)


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


def single_stream_iterator(
  cfg,
  name: str,
  *,
  stream_id: int,
  opener,
  build: Callable,
  spec: Callable,
  seed: int,
  process_index: int,
  process_count: int,
) -> TrainIterator:
  """A resumable iterator over one fine-tuning stream: `cfg.train` datasets opened with `opener`,
  `build(source, position, counts, skipped, per_host_batch)` → batched tf.data graph,
  `spec(cfg, per_host_batch)` → the batch contract (the task's `spec`, which its `batch_spec` uses
  too). Batches come out flat ({field: array})."""
  bt = _per_host(int(cfg.batch_size), process_count, "data.batch_size")
  source = StreamSource(
    cfg.data_dir,
    [tuple(d) for d in cfg.train],
    seed=seed,
    stream_id=stream_id,
    process_index=process_index,
    process_count=process_count,
    opener=opener,
  )
  return TrainIterator(
    cfg,
    {name: StreamDef(source, lambda p, c, s: build(source, p, c, s, bt), spec(cfg, bt))},
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    flat=True,
  )


def task_iterator(
  cfg,
  kind: str,
  *,
  stream_id: int,
  opener,
  stream: Callable,
  spec: Callable,
  seed: int,
  process_index: int,
  process_count: int,
  **stream_kw,
) -> TrainIterator:
  """`single_stream_iterator` for a task module: `stream(source, cfg, tokenizer, position=, counts=,
  skipped=, seed=, batch_size=, **stream_kw)` → its tf.data graph, `spec` its contract (the task's)."""
  tokenizer = Tokenizer(cfg.vocab_file, cfg.max_tokens)

  def build(source, position, counts, skipped, batch_size):
    return stream(
      source,
      cfg,
      tokenizer,
      position=position,
      counts=counts,
      skipped=skipped,
      seed=seed,
      batch_size=batch_size,
      **stream_kw,
    )

  return single_stream_iterator(
    cfg,
    kind,
    stream_id=stream_id,
    opener=opener,
    build=build,
    spec=spec,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )


def batch_and_tokenize(ds, transform: Callable, cfg, tokenizer: Tokenizer, batch_size: int, count_cut: bool = False):
  """`transform_and_batch`, then the batch's cleaned `text` becomes text_ids/text_mask and `valid`
  (0 for an empty text); with `count_cut` also `captions_cut` (1 for a row cut to max_tokens, from the
  same tokenizer pass)."""
  import tensorflow as tf

  ds = transform_and_batch(ds, transform, cfg, batch_size)

  def per_batch(b):
    ids, mask, cut = tokenizer.encode(b["text"])
    out = {k: v for k, v in b.items() if k != "text"}
    out.update(text_ids=ids, text_mask=mask, valid=tf.cast(tf.strings.length(b["text"]) > 0, tf.float32))
    if count_cut:
      out["captions_cut"] = cut
    return out

  return pmap(ds, per_batch, cfg)


def caption_lengths(cfg, tokenizer: Tokenizer, opener=None, batch: int = 4096) -> np.ndarray:
  """Pieces of every training caption row of `cfg.train` (after `pre_caption` with cfg.max_words), read
  from the row tables alone (no image is opened): what the training stream's tokenizer will see."""
  import tensorflow as tf

  from x2vlm_jax.data.text import pre_caption

  opener = opener or RowsSource
  captions = [row["caption"] for name, split, *_ in cfg.train for row in opener(cfg.data_dir, name, split).rows]
  if not captions:
    return np.zeros((0,), np.int64)
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(captions, tf.string)).batch(batch)
  ds = ds.map(lambda t: tokenizer.pieces(pre_caption(t, cfg.max_words)).row_lengths())
  return np.concatenate([x.numpy() for x in ds])


def report_cut_captions(cfg, tokenizer: Tokenizer, task: str, opener=None) -> Dict[str, int]:
  """Counts (and logs, once per run) the training captions the fixed `max_tokens` cuts, with the
  `data.max_tokens` that would keep every one whole (README deviations: retrieval training captions)."""
  from absl import logging

  lengths = caption_lengths(cfg, tokenizer, opener)
  limit = int(tokenizer.max_tokens) - 2
  out = {
    "captions": int(lengths.size),
    "cut": int((lengths > limit).sum()),
    "longest_tokens": int(lengths.max()) + 2 if lengths.size else 0,
  }
  if out["cut"]:
    logging.warning(
      "%s: %d of %d training captions have more than max_tokens - 2 = %d pieces and are cut to it "
      "(counted per step as train/captions_cut); data.max_tokens=%d keeps every caption whole",
      task,
      out["cut"],
      out["captions"],
      limit,
      out["longest_tokens"],
    )
  else:
    logging.info("%s: none of the %d training captions is cut at max_tokens %d", task, out["captions"], limit + 2)
  return out
