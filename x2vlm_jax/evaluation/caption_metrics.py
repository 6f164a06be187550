"""COCO caption metrics as the official evaluation computes them (docs/reference.md §5.5: pycocoevalcap on the
Karpathy test split, one caption per image id — later duplicates from distributed sampling dropped).

    scores = caption_scores([{"image_id": 1, "caption": "a dog on a couch"}, ...],
                            {1: ["A dog lies on a sofa.", ...], ...})
    → {"Bleu_1": …, "Bleu_2": …, "Bleu_3": …, "Bleu_4": …, "METEOR": … or None, "ROUGE_L": …,
       "CIDEr": …, "SPICE": None, "tokenizer": "ptb" | "python", "num_images": n}

BLEU, ROUGE-L and CIDEr (which in the COCO toolkit is CIDEr-D: clipped tf-idf n-gram similarity with
a Gaussian length penalty, σ = 6, ×10) are pycocoevalcap's own scorers. Two parts of the toolkit
need Java: the Stanford PTB tokenizer and METEOR. When `java` is on PATH both are used exactly as
the toolkit does; otherwise the captions go through `ptb_tokenize` (a pure-Python imitation of
PTBTokenizer -preserveLines -lowerCase followed by the toolkit's punctuation removal; it agrees
with the real tokenizer on ordinary captions, see tests/test_eval_metrics.py) and METEOR is reported
as None (unavailable). SPICE additionally downloads Stanford CoreNLP models at first use, which
this project never does: it is always None.
"""

import contextlib
import io
import re
import shutil
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

