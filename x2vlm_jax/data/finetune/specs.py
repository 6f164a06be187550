"""The batch contract of each fine-tuning stream: {field: (shape, dtype)} of a batch of `b` rows, from the
data config alone (no tensorflow here).

The streams' iterators check every batch against these (`single_stream_iterator`'s spec_fn, per-host
b); `FinetuneTask.batch_spec` gives the same at the global batch size to tools/compile_check.py, so
the train step is compiled for exactly what the data yields. Keys are `FinetuneTask.SPEC` names.
"""

from typing import Dict

import numpy as np

Spec = Dict[str, tuple]


def _text(b: int, max_tokens: int) -> Spec:
  return {"text_ids": ((b, max_tokens), np.int32), "text_mask": ((b, max_tokens), np.int32)}


def _images(cfg, b: int) -> Spec:
  r = int(cfg.image_res)
  return {"images": ((b, r, r, 3), np.float32)}


def _frames(cfg, b: int) -> Spec:
  r, f = int(cfg.image_res), int(cfg.num_frames)
  return {"frames": ((b, f, r, r, 3), np.float32)}


def retrieval(cfg, b: int) -> Spec:
  """Image–text retrieval (data/finetune/retrieval.py): the caption's dense image id marks positives."""
  return {
    **_images(cfg, b),
    **_text(b, int(cfg.max_tokens)),
    "image_ids": ((b,), np.int32),
    "valid": ((b,), np.float32),
  }


def video_retrieval(cfg, b: int) -> Spec:
  """Video–text retrieval (data/finetune/video.py, qa=False): retrieval with F frames per row."""
  return {
    **_frames(cfg, b),
    **_text(b, int(cfg.max_tokens)),
    "image_ids": ((b,), np.int32),
    "valid": ((b,), np.float32),
  }


def video_qa(cfg, b: int) -> Spec:
  """Video QA as classification (data/finetune/video.py, qa=True): the answer's class, −100 if OOV."""
  return {**_frames(cfg, b), **_text(b, int(cfg.max_tokens)), "labels": ((b,), np.int32), "valid": ((b,), np.float32)}


def vqa(cfg, b: int) -> Spec:
  """VQA (data/finetune/vqa.py): A = max_answers answers of max_answer_tokens per question."""
  a, la = int(cfg.max_answers), int(cfg.max_answer_tokens)
  return {
    **_images(cfg, b),
    **_text(b, int(cfg.max_tokens)),
    "answer_ids": ((b, a, la), np.int32),
    "answer_mask": ((b, a, la), np.int32),
    "answer_weights": ((b, a), np.float32),
    "answers_cut": ((b,), np.int32),
  }


def captioning(cfg, b: int) -> Spec:
  """Captioning (data/finetune/captioning.py): the FG-free input, max_tokens + max_masks long (a [MASK]
  inserted before each chosen token), its 3-D attention mask and the chosen tokens."""
  m = int(cfg.max_masks)
  t = int(cfg.max_tokens) + m
  return {
    **_images(cfg, b),
    "text_ids": ((b, t), np.int32),
    "positions": ((b, t), np.int32),
    "attention": ((b, t, t), np.int32),
    "masked_pos": ((b, m), np.int32),
    "masked_ids": ((b, m), np.int32),
    "masked_weight": ((b, m), np.float32),
  }


def nlvr2(cfg, b: int) -> Spec:
  """NLVR2 (data/finetune/nlvr2.py): the image pair [B, 2, R, R, 3] (image 0 = "left"), label 1 = True."""
  r = int(cfg.image_res)
  return {
    "images": ((b, 2, r, r, 3), np.float32),
    **_text(b, int(cfg.max_tokens)),
    "labels": ((b,), np.int32),
    "valid": ((b,), np.float32),
  }


def grounding(cfg, b: int) -> Spec:
  """Grounding (data/finetune/grounding.py): the target box (cx, cy, w, h) / R of the augmented image."""
  return {
    **_images(cfg, b),
    **_text(b, int(cfg.max_tokens)),
    "target_bbox": ((b, 4), np.float32),
    "valid": ((b,), np.float32),
  }
