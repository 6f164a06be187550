"""Stored-record schema and a sharded ArrayRecord writer producing a TFDS dataset directory.

Images stay encoded (bytes) so decoding happens in the tf.data graph. Alternatives of a caption
(a list in the JSON source) are joined with ALT_SEP and one is drawn per use in the graph; this keeps
the schema flat, which `tfds.data_source` reads back without any custom builder code.
"""

import collections
import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordWriter

from x2vlm_jax.progress import Progress

ALT_SEP = "\x1f"
VERSION = "1.0.0"

# One schema for image–text and region records: an image–text record simply has no elements.
IMAGE_FEATURES = tfds.features.FeaturesDict({
    "image": tfds.features.Tensor(shape=(), dtype=np.object_),          # encoded bytes
    "caption": tfds.features.Tensor(shape=(), dtype=np.object_),        # "" = none (region only)
    "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),   # x, y, w, h pixels
    "elem_caption": tfds.features.Tensor(shape=(None,), dtype=np.object_),
    "elem_attrs": tfds.features.Tensor(shape=(None,), dtype=np.object_),  # "" = no attribute
    "width": tfds.features.Tensor(shape=(), dtype=np.int32),
    "height": tfds.features.Tensor(shape=(), dtype=np.int32),
})

VIDEO_FEATURES = tfds.features.FeaturesDict({
    "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),    # encoded frames, in order
    "caption": tfds.features.Tensor(shape=(), dtype=np.object_),
})


# Fine-tuning retrieval (spec §4.2): one record per IMAGE with all its captions; the training order
# is over caption rows (an epoch = every caption once, as the official dataset), kept in a side file
# `<split>.caption_rows.npy` of (record, caption index) pairs, so images are stored once.
RETRIEVAL_FEATURES = tfds.features.FeaturesDict({
    "image": tfds.features.Tensor(shape=(), dtype=np.object_),
    "caption": tfds.features.Tensor(shape=(), dtype=np.object_),        # ALT_SEP-joined captions
    "image_id": tfds.features.Tensor(shape=(), dtype=np.int32),         # dense id (ITC/ITM positives)
    "width": tfds.features.Tensor(shape=(), dtype=np.int32),
    "height": tfds.features.Tensor(shape=(), dtype=np.int32),
})


def features_for(kind: str) -> tfds.features.FeaturesDict:
  if kind in ("image_text", "region", "image"):
    return IMAGE_FEATURES
  if kind == "video":
    return VIDEO_FEATURES
  if kind == "retrieval":
    return RETRIEVAL_FEATURES
  raise ValueError(f"kind: expected image_text/region/video/retrieval, got {kind!r}")


def rows_path(data_dir: str, name: str, split: str) -> str:
  return os.path.join(dataset_dir(data_dir, name), f"{split}.caption_rows.npy")


def dataset_dir(data_dir: str, name: str) -> str:
  return os.path.join(data_dir, name, VERSION)


def image_example(image: bytes, width: int, height: int, caption=(), elems=()) -> Dict:
  """elems: iterable of (box_xywh, [captions], [attributes])."""
  elems = list(elems)
  return {
      "image": image,
      "caption": ALT_SEP.join(caption),
      "boxes": np.asarray([e[0] for e in elems], np.float32).reshape(-1, 4),
      "elem_caption": [ALT_SEP.join(e[1]) for e in elems],
      "elem_attrs": [ALT_SEP.join(e[2]) for e in elems],
      "width": np.int32(width), "height": np.int32(height),
  }


