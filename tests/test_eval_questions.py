"""Test-time question tokenisation of the VQA and video-QA evaluators against the official scripts.

Officially only training truncates questions; the test tokenises them with
`tokenizer(question, padding='longest')` and no truncation (`VQA.py: evaluation()`,
`VQA_msrvtt.py: evaluation()`, `VQA_msvd.py: evaluation()`). The reference here is HF BertTokenizer
called exactly so, on the questions after the official `pre_question` (50 words at test).
"""

import json

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from x2vlm_jax import sharding as shd
from x2vlm_jax import tasks
from x2vlm_jax.models import get_preset
from x2vlm_jax.text_clean import pre_question

SHAPES_VOCAB = "x2vlm_jax/data/shapes_vocab.txt"
# 48 words → 50 tokens with [CLS]/[SEP]: longer than the training max_tokens (40), shorter than 50 words.
LONG = " ".join(["is the red circle left of the blue square"] * 5 + ["is", "there", "red"])
QUESTIONS = ["what colour is the circle", LONG, "is there a square"]


def _hf_ids(questions):
  from transformers import BertTokenizer

  hf = BertTokenizer(SHAPES_VOCAB, do_lower_case=True)
  enc = hf([pre_question(q, 50) for q in questions], padding="longest", return_tensors="np")
  return enc["input_ids"], enc["attention_mask"]


def _evaluator(kind, tmp_path, **fields):
  cfg = get_preset("tiny", num_frames=2)
  if kind == "video_qa":
    cfg.heads.num_labels = 2
    (tmp_path / "ans2label.json").write_text(json.dumps({"red": 0, "yes": 1}))
    (tmp_path / "q.jsonl").write_text(
      "\n".join(json.dumps({"video_id": f"v{i}", "question": q, "answer": "red"}) for i, q in enumerate(QUESTIONS))
    )
    for i in range(len(QUESTIONS)):  # the videos exist (setup checks image_root); only the questions are read
      (tmp_path / f"v{i}.json").write_text("{}")
    e = dict(type="video_qa", annotations=str(tmp_path / "q.jsonl"), image_root=str(tmp_path))
    e["ans2label"] = str(tmp_path / "ans2label.json")
  else:
    cfg.heads.decoder_layers = 1
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "answers.json").write_text(json.dumps(["red", "yes"]))
    records = [{"question_id": i, "image": "a.jpg", "question": q, "answer": ["red"]} for i, q in enumerate(QUESTIONS)]
    (tmp_path / "vqa.json").write_text(json.dumps(records))
    e = dict(type="vqa", annotations=str(tmp_path / "vqa.json"), image_root=str(tmp_path))
    e["answer_list"] = str(tmp_path / "answers.json")
  e.update(fields)
  c = ml_collections.ConfigDict({"model": cfg, "data": {"vocab_file": SHAPES_VOCAB, "max_tokens": 40}})
  mesh = shd.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  with jax.set_mesh(mesh):
    ev = tasks.build_evaluator("test", c, ml_collections.ConfigDict(e), mesh)
    ev.setup()
  return ev


@pytest.mark.parametrize("kind", ["video_qa", "vqa"])
def test_test_questions_are_padded_to_the_longest_and_not_cut(kind, tmp_path):
  ev = _evaluator(kind, tmp_path)
  ids, mask = (ev.ids, ev.mask) if kind == "video_qa" else (ev.q_ids, ev.q_mask)
  want_ids, want_mask = _hf_ids(QUESTIONS)
  assert want_ids.shape[1] == 50  # the long question is longer than the training max_tokens
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_array_equal(mask, want_mask)
  assert (ev.truncated, ev.long) == (0, 1)  # nothing cut; one would have been at the training length


@pytest.mark.parametrize("kind", ["video_qa", "vqa"])
def test_a_set_max_tokens_cuts_and_counts(kind, tmp_path):
  ev = _evaluator(kind, tmp_path, max_tokens=20)
  ids = ev.ids if kind == "video_qa" else ev.q_ids
  assert ids.shape[1] == 20 and ev.truncated == 1
