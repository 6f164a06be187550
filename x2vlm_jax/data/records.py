"""Stored-record schema and a sharded ArrayRecord writer producing a TFDS dataset directory.

Images stay encoded (bytes) so decoding happens in the tf.data graph. Alternatives of a caption
(a list in the JSON source) are joined with ALT_SEP and one is drawn per use in the graph; this keeps
the schema flat, which `tfds.data_source` reads back without any custom builder code.
"""

import collections
import os
import tempfile
from typing import Dict, List, Optional

import numpy as np
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordWriter

from x2vlm_jax import fs
from x2vlm_jax.progress import Progress

ALT_SEP = "\x1f"
VERSION = "1.0.0"

# One schema for image–text and region records: an image–text record simply has no elements.
IMAGE_FEATURES = tfds.features.FeaturesDict(
  {
    "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # encoded bytes
    "caption": tfds.features.Tensor(shape=(), dtype=np.object_),  # "" = none (region only)
    "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),  # x, y, w, h pixels
    "elem_caption": tfds.features.Tensor(shape=(None,), dtype=np.object_),
    "elem_attrs": tfds.features.Tensor(shape=(None,), dtype=np.object_),  # "" = no attribute
    "width": tfds.features.Tensor(shape=(), dtype=np.int32),
    "height": tfds.features.Tensor(shape=(), dtype=np.int32),
  }
)

VIDEO_FEATURES = tfds.features.FeaturesDict(
  {
    "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),  # encoded frames, in order
    "caption": tfds.features.Tensor(shape=(), dtype=np.object_),
  }
)

# Parallel text (multilingual CCLM, docs/reference.md §4.1: `source_text` / `target_text`).
MTEXT_FEATURES = tfds.features.FeaturesDict(
  {
    "source": tfds.features.Tensor(shape=(), dtype=np.object_),
    "target": tfds.features.Tensor(shape=(), dtype=np.object_),
  }
)


# Fine-tuning datasets store each image / video ONCE and keep the training rows (a caption, a
# question with its label, ...) in a side table `<split>.rows.json` (data/finetune/common.py): COCO has
# five captions per image, MSRVTT-QA ~24 questions per video.
FINETUNE_IMAGE_FEATURES = tfds.features.FeaturesDict(
  {
    "image": tfds.features.Tensor(shape=(), dtype=np.object_),
    "width": tfds.features.Tensor(shape=(), dtype=np.int32),
    "height": tfds.features.Tensor(shape=(), dtype=np.int32),
  }
)
FINETUNE_VIDEO_FEATURES = tfds.features.FeaturesDict(
  {
    "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),  # encoded frames, in order
  }
)


def features_for(kind: str) -> tfds.features.FeaturesDict:
  if kind in ("image_text", "region", "image"):
    return IMAGE_FEATURES
  if kind == "video":
    return VIDEO_FEATURES
  if kind == "mtext":
    return MTEXT_FEATURES
  if kind == "finetune_image":
    return FINETUNE_IMAGE_FEATURES
  if kind == "finetune_video":
    return FINETUNE_VIDEO_FEATURES
  raise ValueError(f"kind: expected image_text/region/video/mtext/finetune_image/finetune_video, got {kind!r}")


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
    "width": np.int32(width),
    "height": np.int32(height),
  }


