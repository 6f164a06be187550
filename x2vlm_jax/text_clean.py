"""Official caption/question cleaning (docs/reference.md §4.4) in plain Python: no tensorflow, so the tokenizer of
the inference API, the dataset builders and the evaluators share it with the tf graph's twin
(`data/text.py: pre_caption`); and the captioning test reader's image id, which the evaluator and the
embedded captioning files (shapes_tasks.py) must agree on."""

import re

# The characters the official `pre_caption` turns into spaces (plus "-" and "/").
PUNCT = r"[,.'!?\"()*#:;~\-/]"


def pre_caption(caption: str, max_words: int) -> str:
  """Lower-case, punctuation → space, "<person>" → "person", collapse whitespace, first max_words
  words. An empty result is returned as "" (the official code raises; callers count and skip)."""
  c = caption.lower().replace("<person>", "person")
  c = re.sub(PUNCT, " ", c)
  c = re.sub(r"\s{2,}", " ", c).strip()
  return " ".join(c.split(" ")[:max_words])


_QUESTION_PUNCT = r"[,.'!?\"()*#:;~]"


def pre_question(question: str, max_words: int) -> str:
  """The official `pre_question` (dataset/utils.py), which differs from pre_caption: punctuation and
  "-" "/" → space, then only TRAILING spaces are stripped; runs of spaces are NOT collapsed, so the
  word limit (`split(' ')`, 30 at training, 50 at test) counts the empty strings between them."""
  q = re.sub(_QUESTION_PUNCT, " ", question.lower()).replace("-", " ").replace("/", " ")
  q = q.rstrip(" ")
  words = q.split(" ")
  return " ".join(words[:max_words]) if len(words) > max_words else q


def left_or_right_in(question: str, answers) -> bool:
  """The official `careful_hflip` test on the RAW strings: a substring match, case-sensitive ("bright"
  counts, "Left" does not), in the question or any answer. True forbids the horizontal flip."""
  texts = [question] + ([answers] if isinstance(answers, str) else list(answers))
  return any("left" in t or "right" in t for t in texts)


def image_id_from_name(image: str) -> int:
  """The official captioning test reader's image id (coco_karpathy_caption_eval): the digits after
  the last "_" of the file name. str.strip removes the CHARACTERS . j p g from both ends, not the
  suffix (harmless for COCO names: "val2014/COCO_val2014_000000391895.jpg" → 391895)."""
  return int(image.split("/")[-1].strip(".jpg").split("_")[-1])
