"""VQA fine-tuning data (docs/reference.md §4.2, §4.4, §5.2): the official `pre_question` on hand cases, the builder
from the official JSON counting bad records by reason, and the training stream pairing every question
with ITS image and ITS answers and weights (VQA shares, VG 0.5, padding 0), flipping an image only
when neither the question nor an answer says "left"/"right"."""

import json

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from x2vlm_jax.data.config import SHAPES_VOCAB  # noqa: E402
from x2vlm_jax.data.finetune import vqa  # noqa: E402
from x2vlm_jax.inference.tokenizer import Tokenizer  # noqa: E402
from x2vlm_jax.tasks.vqa import VQATask  # noqa: E402
from x2vlm_jax.text_clean import left_or_right_in, pre_question  # noqa: E402

COLORS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 30), (150, 40, 200), (30, 210, 220)]
WORDS = ["red", "green", "blue", "yellow", "purple", "cyan"]
SHAPES = ["circle", "square", "triangle", "diamond"]
A = 4


def test_pre_question_is_the_official_function():
  # Punctuation → space, "-" "/" → space, lower-case, trailing spaces stripped, inner runs KEPT.
  assert pre_question("What's the  colour-of it?", 30) == "what s the  colour of it"
  assert pre_question("  Is it red/blue?!  ", 30) == "  is it red blue"
  # The word limit counts the empty strings between repeated spaces (split(' ')).
  assert pre_question("a  b c d", 3) == "a  b"
  assert pre_question("a b c d", 50) == "a b c d"
  assert pre_question("<person> is here.", 30) == "<person> is here"  # no <person> rule (pre_caption has one)
  assert left_or_right_in("Is it bright?", ["yes"]) and left_or_right_in("what", "left side")
  assert not left_or_right_in("Is the Left one red?", ["yes", "Right"])  # case-sensitive, as officially


