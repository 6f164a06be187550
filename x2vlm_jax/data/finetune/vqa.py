"""VQA fine-tuning data (VQA v2 train/val + VG QA; docs/reference.md §4.2, §5.2, §4.3).

Build: the official JSON [{question_id, image, question, answer, dataset}, ...] → one record per
image and a row per question (common.RowsSource) so that an epoch is every question once, as the
official dataset.
Per question the unique answers and their weights are stored (docs/reference.md §5.2): VQA (a list of the
annotators' answers) → each unique answer weighted by its share of the annotations; VG (`dataset`
"vg", one str) → that answer with weight 0.5. Whether the question may be flipped is decided here on
the raw strings (`left_or_right_in`).

Stream: question rows → the "train w/o flip" transform: RandomResizedCrop(R, scale 0.5–1) → a flip with
p = 0.5 only when the question and its answers never say "left"/"right" → RandAugment(2, 7) → normalise;
`pre_question` (30 words) → [CLS] q [SEP] at max_tokens; the answers as [CLS] a [SEP] at
max_answer_tokens, a fixed A = `max_answers` per question (padding answers have weight 0).
The official code flips the PIL image before the crop; cropping first is the same distribution (the
crop window and RandAugment are mirror-symmetric) and lets the crop stay fused into the JPEG decode.
"""

import functools
import os
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from x2vlm_jax.data import augment, records
from x2vlm_jax.data.annotations import BadRecord, field, read_records
from x2vlm_jax.data.finetune.common import (
  RowsSource,
  load_image_record,
  single_stream_iterator,
  skip_or_raise,
  transform_and_batch,
  write_media_groups,
)
from x2vlm_jax.data.streams import example_seed, from_source, meta, meta_signature, pmap
from x2vlm_jax.data.text import Tokenizer
from x2vlm_jax.text_clean import left_or_right_in, pre_question

STREAM_ID = 5  # distinct from the pre-training and retrieval streams' seeds
DATASETS = ("vqa", "vg", "gqa")
VG_WEIGHT = 0.5  # official weight of the single Visual Genome answer


def answer_weights(answer, dataset: str) -> Tuple[List[str], List[float]]:
  """The official (vqa_dataset.__getitem__) unique answers and weights of one question.

  A list (VQA): weight = #annotators giving the answer / #annotations, answers in first-appearance
  order. VG: the one answer with weight 0.5. A single str outside VG is taken as one annotation
  (weight 1.0; the official loop would iterate over its characters)."""
  if dataset == "vg":
    if not isinstance(answer, str):
      raise BadRecord("bad_field_type", f"a vg answer must be a str, got {type(answer).__name__}")
    return [answer], [VG_WEIGHT]
  answers = [answer] if isinstance(answer, str) else answer
  if not answers:
    raise BadRecord("no_answer", "empty answer list")
  if not all(isinstance(a, str) for a in answers):
    raise BadRecord("bad_field_type", "answer list must hold strings")
  counts: Dict[str, int] = {}
  for a in answers:
    counts[a] = counts.get(a, 0) + 1
  return list(counts), [c / len(answers) for c in counts.values()]


def build(
  annotations: str,
  image_root: str,
  data_dir: str,
  name: str,
  *,
  split: str = "train",
  strict: bool = False,
  max_words: int = 30,
) -> records.BuildReport:
  """Records without `image`/`question`/`question_id`/`answer` (or of the wrong type) are skipped
  (`missing_field`, `bad_field_type`), like an unknown `dataset` (`unknown_dataset`), an empty answer
  list (`no_answer`) and unreadable images (`image_not_found`, `corrupt_image`; all their questions).
  `image` is relative to image_root except for `dataset` "gqa" (the official reader uses it as is).
  max_words is applied when reading (pre_question), not here."""
  del max_words
  rows = read_records(annotations)
  report = records.BuildReport()
  by_image: Dict[str, Tuple[str, List]] = {}
  for i, rec in enumerate(rows):
    try:
      image = field(rec, "image", str)
      question = field(rec, "question", str)
      qid = field(rec, "question_id", (int, str))
      answer = field(rec, "answer", (list, str))
      dataset = rec.get("dataset", "vqa")
      if dataset not in DATASETS:
        raise BadRecord("unknown_dataset", f"dataset {dataset!r} (expected one of {DATASETS})")
      answers, weights = answer_weights(answer, dataset)
    except BadRecord as e:
      skip_or_raise(report, annotations, i, e, strict)
      continue
    path = (
      image
      if dataset == "gqa" or not image_root or "://" in image or os.path.isabs(image)
      else os.path.join(image_root, image)
    )
    may_flip = not left_or_right_in(question, answer)
    by_image.setdefault(path, (path, []))[1].append((str(qid), question, answers, weights, may_flip))

  write_media_groups(
    annotations,
    data_dir,
    name,
    "finetune_image",
    split,
    by_image,
    load=load_image_record(""),
    example=lambda m: m,
    report=report,
    strict=strict,
    rows=lambda record, items: [
      {"question_id": qid, "question": q, "answers": a, "weights": w, "may_flip": int(f)} for qid, q, a, w, f in items
    ],
  )
  report.extra["max_unique_answers"] = max((len(it[2]) for _, its in by_image.values() for it in its), default=0)
  return report


