"""Retrieval fine-tuning data (COCO, Flickr30K; docs/reference.md §4.2, §5.1, §4.3).

Build: rows {image, caption, image_id} (one per caption) → one record per image + the row table
(common.RowsSource), so images are stored once while an epoch is every caption once.
Stream: caption rows → the fine-tuning "train" transform (RandomResizedCrop scale 0.5–1, flip,
RandAugment(2, 7)) → `pre_caption` (30 words) → WordPiece, fixed length `max_tokens`: longer captions
are cut (officially never: README deviations), counted per batch (`captions_cut`) and, for the whole
training set, logged when the iterator starts.
"""

from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from x2vlm_jax.data import augment, records
from x2vlm_jax.data.annotations import BadRecord, field, read_records
from x2vlm_jax.data.finetune.common import (
  RowsSource,
  batch_and_tokenize,
  load_image_record,
  report_cut_captions,
  skip_or_raise,
  task_iterator,
  write_media_groups,
)
from x2vlm_jax.data.streams import example_seed, from_source, meta, meta_signature
from x2vlm_jax.data.text import Tokenizer, pre_caption
from x2vlm_jax.text_clean import pre_caption as pre_caption_py

STREAM_ID = 4  # distinct from the pre-training streams' seeds


def build(
  annotations: str,
  image_root: str,
  data_dir: str,
  name: str,
  *,
  split: str = "train",
  strict: bool = False,
  max_words: int = 30,
  keep: Optional[Callable[[str], bool]] = None,
) -> records.BuildReport:
  """The dense image id follows the official first-appearance order of `image_id`; captions that are
  empty after `pre_caption` are skipped (`empty_caption`), like an image that cannot be read (its
  rows are all skipped, `image_not_found` / `corrupt_image`). `keep` replaces the emptiness test
  (captioning trains on the raw caption)."""
  return build_rows(
    annotations,
    data_dir,
    name,
    split=split,
    strict=strict,
    max_words=max_words,
    load=load_image_record(image_root),
    kind="finetune_image",
    keep=keep,
  )


def build_rows(annotations, data_dir, name, *, split, strict, max_words, load, kind, vision_key="image", keep=None):
  """Official retrieval rows {<vision_key>, caption, image_id} → media records + caption rows; shared by
  image and video retrieval and captioning (`load(path)` reads one image or one video's frames)."""
  keep = keep or (lambda caption: bool(pre_caption_py(caption, max_words)))
  report = records.BuildReport()
  by_id: Dict[object, Tuple[str, List[str]]] = {}
  for i, rec in enumerate(read_records(annotations)):
    try:
      media = field(rec, vision_key, str)
      caption = field(rec, "caption", str)
      media_id = field(rec, "image_id", (str, int))
      if not keep(caption):
        raise BadRecord("empty_caption")
      if media_id in by_id and by_id[media_id][0] != media:
        raise BadRecord("bad_field_type", f"image_id {media_id!r} names two {vision_key}s")
    except BadRecord as e:
      skip_or_raise(report, annotations, i, e, strict)
      continue
    by_id.setdefault(media_id, (media, []))[1].append(caption)
  # The dense id is the record's index: captions of one image share it (ITC/ITM positives).
  write_media_groups(
    annotations,
    data_dir,
    name,
    kind,
    split,
    by_id,
    load=load,
    example=lambda m: m,
    rows=lambda record, caps: [{"caption": c, "image_id": record} for c in caps],
    report=report,
    strict=strict,
    what=vision_key,
  )
  return report


def retrieval_signature(num_datasets: int):
  return {
    **meta_signature(num_datasets),
    "image": tf.TensorSpec([], tf.string),
    "caption": tf.TensorSpec([], tf.string),
    "image_id": tf.TensorSpec([], tf.int32),
  }


def retrieval_stream(source, cfg, tokenizer: Tokenizer, *, position, counts, skipped, seed, batch_size):
  base = seed * 8 + STREAM_ID
  ds = from_source(source, position, counts, retrieval_signature(len(source.sources)), skipped=skipped)

  def transform(ex):
    s_img = example_seed(base, ex["_pos"])
    image = augment.pretrain_transform_bytes(
      ex["image"], cfg.image_res, s_img, cfg.randaug, scale=tuple(cfg.crop_scale)
    )
    return {**meta(ex), "images": image, "text": pre_caption(ex["caption"], cfg.max_words), "image_ids": ex["image_id"]}

  # Officially (Retrieval.py: train(), padding='longest' without truncation) nothing is cut: the rows we
  # cut are counted per batch (README deviations).
  return batch_and_tokenize(ds, transform, cfg, tokenizer, batch_size, count_cut=True)


def create_iterator(cfg, *, spec, seed: int, process_index: int, process_count: int):
  """cfg: the fine-tuning data config (configs/finetune/common.py: finetune_data); spec: the task's
  batch contract (`RetrievalTask.spec`). On a fresh start (not a resume) the first process logs how
  many training captions max_tokens cuts (`report_cut_captions`: a scan of every caption)."""

  def stream(source, cfg, tokenizer, *, position, **kw):
    if process_index == 0 and position == 0:
      report_cut_captions(cfg, tokenizer, "retrieval")
    return retrieval_stream(source, cfg, tokenizer, position=position, **kw)

  return task_iterator(
    cfg,
    "retrieval",
    stream_id=STREAM_ID,
    opener=RowsSource,
    stream=stream,
    spec=spec,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )


def train_size(cfg) -> int:
  """Caption rows of the training datasets (an official epoch)."""
  return sum(len(RowsSource(cfg.data_dir, name, split)) for name, split, *_ in cfg.train)
