"""VQA v2 accuracy exactly as the official evaluation script computes it (`vqaTools/vqaEval.py` of
the release, the VQA team's `VQAEval`), docs/reference.md §5.2.

For one question with 10 human answers: the prediction is normalised (punctuation, number words →
digits, articles dropped, contractions restored); the human answers only get the punctuation step,
and only when they are not all identical (the official asymmetry — the released annotations are
already normalised). Then, for each of the 10 annotators left out in turn, the accuracy is
min(#remaining humans who gave the predicted answer / 3, 1), and the question's accuracy is the mean
of those 10 values. The quirky period regex of the original ("(?!<=\\d)(\\.)(?!\\d)", a typo for a
look-behind) is kept so that numbers agree with the official server-side script.
"""

import re
from typing import Dict, Mapping, Sequence

CONTRACTIONS = {
  "aint": "ain't",
  "arent": "aren't",
  "cant": "can't",
  "couldve": "could've",
  "couldnt": "couldn't",
  "couldn'tve": "couldn't've",
  "couldnt've": "couldn't've",
  "didnt": "didn't",
  "doesnt": "doesn't",
  "dont": "don't",
  "hadnt": "hadn't",
  "hadnt've": "hadn't've",
  "hadn'tve": "hadn't've",
  "hasnt": "hasn't",
  "havent": "haven't",
  "hed": "he'd",
  "hed've": "he'd've",
  "he'dve": "he'd've",
  "hes": "he's",
  "howd": "how'd",
  "howll": "how'll",
  "hows": "how's",
  "Id've": "I'd've",
  "I'dve": "I'd've",
  "Im": "I'm",
  "Ive": "I've",
  "isnt": "isn't",
  "itd": "it'd",
  "itd've": "it'd've",
  "it'dve": "it'd've",
  "itll": "it'll",
  "let's": "let's",
  "maam": "ma'am",
  "mightnt": "mightn't",
  "mightnt've": "mightn't've",
  "mightn'tve": "mightn't've",
  "mightve": "might've",
  "mustnt": "mustn't",
  "mustve": "must've",
  "neednt": "needn't",
  "notve": "not've",
  "oclock": "o'clock",
  "oughtnt": "oughtn't",
  "ow's'at": "'ow's'at",
  "'ows'at": "'ow's'at",
  "'ow'sat": "'ow's'at",
  "shant": "shan't",
  "shed've": "she'd've",
  "she'dve": "she'd've",
  "she's": "she's",
  "shouldve": "should've",
  "shouldnt": "shouldn't",
  "shouldnt've": "shouldn't've",
  "shouldn'tve": "shouldn't've",
  "somebody'd": "somebodyd",
  "somebodyd've": "somebody'd've",
  "somebody'dve": "somebody'd've",
  "somebodyll": "somebody'll",
  "somebodys": "somebody's",
  "someoned": "someone'd",
  "someoned've": "someone'd've",
  "someone'dve": "someone'd've",
  "someonell": "someone'll",
  "someones": "someone's",
  "somethingd": "something'd",
  "somethingd've": "something'd've",
  "something'dve": "something'd've",
  "somethingll": "something'll",
  "thats": "that's",
  "thered": "there'd",
  "thered've": "there'd've",
  "there'dve": "there'd've",
  "therere": "there're",
  "theres": "there's",
  "theyd": "they'd",
  "theyd've": "they'd've",
  "they'dve": "they'd've",
  "theyll": "they'll",
  "theyre": "they're",
  "theyve": "they've",
  "twas": "'twas",
  "wasnt": "wasn't",
  "wed've": "we'd've",
  "we'dve": "we'd've",
  "weve": "we've",
  "werent": "weren't",
  "whatll": "what'll",
  "whatre": "what're",
  "whats": "what's",
  "whatve": "what've",
  "whens": "when's",
  "whered": "where'd",
  "wheres": "where's",
  "whereve": "where've",
  "whod": "who'd",
  "whod've": "who'd've",
  "who'dve": "who'd've",
  "wholl": "who'll",
  "whos": "who's",
  "whove": "who've",
  "whyll": "why'll",
  "whyre": "why're",
  "whys": "why's",
  "wont": "won't",
  "wouldve": "would've",
  "wouldnt": "wouldn't",
  "wouldnt've": "wouldn't've",
  "wouldn'tve": "wouldn't've",
  "yall": "y'all",
  "yall'll": "y'all'll",
  "y'allll": "y'all'll",
  "yall'd've": "y'all'd've",
  "y'alld've": "y'all'd've",
  "y'all'dve": "y'all'd've",
  "youd": "you'd",
  "youd've": "you'd've",
  "you'dve": "you'd've",
  "youll": "you'll",
  "youre": "you're",
  "youve": "you've",
}
NUMBER_WORDS = {
  "none": "0",
  "zero": "0",
  "one": "1",
  "two": "2",
  "three": "3",
  "four": "4",
  "five": "5",
  "six": "6",
  "seven": "7",
  "eight": "8",
  "nine": "9",
  "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCT = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def process_punctuation(text: str) -> str:
  """Official `processPunctuation`: a mark next to a space (or any text with a digit,digit comma) is
  deleted, otherwise replaced by a space; periods not followed by a digit are deleted."""
  out = text
  for p in PUNCT:
    if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD_STRIP.sub("", out)


def process_digit_article(text: str) -> str:
  """Official `processDigitArticle`: lower-case, number words → digits, drop a/an/the, restore
  contractions ("dont" → "don't"), single spaces."""
  words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
  words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
  return " ".join(words)


def normalize_prediction(answer: str) -> str:
  """What the official script does to a predicted answer before comparing."""
  answer = answer.replace("\n", " ").replace("\t", " ").strip()
  return process_digit_article(process_punctuation(answer))


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
  """Accuracy in [0, 1] of one prediction against the human answers (normally 10)."""
  if not gt_answers:
    raise ValueError("vqa_accuracy: no ground-truth answers")
  res = normalize_prediction(prediction)
  gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in gt_answers]
  if len(set(gts)) > 1:
    gts = [process_punctuation(a) for a in gts]
  accs = []
  for left_out in range(len(gts)):
    matches = sum(1 for j, a in enumerate(gts) if j != left_out and a == res)
    accs.append(min(1.0, matches / 3.0))
  return sum(accs) / len(accs)


def vqa_scores(
  predictions: Mapping[object, str],
  gt_answers: Mapping[object, Sequence[str]],
  answer_types: Mapping[object, str] = None,
) -> Dict[str, object]:
  """Mean accuracy (in %, unrounded) over the questions of `predictions`; per answer type too when
  `answer_types` {question_id: "yes/no" | "number" | "other"} is given."""
  missing = [q for q in predictions if q not in gt_answers]
  if missing:
    raise ValueError(f"vqa_scores: no ground truth for question ids {missing[:5]} ({len(missing)} in all)")
  per_q = {q: vqa_accuracy(a, gt_answers[q]) for q, a in predictions.items()}
  out: Dict[str, object] = {"overall": 100.0 * sum(per_q.values()) / max(len(per_q), 1), "num_questions": len(per_q)}
  if answer_types is not None:
    by_type: Dict[str, list] = {}
    for q, acc in per_q.items():
      by_type.setdefault(answer_types[q], []).append(acc)
    out["per_answer_type"] = {t: 100.0 * sum(v) / len(v) for t, v in by_type.items()}
  return out