class QuestionRows(RowsSource):
  """Random access over the question rows of a VQA split: row r → its image with that question
  (`pre_question`-ed), its A answers (padded with "") and their weights (padded with 0), as the
  official dataset's __getitem__ returns them."""

  def __init__(self, data_dir: str, name: str, split: str, *, max_answers: int, max_words: int):
    super().__init__(data_dir, name, split)
    self.max_answers, self.max_words = int(max_answers), int(max_words)
    most = max((len(row["answers"]) for row in self.rows), default=0)
    if most > self.max_answers:
      raise ValueError(
        f"dataset {name}/{split}: a question has {most} unique answers, more than "
        f"data.max_answers={self.max_answers}; raise max_answers (no answer is dropped)"
      )

  def __getitem__(self, r):
    rec = super().__getitem__(r)
    n = len(rec["answers"])
    answers = np.full((self.max_answers,), "", object)
    answers[:n] = rec["answers"]
    weights = np.zeros((self.max_answers,), np.float32)
    weights[:n] = rec["weights"]
    return {
      "image": rec["image"],
      "question": pre_question(rec["question"], self.max_words),
      "question_id": str(rec["question_id"]),
      "answers": answers,
      "weights": weights,
      "may_flip": np.int32(rec["may_flip"]),
    }


def vqa_signature(num_datasets: int, max_answers: int):
  return {
    **meta_signature(num_datasets),
    "image": tf.TensorSpec([], tf.string),
    "question": tf.TensorSpec([], tf.string),
    "answers": tf.TensorSpec([max_answers], tf.string),
    "weights": tf.TensorSpec([max_answers], tf.float32),
    "may_flip": tf.TensorSpec([], tf.int32),
  }


def train_wo_flip(image_bytes, may_flip, size: int, seed, *, randaug: bool, scale):
  """The official "train w/o flip" transform with its manual, permission-gated flip (see module doc)."""
  s_crop, s_flip, s_ra = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  x = augment.decode_random_resized_crop(image_bytes, size, s_crop, scale=scale)
  flipped, _ = augment.random_flip(x, s_flip)
  x = tf.ensure_shape(tf.where(may_flip > 0, flipped, x), [size, size, 3])
  if randaug:
    x = augment.rand_augment(x, s_ra)
  return augment.normalize(x)


def vqa_stream(source, cfg, q_tok: Tokenizer, a_tok: Tokenizer, *, position, counts, skipped, seed, batch_size):
  base = seed * 8 + STREAM_ID
  a = int(cfg.max_answers)
  ds = from_source(source, position, counts, vqa_signature(len(source.sources), a), skipped=skipped)

  def transform(ex):
    image = train_wo_flip(
      ex["image"],
      ex["may_flip"],
      cfg.image_res,
      example_seed(base, ex["_pos"]),
      randaug=cfg.randaug,
      scale=tuple(cfg.crop_scale),
    )
    return {**meta(ex), "images": image, "question": ex["question"], "answers": ex["answers"], "weights": ex["weights"]}

  ds = transform_and_batch(ds, transform, cfg, batch_size)

  def per_batch(b):
    ids, mask = q_tok(b["question"])
    flat = tf.reshape(b["answers"], [-1])
    a_ids, a_mask = a_tok(flat)
    la = int(cfg.max_answer_tokens)
    # Answers longer than max_answer_tokens lose their tail (counted per question, logged as a metric).
    pieces = a_tok.pieces(flat).row_lengths()
    cut = tf.reshape(tf.cast(pieces > la - 2, tf.int32), [batch_size, a]) * tf.cast(b["weights"] > 0, tf.int32)
    return {
      **meta(b),
      "images": b["images"],
      "text_ids": ids,
      "text_mask": mask,
      "answer_ids": tf.reshape(a_ids, [batch_size, a, la]),
      "answer_mask": tf.reshape(a_mask, [batch_size, a, la]),
      "answer_weights": b["weights"],
      "answers_cut": tf.reduce_sum(cut, axis=1),
    }

  return pmap(ds, per_batch, cfg)


def create_iterator(cfg, *, spec, seed: int, process_index: int, process_count: int):
  """cfg: the VQA data config (configs/finetune/vqa2_base.py: max_answers, max_answer_tokens, ...); spec:
  the task's batch contract (`VQATask.spec`)."""
  q_tok = Tokenizer(cfg.vocab_file, cfg.max_tokens)
  a_tok = Tokenizer(cfg.vocab_file, cfg.max_answer_tokens)

  def build_stream(source, position, counts, skipped, batch_size):
    return vqa_stream(
      source, cfg, q_tok, a_tok, position=position, counts=counts, skipped=skipped, seed=seed, batch_size=batch_size
    )

  return single_stream_iterator(
    cfg,
    "vqa",
    stream_id=STREAM_ID,
    opener=_opener(cfg),
    build=build_stream,
    spec=spec,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )


def _opener(cfg):
  return functools.partial(QuestionRows, max_answers=cfg.max_answers, max_words=cfg.max_words)


def train_size(cfg) -> int:
  """Question rows of the training datasets (an official epoch)."""
  return sum(len(RowsSource(cfg.data_dir, name, split)) for name, split, *_ in cfg.train)
