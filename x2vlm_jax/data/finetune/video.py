"""Video fine-tuning data (docs/reference.md §5.6, §2.4, §4.2): video QA (MSRVTT-QA, MSVD-QA; the ClipBERT
protocol of a fixed answer vocabulary) and video–text retrieval (MSRVTT).

Official formats: a video is a JSON file holding a list of base64-encoded frames
(`<img_rdir>/video_<n>.json` for MSRVTT's "video<n>" ids, `<img_rdir>/<id>.json` for MSVD: the
`video_pattern` option, with `{id}` and `{num}` = the id's digits); QA annotations are JSON lines
{video_id, question, answer} with `ans2label` = {answer: class}; retrieval annotations are the
retrieval format with a video path instead of the image. Each video is stored once (its frames
checked to decode); the rows (a question and its label, or a caption) live in the row table.

Training frames: docs/reference.md §2.4's choice (`streams.sample_frame_ids`), each frame transformed
independently. QA uses the "train w/o flip" transform: a flip (p=0.5, drawn per FRAME) only when
neither the question nor the answer contains "left"/"right" (official `careful_hflip`), then
RandomResizedCrop(scale 0.5–1) and RandAugment; retrieval frames get the retrieval train transform.
"""

import base64
import binascii
import json
from typing import Dict, List, Tuple

import tensorflow as tf

from x2vlm_jax import fs
from x2vlm_jax.data import augment, records
from x2vlm_jax.data.annotations import BadRecord, field, read_records
from x2vlm_jax.data.finetune.common import (
  RowsSource,
  report_cut_captions,
  single_stream_iterator,
  skip_or_raise,
  transform_and_batch,
  write_media_groups,
)
from x2vlm_jax.data.finetune.retrieval import build_rows
from x2vlm_jax.data.jsonl import check_image
from x2vlm_jax.data.streams import decode, example_seed, from_source, meta, meta_signature, pmap, sample_frame_ids
from x2vlm_jax.data.text import Tokenizer, pre_caption, pre_question
from x2vlm_jax.data.video_files import video_file_name
from x2vlm_jax.text_clean import pre_question as pre_question_py

QA_STREAM_ID, RETRIEVAL_STREAM_ID = 7, 8  # distinct from the other streams' seeds
IGNORE_LABEL = -100  # an answer outside the answer vocabulary: no loss in training, wrong in evaluation


def video_file(image_root: str, video_id: str, pattern: str = "{id}.json") -> str:
  name = video_file_name(video_id, pattern)
  return name if "://" in name or name.startswith("/") or not image_root else str(fs.path(image_root) / name)


def load_frames(path: str) -> List[bytes]:
  """A frames file → its frames as encoded bytes, each fully decoded once (BadRecord otherwise)."""
  try:
    frames = json.loads(fs.path(path).read_text())
  except (FileNotFoundError, OSError) as e:
    raise BadRecord("video_not_found", path) from e
  except ValueError as e:
    raise BadRecord("bad_video", f"{path}: not JSON ({e})") from e
  if not isinstance(frames, list) or not frames or not all(isinstance(x, str) for x in frames):
    raise BadRecord("bad_video", f"{path}: expected a non-empty list of base64 frames")
  try:
    return [check_image(base64.b64decode(x, validate=True))[0] for x in frames]
  except (binascii.Error, ValueError) as e:
    raise BadRecord("bad_video", f"{path}: {e}") from e


# ------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------
def build_qa(
  annotations: str,
  image_root: str,
  data_dir: str,
  name: str,
  *,
  split: str = "train",
  strict: bool = False,
  max_words: int = 40,
  ans2label: str = "",
  video_pattern: str = "{id}.json",
) -> records.BuildReport:
  """JSON lines {video_id, question, answer} + ans2label → videos + rows {question, answer, label};
  an answer outside ans2label gets label −100 (counted as `oov_answers`), as officially."""
  del max_words
  if not ans2label:
    raise ValueError("video_qa: the ans2label file is required (--option ans2label=PATH)")
  labels: Dict[str, int] = json.loads(fs.path(ans2label).read_text())
  report = records.BuildReport()
  by_video: Dict[str, Tuple[str, List[Dict]]] = {}
  for i, rec in enumerate(read_records(annotations)):
    try:
      vid = str(field(rec, "video_id", (str, int)))
      question = field(rec, "question", str)
      answer = field(rec, "answer", str)
      if not pre_question_py(question, 50).strip():
        raise BadRecord("empty_question")
    except BadRecord as e:
      skip_or_raise(report, annotations, i, e, strict)
      continue
    by_video.setdefault(vid, (video_file(image_root, vid, video_pattern), []))[1].append(
      {"question": question, "answer": answer, "label": int(labels.get(answer, IGNORE_LABEL))}
    )
  write_media_groups(
    annotations,
    data_dir,
    name,
    "finetune_video",
    split,
    by_video,
    load=lambda path: {"frames": load_frames(path)},
    example=lambda m: m,
    rows=lambda record, qs: qs,
    report=report,
    strict=strict,
    what="video",
  )
  report.extra["oov_answers"] = sum(q["label"] == IGNORE_LABEL for _, qs in by_video.values() for q in qs)
  return report