def _image(color):
  """Square image: the colour on the LEFT half, black on the right (a flip swaps them)."""
  a = np.zeros((48, 48, 3), np.uint8)
  a[:, :24] = color
  return a


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  d = tmp_path_factory.mktemp("vqa")
  rows, qid = [], 100
  for i, c in enumerate(COLORS):
    Image.fromarray(_image(c)).save(d / f"im{i}.png")
    for j in range(3):
      shape = SHAPES[(i + j) % 4]
      # The question names the image's colour; answers vary per question so that weights differ.
      if j == 0:
        answers = [WORDS[i]] * 6 + ["yes"] * 3 + ["no"]
        rec = {"question": f"Is the {shape} {WORDS[i]}?", "answer": answers, "dataset": "vqa"}
      elif j == 1:
        rec = {"question": f"What color is the {shape} {WORDS[i]} one?", "answer": shape, "dataset": "vg"}
      else:  # "left" in an answer forbids the flip for this question only
        answers = [shape] * 5 + ["left"] * 4 + [WORDS[i]]
        rec = {"question": f"What is the {WORDS[i]} {shape}?", "answer": answers}
      rows.append({"question_id": qid, "image": f"im{i}.png", **rec})
      qid += 1
  (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  bad = [
    {"question_id": 1, "image": "im0.png", "answer": ["red"]},  # no question
    {"question_id": 2, "image": "im0.png", "question": "what", "answer": [], "dataset": "vqa"},
    {"question_id": 3, "image": "im0.png", "question": "what", "answer": ["x"], "dataset": "coco"},
    {"question_id": 4, "image": "im0.png", "question": "what", "answer": ["a", "b"], "dataset": "vg"},
    {"question_id": 5, "image": "missing.png", "question": "what", "answer": ["red"]},
    {"question_id": 6, "image": "broken.jpg", "question": "what", "answer": ["red"]},
    {"question_id": 7, "image": "broken.jpg", "question": "why", "answer": ["red"]},
  ]
  (d / "train.json").write_text(json.dumps(rows[:5] + bad + rows[5:]))
  report = vqa.build(str(d / "train.json"), str(d), str(d / "tfds"), "toy_vqa")
  return d, rows, report


def _cfg(d, batch=6, max_answers=A):
  import ml_collections

  from x2vlm_jax.configs.finetune.common import finetune_data

  c = finetune_data(32, batch)
  c.data_dir, c.vocab_file = str(d / "tfds"), SHAPES_VOCAB
  c.train = [("toy_vqa", "train")]
  c.max_tokens, c.randaug = 14, False
  c.max_words, c.max_answers, c.max_answer_tokens = 30, max_answers, 4
  return ml_collections.ConfigDict(c)


def test_build_counts_bad_records_by_reason(built, tmp_path):
  d, rows, report = built
  assert report.written == len(rows) and report.extra["images"] == len(COLORS)
  assert dict(report.skipped) == {
    "missing_field": 1,
    "no_answer": 1,
    "unknown_dataset": 1,
    "bad_field_type": 1,
    "image_not_found": 1,
    "corrupt_image": 2,
  }
  assert report.extra["max_unique_answers"] == 3
  with pytest.raises(ValueError, match=r"record 5: missing_field: no field 'question'"):
    vqa.build(str(d / "train.json"), str(d), str(tmp_path), "strict", strict=True)


def test_too_few_answer_slots_is_a_clear_error(built):
  d, _, _ = built
  with pytest.raises(ValueError, match=r"3 unique answers, more than data.max_answers=2"):
    next(vqa.create_iterator(_cfg(d, max_answers=2), spec=VQATask.spec, seed=0, process_index=0, process_count=1))


def test_stream_pairs_questions_with_their_image_answers_and_weights(built):
  d, rows, _ = built
  cfg = _cfg(d)
  assert vqa.train_size(cfg) == len(rows) == 18  # 3 batches of 6 are exactly one epoch
  tok = Tokenizer(SHAPES_VOCAB, cfg.max_tokens)
  by_question = {tok.decode(tok([pre_question(r["question"], 30)])[0][0]): r for r in rows}
  mean = np.asarray([0.48145466, 0.4578275, 0.40821073]) * 255
  std = np.asarray([0.26862954, 0.26130258, 0.27577711]) * 255
  seen, flips = [], {True: [], False: []}
  for seed in (0, 1):
    it = vqa.create_iterator(cfg, spec=VQATask.spec, seed=seed, process_index=0, process_count=1)
    for _ in range(3):
      batch = next(it)
      for r in range(cfg.batch_size):
        rec = by_question[tok.decode(batch["text_ids"][r])]
        if seed == 0:
          seen.append(rec["question_id"])
        i = WORDS.index(next(w for w in WORDS if w in rec["question"]))
        # Its own answers in first-appearance order with the official weights; padding: "", weight 0.
        if rec.get("dataset") == "vg":
          answers, weights = [rec["answer"]], [0.5]
        else:
          uniq = list(dict.fromkeys(rec["answer"]))
          answers, weights = uniq, [rec["answer"].count(a) / len(rec["answer"]) for a in uniq]
        got = [tok.decode(x) for x in batch["answer_ids"][r]]
        assert got == answers + [""] * (A - len(answers)), (rec, got)
        np.testing.assert_array_equal(
          batch["answer_weights"][r], np.asarray(weights + [0.0] * (A - len(weights)), np.float32)
        )
        np.testing.assert_array_equal(batch["answer_mask"][r].sum(-1), [3] * len(answers) + [2] * (A - len(answers)))
        # Its own image: the colour sits on the left, unless the image was flipped.
        img = batch["images"][r] * std + mean
        left, right = img[:, 0].mean(0), img[:, -1].mean(0)
        flipped = np.abs(right - COLORS[i]).max() < 40
        assert flipped or np.abs(left - COLORS[i]).max() < 40, (rec, left, right)
        assert (right if flipped else left).sum() > 3 * (left if flipped else right).sum()
        flips[left_or_right_in(rec["question"], rec["answer"])].append(flipped)
  assert sorted(seen) == sorted(r["question_id"] for r in rows)  # every question once per epoch
  assert not any(flips[True]) and len(flips[True]) == 12  # "left" in an answer: never flipped
  assert 0.25 < np.mean(flips[False]) < 0.75  # the others: a fair coin
  assert batch["answers_cut"].tolist() == [0] * cfg.batch_size
