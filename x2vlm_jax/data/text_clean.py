"""Official caption/question cleaning (spec §4.4) in plain Python: no tensorflow, so the tokenizer of
the inference API, the dataset builders and the evaluators share it with the tf graph's twin
(`data/text.py: pre_caption`)."""

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


def pre_question(question: str, max_words: int) -> str:
  """The official `pre_question` (VQA, video QA): lower-case, punctuation and "-" "/" → space, strip
  trailing spaces, first max_words words of `split(' ')` (runs of spaces are NOT collapsed, so empty
  strings count as words, as officially; WordPiece ignores them)."""
  q = re.sub(PUNCT, " ", question.lower()).rstrip(" ")
  return " ".join(q.split(" ")[:max_words])