class DatasetWriter:
  """Writes splits of one dataset as fixed-size ArrayRecord shards, then the TFDS metadata.

  `data_dir` may be remote (gs://): everything goes through epath (x2vlm_jax.fs). ArrayRecord writes
  a local file, so for a remote data dir each shard is written to a local temporary file and copied
  up once complete (one shard on local disk at a time)."""

  def __init__(self, data_dir: str, name: str, kind: str, examples_per_shard: int = 2000):
    self.root = fs.path(dataset_dir(data_dir, name))
    self.name = name
    self.features = features_for(kind)
    self.examples_per_shard = examples_per_shard
    self._splits: Dict[str, List] = {}
    self.root.mkdir(parents=True, exist_ok=True)

  def _template(self, split: str):
    return tfds.core.ShardedFileTemplate(
      data_dir=self.root,
      template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      dataset_name=self.name,
      split=split,
      filetype_suffix="array_record",
    )

  def write_split(self, split: str, examples, total: Optional[int] = None, unit: str = "records") -> int:
    """Writes one split; logs progress (count, rate and, given `total`, ETA) while it runs."""
    # The shard count is only known at the end: shards get temporary names first and are renamed
    # (on the data dir's own filesystem) once the total is known.
    remote = fs.is_remote(self.root)
    with tempfile.TemporaryDirectory(prefix="x2vlm-shard-") as local_dir:
      staging = local_dir if remote else os.fspath(self.root)
      tmp_names, lengths, num_bytes = [], [], 0
      writer, local, count = None, None, 0

      def close_shard():
        writer.close()
        lengths.append(count)
        if remote:
          fs.path(local).copy(self.root / tmp_names[-1], overwrite=True)
          os.remove(local)

      progress = Progress(f"{self.name}/{split}", total, unit=unit)
      for ex in progress.wrap(examples):
        if writer is None or count == self.examples_per_shard:
          if writer is not None:
            close_shard()
          tmp_names.append(f".tmp-{split}-{len(tmp_names)}")
          local = os.path.join(staging, tmp_names[-1])
          writer, count = ArrayRecordWriter(local, "group_size:1"), 0
        data = self.features.serialize_example(ex)
        writer.write(data)
        num_bytes += len(data)
        count += 1
      if writer is not None:
        close_shard()
      progress.done()
    tmpl = self._template(split)
    for i, name in enumerate(tmp_names):
      (self.root / name).replace(tmpl.sharded_filepath(shard_index=i, num_shards=len(tmp_names)))
    self._splits[split] = tfds.core.SplitInfo(
      name=split, shard_lengths=lengths, num_bytes=num_bytes, filename_template=tmpl
    )
    return sum(lengths)

  def finish(self) -> None:
    splits = dict(self._splits)
    # Splits written by earlier runs (one run per split) are kept in the metadata.
    if (self.root / "dataset_info.json").exists():
      for name, info in tfds.builder_from_directory(self.root).info.splits.items():
        if name not in splits:
          splits[name] = tfds.core.SplitInfo(
            name=name,
            shard_lengths=list(info.shard_lengths),
            num_bytes=int(info.num_bytes),
            filename_template=self._template(name),
          )
    tfds.folder_dataset.write_metadata(
      data_dir=self.root,
      features=self.features,
      split_infos=list(splits.values()),
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      check_data=False,
      version=VERSION,
    )


def valid_anchor(box, width: int, height: int) -> bool:
  """docs/reference.md §2.2 step 1 on the int box (x, y, w, h): the element drawn for the region crop must lie
  inside the image with a positive area, else the official reader skips the record for that read."""
  x, y, w, h = box
  return x >= 0 and y >= 0 and x + w <= width and y + h <= height and w > 0 and h > 0


def open_source(data_dir: str, name: str, split: str):
  """Random-access view (`len`, `[i]`) of a stored split."""
  root = fs.path(dataset_dir(data_dir, name))
  if not (root / "dataset_info.json").exists():
    raise FileNotFoundError(
      f"dataset {name!r}: no TFDS dataset at {root} (build it with tools/build_tfds.py or x2vlm_jax.data.shapes.build)"
    )
  return tfds.builder_from_directory(root).as_data_source(split)


# One entry per truncated image a build kept in this process (jsonl.check_image: decoded as the
# official loaders' ImageFile.LOAD_TRUNCATED_IMAGES does).
TRUNCATED: List[int] = []


class BuildReport:
  """What a dataset build wrote and skipped, by reason (printed as `written: N` / `skipped: M` lines)."""

  def __init__(self):
    self._truncated_before = len(TRUNCATED)
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
    truncated = len(TRUNCATED) - self._truncated_before
    if truncated:
      out.append(f"truncated_images: {truncated} (kept, decoded as the official loaders do)")
    return out