class DatasetWriter:
  """Writes splits of one dataset as fixed-size ArrayRecord shards, then the TFDS metadata."""

  def __init__(self, data_dir: str, name: str, kind: str, examples_per_shard: int = 2000):
    self.root = dataset_dir(data_dir, name)
    self.name = name
    self.features = features_for(kind)
    self.examples_per_shard = examples_per_shard
    self._splits: Dict[str, List] = {}
    os.makedirs(self.root, exist_ok=True)

  def _template(self, split: str):
    return tfds.core.ShardedFileTemplate(
        data_dir=self.root, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        dataset_name=self.name, split=split, filetype_suffix="array_record")

  def write_split(self, split: str, examples, total: Optional[int] = None, unit: str = "records") -> int:
    """Writes one split; logs progress (count, rate and, given `total`, ETA) while it runs."""
    # The shard count is only known at the end, so serialise into memory-sized groups first;
    # records are small (encoded images) and shards are renamed once the total is known.
    tmp_paths, lengths, num_bytes = [], [], 0
    writer, count = None, 0
    progress = Progress(f"{self.name}/{split}", total, unit=unit)
    for ex in progress.wrap(examples):
      if writer is None or count == self.examples_per_shard:
        if writer is not None:
          writer.close()
          lengths.append(count)
        tmp_paths.append(os.path.join(self.root, f".tmp-{split}-{len(tmp_paths)}"))
        writer, count = ArrayRecordWriter(tmp_paths[-1], "group_size:1"), 0
      data = self.features.serialize_example(ex)
      writer.write(data)
      num_bytes += len(data)
      count += 1
    if writer is not None:
      writer.close()
      lengths.append(count)
    progress.done()
    tmpl = self._template(split)
    for i, p in enumerate(tmp_paths):
      os.replace(p, os.fspath(tmpl.sharded_filepath(shard_index=i, num_shards=len(tmp_paths))))
    self._splits[split] = tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=num_bytes,
                                              filename_template=tmpl)
    return sum(lengths)

  def finish(self) -> None:
    splits = dict(self._splits)
    # Splits written by earlier runs (one run per split) are kept in the metadata.
    if os.path.exists(os.path.join(self.root, "dataset_info.json")):
      for name, info in tfds.builder_from_directory(self.root).info.splits.items():
        if name not in splits:
          splits[name] = tfds.core.SplitInfo(name=name, shard_lengths=list(info.shard_lengths),
                                             num_bytes=int(info.num_bytes),
                                             filename_template=self._template(name))
    tfds.folder_dataset.write_metadata(
        data_dir=self.root, features=self.features, split_infos=list(splits.values()),
        filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", check_data=False,
        version=VERSION)


def valid_anchor(box, width: int, height: int) -> bool:
  """Spec §2.2 step 1 on the int box (x, y, w, h): the element drawn for the region crop must lie
  inside the image with a positive area, else the official reader skips the record for that read."""
  x, y, w, h = box
  return x >= 0 and y >= 0 and x + w <= width and y + h <= height and w > 0 and h > 0


def open_source(data_dir: str, name: str, split: str):
  """Random-access view (`len`, `[i]`) of a stored split."""
  root = dataset_dir(data_dir, name)
  if not os.path.exists(os.path.join(root, "dataset_info.json")) and "://" not in root:
    raise FileNotFoundError(f"dataset {name!r}: no TFDS dataset at {root} (build it with "
                            f"tools/build_tfds.py or x2vlm_jax.data.shapes.build)")
  return tfds.builder_from_directory(root).as_data_source(split)


class BuildReport:
  """What a dataset build wrote and skipped, by reason (printed as `written: N` / `skipped: M` lines)."""

  def __init__(self):
    self.written = 0
    self.skipped = collections.Counter()
    self.boxes_dropped = collections.Counter()
    self.boxes_not_anchor = 0
    self.extra = {}

  def lines(self, kind):
    out = [f"written: {self.written}", f"skipped: {sum(self.skipped.values())}"]
    out += [f"skipped[{r}]: {n}" for r, n in sorted(self.skipped.items())]
    if kind == "region":
      out.append(f"boxes_dropped: {sum(self.boxes_dropped.values())}")
      out += [f"boxes_dropped[{r}]: {n}" for r, n in sorted(self.boxes_dropped.items())]
      out.append(f"boxes_not_anchor: {self.boxes_not_anchor}")
    out += [f"{k}: {v}" for k, v in sorted(self.extra.items())]
    return out