# pycocoevalcap's PTBTokenizer drops exactly these tokens after tokenising.
PTB_PUNCTUATIONS = frozenset(
  ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# With -lowerCase, PTBTokenizer's bracket tokens come out lower-cased and so SURVIVE the removal
# above (whose entries are upper-case): "(red)" → "-lrb- red -rrb-". Reproduced.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CLITICS = re.compile(r"^(.+?)('s|'m|'d|'ll|'re|'ve|n't)$")
_SPLIT_WORDS = {
  "cannot": ["can", "not"],
  "gonna": ["gon", "na"],
  "gotta": ["got", "ta"],
  "wanna": ["wan", "na"],
  "gimme": ["gim", "me"],
  "lemme": ["lem", "me"],
}
_TITLES = frozenset(["mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "vs", "etc", "inc", "co", "no"])


def _split_token(tok: str, last: bool) -> List[str]:
  """One whitespace-delimited chunk → PTB tokens (before punctuation removal)."""
  out: List[str] = []
  # Leading quotes / punctuation.
  while tok and tok[0] in "'`\",;!?:":
    out.append(tok[0])
    tok = tok[1:]
  tail: List[str] = []
  while tok:
    if tok.endswith("..."):
      tail.insert(0, "...")
      tok = tok[:-3]
    elif tok[-1] in '"`,;!?':
      tail.insert(0, tok[-1])
      tok = tok[:-1]
    elif tok[-1] == ":" and not re.search(r"\d:$", tok):
      tail.insert(0, ":")
      tok = tok[:-1]
    elif tok[-1] == "'" and not _CLITICS.match(tok):
      tail.insert(0, "'")
      tok = tok[:-1]
    elif tok[-1] == "." and last and not tail:
      stem = tok[:-1]
      if "." in stem or stem in _TITLES or not stem:
        break
      tail.insert(0, ".")
      tok = stem
    else:
      break
  if tok:
    if tok in _SPLIT_WORDS:
      out.extend(_SPLIT_WORDS[tok])
    else:
      # Separators inside a token: ':' between non-digits, a lone '--'.
      parts = re.split(r"(?<!\d):(?!\d)|(--)", tok)
      for p in parts:
        if not p:
          continue
        m = _CLITICS.match(p)
        if m and m.group(2) == "n't":
          out.extend([m.group(1), "n't"])  # can't → ca n't, don't → do n't
        elif m:
          out.extend([m.group(1), m.group(2)])
        else:
          out.append(p)
  return out + tail


def ptb_tokenize(caption: str) -> str:
  """Pure-Python stand-in for pycocoevalcap's PTBTokenizer on one caption: lower-case, split off
  punctuation, quotes and clitics ('s n't 'll …) like the Stanford PTB tokenizer, map brackets to
  -lrb- … and drop the toolkit's punctuation list. Hyphenated words, 3.5, 10:30, u.s. stay whole."""
  text = caption.replace("\n", " ").lower()
  for ch, name in _BRACKETS.items():
    text = text.replace(ch, f" {name} ")
  text = re.sub(r"([&$%#*@+=<>^|~])", r" \1 ", text)
  text = text.replace('"', ' " ')
  chunks = text.split()
  tokens: List[str] = []
  for i, chunk in enumerate(chunks):
    tokens.extend(_split_token(chunk, last=i == len(chunks) - 1))
  return " ".join(t for t in tokens if t not in PTB_PUNCTUATIONS and t not in ('"', "`", "'"))


def java_available() -> bool:
  return shutil.which("java") is not None


def dedupe_predictions(predictions: Union[Iterable[Mapping], Mapping]) -> Dict:
  """[{"image_id", "caption"}, ...] → {image_id: caption}, the FIRST caption of an image kept
  (the official `collect_result(..., remove_duplicate='image_id')`). A dict passes through."""
  if isinstance(predictions, Mapping):
    return dict(predictions)
  out: Dict = {}
  for p in predictions:
    out.setdefault(p["image_id"], p["caption"])
  return out


def _quiet(fn, *args):
  # The BLEU scorer prints its length ratio; keep evaluation logs clean.
  with contextlib.redirect_stdout(io.StringIO()):
    return fn(*args)


def caption_scores(
  predictions, references: Mapping[object, Sequence[str]], *, tokenizer: str = "auto", meteor: str = "auto"
) -> Dict[str, object]:
  """COCO caption metrics over the images that have a prediction (as COCOEvalCap does).

  predictions: list of {"image_id", "caption"} (duplicates per image id dropped, first kept) or a
    dict {image_id: caption}. references: {image_id: [reference captions]}.
  tokenizer: "auto" (PTB via Java when available, else `ptb_tokenize`), "ptb" or "python".
  meteor: "auto" (when Java is available), "on" or "off". Scores are fractions (BLEU-4 0.40 = 40.0).
  """
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  from pycocoevalcap.rouge.rouge import Rouge

  preds = dedupe_predictions(predictions)
  missing = [i for i in preds if i not in references]
  if missing:
    raise ValueError(f"caption_scores: no references for image ids {missing[:5]} ({len(missing)} in all)")
  if not preds:
    raise ValueError("caption_scores: no predictions")
  if tokenizer == "auto":
    tokenizer = "ptb" if java_available() else "python"
  gts_raw = {i: [{"caption": c} for c in references[i]] for i in preds}
  res_raw = {i: [{"caption": preds[i]}] for i in preds}
  if tokenizer == "ptb":
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = _quiet(PTBTokenizer().tokenize, gts_raw)
    res = _quiet(PTBTokenizer().tokenize, res_raw)
  elif tokenizer == "python":
    gts = {i: [ptb_tokenize(c["caption"]) for c in v] for i, v in gts_raw.items()}
    res = {i: [ptb_tokenize(c["caption"]) for c in v] for i, v in res_raw.items()}
  else:
    raise ValueError(f"tokenizer: expected 'auto', 'ptb' or 'python', got {tokenizer!r}")

  out: Dict[str, object] = {}
  bleu, _ = _quiet(Bleu(4).compute_score, gts, res)
  for n, b in enumerate(bleu, 1):
    out[f"Bleu_{n}"] = float(b)
  out["METEOR"] = _meteor(gts, res, meteor)
  out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
  out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
  out["SPICE"] = None
  out["tokenizer"] = tokenizer
  out["num_images"] = len(preds)
  return out


def _meteor(gts, res, mode: str) -> Optional[float]:
  if mode == "off" or (mode == "auto" and not java_available()):
    return None
  if mode not in ("auto", "on"):
    raise ValueError(f"meteor: expected 'auto', 'on' or 'off', got {mode!r}")
  from pycocoevalcap.meteor.meteor import Meteor

  scorer = Meteor()
  try:
    return float(scorer.compute_score(gts, res)[0])
  finally:
    del scorer
