"""Caption metrics (COCO toolkit scorers) on hand-computed cases and an independent CIDEr-D formula;
the pure-Python PTB tokenisation against the real Stanford tokenizer when Java is present; the VQA
accuracy with its leave-one-annotator-out arithmetic and the official answer normalisation."""

import math
from collections import Counter

import numpy as np
import pytest

from x2vlm_jax.evaluation import caption_metrics as CM
from x2vlm_jax.evaluation import vqa_metrics as VM

needs_java = pytest.mark.skipif(not CM.java_available(), reason="java is not installed")


# --- tokenisation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "raw,want",
  [
    ("A man's hat, (red) -- isn't it?", "a man 's hat -lrb- red -rrb- is n't it"),
    ("A black-and-white photo of a t-shirt.", "a black-and-white photo of a t-shirt"),
    ("I'm gonna cannot don't they'll", "i 'm gon na can not do n't they 'll"),
    ("dogs' 'quoted' `tick` x:y 10:30", "dogs quoted tick x y 10:30"),
    ("e.g. Mr. Smith's car's door", "e.g. mr. smith 's car 's door"),
    ('She said "hello" & waved $5 50%', "she said hello & waved $ 5 50 %"),
  ],
)
def test_python_tokenisation_hand_cases(raw, want):
  # Expected strings are what Stanford PTBTokenizer 3.4.1 (-preserveLines -lowerCase) + the toolkit's
  # punctuation removal produce; note brackets survive as "-lrb-" because the removal list is upper-case.
  assert CM.ptb_tokenize(raw) == want


CAPTIONS = [
  "A dog, a cat, and a bird sit together.",
  "Two people riding bikes down a street!",
  "A man in a red shirt is holding a frisbee .",
  "THE MAN'S DOG IS BROWN AND WHITE.",
  "a kitchen with a stove, sink, and refrigerator",
  "there's 2 cats; one's asleep",
  "Two dogs' toys [on] the {floor}.",
  "He can't go; U.S. flag at 3.5 p.m. ... ok!",
]


@needs_java
def test_python_tokenisation_equals_stanford_ptb():
  from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

  got = CM._quiet(PTBTokenizer().tokenize, {i: [{"caption": c}] for i, c in enumerate(CAPTIONS)})
  assert [CM.ptb_tokenize(c) for c in CAPTIONS] == [got[i][0] for i in range(len(CAPTIONS))]


# --- BLEU / ROUGE-L / CIDEr-D ---------------------------------------------------------------------------


def scores(preds, refs, **kw):
  return CM.caption_scores(preds, refs, tokenizer="python", meteor="off", **kw)


def test_bleu_hand_computed():
  # "a cat sat on the mat" vs "the cat sat on the mat": clipped matches 5/6, 4/5, 3/4, 2/3; equal
  # lengths → no brevity penalty; BLEU-n = geometric mean of the first n precisions.
  s = scores({1: "a cat sat on the mat"}, {1: ["the cat sat on the mat"]})
  p = [5 / 6, 4 / 5, 3 / 4, 2 / 3]
  for n in range(1, 5):
    assert s[f"Bleu_{n}"] == pytest.approx(math.prod(p[:n]) ** (1 / n), rel=1e-6)
  # Brevity penalty: 4 candidate words, closest reference 5 → exp(1 − 5/4) on every order.
  s = scores({1: "a b c d"}, {1: ["a b c d e"]})
  for n in range(1, 5):
    assert s[f"Bleu_{n}"] == pytest.approx(math.exp(1 - 5 / 4), rel=1e-6)
  assert s["METEOR"] is None and s["SPICE"] is None and s["tokenizer"] == "python"


def test_rouge_l_hand_computed():
  # LCS("a b c", "a c d e") = 2 → P = 2/3, R = 2/4; F_β (β = 1.2) = (1 + β²)PR / (R + β²P).
  p, r, b2 = 2 / 3, 2 / 4, 1.2**2
  s = scores({1: "a b c"}, {1: ["a c d e"]})
  assert s["ROUGE_L"] == pytest.approx((1 + b2) * p * r / (r + b2 * p), rel=1e-6)


def cider_d(cands, refs, n_max=4, sigma=6.0):
  """CIDEr-D from its definition (Vedantam et al. 2015, the COCO-toolkit variant): tf-idf n-gram
  vectors with df over the references of the evaluated images, idf = log(N) − log(max(1, df));
  per order the clipped cosine Σ min(g_c, g_r)·g_r / (‖g_c‖‖g_r‖) times exp(−(ℓ_c − ℓ_r)²/2σ²),
  averaged over orders and references, × 10; mean over images."""

  def grams(words, n):
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))

  ids = list(cands)
  df = Counter()
  for i in ids:
    seen = set()
    for r in refs[i]:
      w = r.split()
      for n in range(1, n_max + 1):
        seen |= set(grams(w, n))
    df.update(seen)
  log_n = np.log(len(ids))

  def vec(words, n):
    return {g: c * (log_n - np.log(max(1.0, df[g]))) for g, c in grams(words, n).items()}

  total = 0.0
  for i in ids:
    c = cands[i].split()
    per_ref = []
    for r in refs[i]:
      rw = r.split()
      orders = []
      for n in range(1, n_max + 1):
        vc, vr = vec(c, n), vec(rw, n)
        nc, nr = math.sqrt(sum(x * x for x in vc.values())), math.sqrt(sum(x * x for x in vr.values()))
        dot = sum(min(vc[g], vr.get(g, 0.0)) * vr.get(g, 0.0) for g in vc)
        val = dot / (nc * nr) if nc and nr else 0.0
        orders.append(val * math.exp(-((len(c) - len(rw)) ** 2) / (2 * sigma**2)))
      per_ref.append(np.mean(orders))
    total += 10.0 * np.mean(per_ref)
  return total / len(ids)