def build_retrieval(
  annotations: str,
  image_root: str,
  data_dir: str,
  name: str,
  *,
  split: str = "train",
  strict: bool = False,
  max_words: int = 30,
  vision_key: str = "video",
) -> records.BuildReport:
  """Retrieval rows {<vision_key>: frames file, caption, image_id} → videos + caption rows."""
  return build_rows(
    annotations,
    data_dir,
    name,
    split=split,
    strict=strict,
    max_words=max_words,
    load=lambda path: {"frames": load_frames(video_file(image_root, path, "{id}"))},
    kind="finetune_video",
    vision_key=vision_key,
  )


# ------------------------------------------------------------------------------------------------
# Streams
# ------------------------------------------------------------------------------------------------
def _frames(ex, cfg, seed, careful_flip: bool, text_for_flip=None):
  """The training frames of one video [F, R, R, 3]: docs/reference.md §2.4's choice, each frame transformed
  independently (its own crop, flip coin and RandAugment)."""
  num_frames, res = cfg.num_frames, cfg.image_res
  s_ids, s_frames = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  ids = sample_frame_ids(tf.size(ex["frames"]), num_frames, s_ids)
  allow_flip = tf.constant(True)
  if careful_flip:
    allow_flip = ~tf.reduce_any(tf.strings.regex_full_match(text_for_flip, ".*(left|right).*"))

  def one(args):
    frame_id, frame_seed = args
    s_flip, s_crop, s_ra = tf.unstack(tf.random.experimental.stateless_split(frame_seed, 3))
    image = decode(tf.gather(ex["frames"], frame_id))
    if careful_flip:  # the QA transform: flip first (if allowed), then crop; no flip afterwards
      flip = allow_flip & (tf.random.stateless_uniform([], s_flip) < 0.5)
      image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
      image = tf.ensure_shape(
        augment.random_resized_crop(image, res, s_crop, scale=tuple(cfg.crop_scale)), [res, res, 3]
      )
      if cfg.randaug:
        image = augment.rand_augment(image, s_ra)
      return augment.normalize(image)
    crop = tf.ensure_shape(augment.random_resized_crop(image, res, s_crop, scale=tuple(cfg.crop_scale)), [res, res, 3])
    return augment._flip_randaug_normalize(crop, res, s_flip, s_ra, cfg.randaug)  # noqa: SLF001

  seeds = tf.random.experimental.stateless_split(s_frames, num_frames)
  return tf.map_fn(one, (ids, seeds), fn_output_signature=tf.TensorSpec([res, res, 3], tf.float32))


def _stream(source, cfg, tokenizer, position, counts, skipped, seed, batch_size, *, qa: bool):
  base = seed * 8 + (QA_STREAM_ID if qa else RETRIEVAL_STREAM_ID)
  fields = (
    {
      "question": tf.TensorSpec([], tf.string),
      "answer": tf.TensorSpec([], tf.string),
      "label": tf.TensorSpec([], tf.int64),
    }
    if qa
    else {"caption": tf.TensorSpec([], tf.string), "image_id": tf.TensorSpec([], tf.int64)}
  )
  signature = {**meta_signature(len(source.sources)), "frames": tf.TensorSpec([None], tf.string), **fields}
  ds = from_source(source, position, counts, signature, skipped=skipped)

  def transform(ex):
    row_seed = example_seed(base, ex["_pos"])
    if qa:
      frames = _frames(ex, cfg, row_seed, True, tf.stack([ex["question"], ex["answer"]]))
      return {
        **meta(ex),
        "frames": frames,
        "text": pre_question(ex["question"], cfg.max_words),
        "labels": tf.cast(ex["label"], tf.int32),
      }
    return {
      **meta(ex),
      "frames": _frames(ex, cfg, row_seed, False),
      "text": pre_caption(ex["caption"], cfg.max_words),
      "image_ids": tf.cast(ex["image_id"], tf.int32),
    }

  # A frame that fails to decode drops the video (counted by the iterator).
  ds = transform_and_batch(ds, transform, cfg, batch_size)
  target = "labels" if qa else "image_ids"

  def per_batch(b):
    ids, mask, cut = tokenizer.encode(b["text"])
    valid = tf.cast(tf.strings.length(b["text"]) > 0, tf.float32)
    out = {**meta(b), "frames": b["frames"], "text_ids": ids, "text_mask": mask, target: b[target], "valid": valid}
    if not qa:  # retrieval captions are not cut officially (Retrieval.py): count the rows we cut
      out["captions_cut"] = cut
    return out

  return pmap(ds, per_batch, cfg)


def create_iterator(cfg, *, spec, seed: int, process_index: int, process_count: int, qa: bool = True):
  """cfg: the fine-tuning data config (configs/finetune/common.py: finetune_data, + num_frames); spec:
  the task's batch contract (`VideoQATask.spec`, or `VideoRetrievalTask.spec` with qa=False)."""
  tokenizer = Tokenizer(cfg.vocab_file, cfg.max_tokens)

  def build_stream(source, position, counts, skipped, batch_size):
    if not qa and process_index == 0 and position == 0:  # a fresh start: a resume does not scan again
      report_cut_captions(cfg, tokenizer, "video_retrieval")
    return _stream(source, cfg, tokenizer, position, counts, skipped, seed, batch_size, qa=qa)

  return single_stream_iterator(
    cfg,
    "video_qa" if qa else "video_retrieval",
    stream_id=QA_STREAM_ID if qa else RETRIEVAL_STREAM_ID,
    opener=RowsSource,
    build=build_stream,
    spec=spec,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )


def train_size(cfg) -> int:
  return sum(len(RowsSource(cfg.data_dir, name, split)) for name, split, *_ in cfg.train)