def test_cider_d_against_the_definition():
  refs = {
    1: ["a dog runs on the grass", "a brown dog running in a field", "the dog is running outside"],
    2: ["a cat sleeps on a sofa", "a cat lying on the couch"],
    3: ["two men play frisbee in a park", "people playing frisbee on the grass", "a man throws a frisbee"],
  }
  cands = {1: "a dog running on the grass", 2: "a cat on a couch", 3: "a dog playing frisbee in a park"}
  s = scores(cands, refs)
  assert s["CIDEr"] == pytest.approx(cider_d(cands, refs), rel=1e-6)
  assert 0.5 < s["CIDEr"] < 10


def test_duplicate_predictions_keep_the_first_and_unknown_images_fail():
  refs = {1: ["a dog on a couch"], 2: ["a red car"]}
  once = scores([{"image_id": 1, "caption": "a dog on a couch"}, {"image_id": 2, "caption": "a red bus"}], refs)
  dup = scores(
    [
      {"image_id": 1, "caption": "a dog on a couch"},
      {"image_id": 2, "caption": "a red bus"},
      {"image_id": 1, "caption": "nothing like it"},
    ],
    refs,
  )
  assert dup == once and dup["num_images"] == 2
  with pytest.raises(ValueError, match="no references for image ids \\[9\\]"):
    scores({9: "x"}, refs)


@needs_java
@pytest.mark.slow
def test_meteor_and_ptb_run_when_java_is_present():
  s = CM.caption_scores({1: "A dog sits on a red couch."}, {1: ["A dog sits on a red couch.", "a dog on a sofa"]})
  assert s["tokenizer"] == "ptb" and s["METEOR"] is not None and s["METEOR"] > 0.9
  assert s["Bleu_4"] == pytest.approx(1.0, rel=1e-6)


# --- VQA accuracy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "agree,want",
  [
    # k of 10 annotators said the predicted answer. Leaving out one of those k leaves k−1 matches,
    # leaving out one of the other 10−k leaves k; accuracy = mean over the 10 of min(matches/3, 1).
    (0, 0.0),
    (1, (1 * 0 / 3 + 9 * 1 / 3) / 10),  # 0.3
    (2, (2 * 1 / 3 + 8 * 2 / 3) / 10),  # 0.6
    (3, (3 * 2 / 3 + 7 * 1.0) / 10),  # 0.9, not 1.0
    (4, (4 * 1.0 + 6 * 1.0) / 10),  # 1.0
  ],
)
def test_vqa_accuracy_leave_one_out(agree, want):
  gts = ["yes"] * agree + ["no", "maybe", "red", "blue", "two", "cat", "left", "up", "tree", "car"][: 10 - agree]
  assert VM.vqa_accuracy("yes", gts) == pytest.approx(want)
  assert [0.0, 0.3, 0.6, 0.9, 1.0][agree] == pytest.approx(want)


def test_vqa_answer_normalisation():
  gts = ["2"] * 3 + ["3"] * 7
  assert VM.vqa_accuracy("Two", gts) == pytest.approx(0.9)  # number word → digit, case
  assert VM.vqa_accuracy("the 2.", gts) == pytest.approx(0.9)  # article, trailing period
  assert VM.normalize_prediction("Dont know!") == "don't know"  # contraction, punctuation
  assert VM.normalize_prediction("3.5") == "3.5"  # a period before a digit stays
  assert VM.normalize_prediction("black/white") == "black white"  # '/' inside text → space
  assert VM.normalize_prediction("1,000") == "1000"  # digit,digit: marks deleted
  # The official asymmetry: identical human answers are not normalised, the prediction always is.
  assert VM.vqa_accuracy("two dogs", ["two dogs"] * 10) == 0.0
  assert VM.vqa_accuracy("2 dogs", ["two dogs"] * 10) == 0.0
  out = VM.vqa_scores({1: "yes", 2: "Two"}, {1: ["yes"] * 10, 2: gts}, {1: "yes/no", 2: "number"})
  assert out["overall"] == pytest.approx(95.0) and out["per_answer_type"] == pytest.approx(
    {"yes/no": 100.0, "number": 90.0}
  )
