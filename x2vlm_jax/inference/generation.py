"""VQA answers and captions from images, batch by batch: what the `vqa` / `captioning` evaluators jit
over the mesh and what the notebook API (`X2VLMInference.answer`, `.caption`) calls.

  rank_batch      images + questions → the best answer of a tokenised answer list (docs/reference.md §5.2 ranking)
  answer_batch    images + questions → free-form answer tokens (greedy or beam; github.com/zengyan-97/X2-VLM/issues/11)
  caption_batch   images → caption tokens (docs/reference.md §5.5 beam search)

Every function takes the model and float images (the official test transform already applied) and
is pure; tokenising and decoding happen on the host with the checkpoint's vocabulary (`Tokenizer`).
"""

from typing import List, Sequence, Tuple

import numpy as np

from x2vlm_jax.inference import decoding
from x2vlm_jax.inference.tokenizer import Tokenizer


def _memory(model, images, ids, mask):
  return model.vqa_memory(ids, mask, model.vision(images))


def rank_batch(model, images, ids, mask, answer_ids, answer_mask, *, k: int, double_count_first: bool = True):
  """→ (index of the chosen answer [B], its probability among the k re-scored candidates [B])."""
  idx, probs = decoding.rank_answers(
    model, _memory(model, images, ids, mask), mask, answer_ids, answer_mask, k, double_count_first=double_count_first
  )
  return idx[:, 0], probs[:, 0]


def answer_batch(
  model, images, ids, mask, *, bos_id: int, eos_id: int, pad_id: int, num_beams: int, max_len: int, search: str
):
  """→ answer tokens [B, max_len] ([SEP] and after → pad)."""
  out = decoding.generate_answers(
    model,
    _memory(model, images, ids, mask),
    mask,
    bos_id=bos_id,
    eos_id=eos_id,
    pad_id=pad_id,
    num_beams=num_beams,
    max_len=max_len,
    search=search,
  )
  return out.tokens


def caption_batch(
  model,
  images,
  *,
  prompt_ids: Tuple[int, ...],
  mask_id: int,
  eos_id: int,
  pad_id: int,
  num_beams: int,
  max_len: int,
  min_length: int,
  no_repeat_ngram: int = 3,
  length_penalty: float = 0.0,
):
  """→ caption tokens [B, max_len] (the prompt not included)."""
  out = decoding.generate_captions(
    model,
    model.vision(images),
    None,
    prompt_ids=tuple(prompt_ids),
    mask_id=mask_id,
    eos_id=eos_id,
    pad_id=pad_id,
    num_beams=num_beams,
    max_len=max_len,
    min_length=min_length,
    no_repeat_ngram=no_repeat_ngram,
    length_penalty=length_penalty,
  )
  return out.tokens


# ------------------------------------------------------------------------------------------------
# Host-side text
# ------------------------------------------------------------------------------------------------
def check_vocab(tok: Tokenizer, model_cfg, where: str) -> None:
  """Generated ids index the vocabulary: a vocabulary of another size than the model's is refused."""
  if tok.vocab_size != model_cfg.text.vocab_size:
    raise ValueError(
      f"{where}: the vocabulary has {tok.vocab_size} tokens but the model {model_cfg.text.vocab_size} "
      "(use the checkpoint's own vocab.txt)"
    )


def read_answer_list(path: str, allow_ans2label: bool = False) -> List[str]:
  """`answer_list.json`: a JSON list of candidate answer strings (ALBEF's list for VQA v2); with
  `allow_ans2label` also an {answer: label} object whose keys are the list (xGQA's
  trainval_ans2label.json, as the official xgqa_dataset reads it: `list(json.load(f).keys())`)."""
  import json

  from etils import epath

  p = epath.Path(path) if path else None
  if p is None or not p.exists():
    raise ValueError(f"answer_list {path!r}: no such file (the ranking mode needs the official answer_list.json)")
  try:
    answers = json.loads(p.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"answer_list {path!r}: not JSON ({e})") from e
  if allow_ans2label and isinstance(answers, dict):
    answers = list(answers)
  check_answer_list(answers, repr(path))
  return answers


def check_answer_list(answers, where: str = "answer_list") -> None:
  if not isinstance(answers, (list, tuple)) or not answers:
    what = "an empty list" if isinstance(answers, (list, tuple)) else type(answers).__name__
    raise ValueError(f"{where}: expected a non-empty list of answer strings, got {what}")
  bad = [i for i, a in enumerate(answers) if not isinstance(a, str)]
  if bad:
    raise ValueError(f"{where}: entry {bad[0]} is {type(answers[bad[0]]).__name__}, expected a string")


def tokenize_answers(tok: Tokenizer, answers: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
  """[CLS] a [SEP] for every candidate, padded to the longest (the official `padding='longest'`, no
  truncation)."""
  longest = max(len(tok.pieces(a)) for a in answers) + 2
  return tok(list(answers), longest)


def prompt_ids(tok: Tokenizer, prompt: str) -> Tuple[int, ...]:
  """The captioner's prefix: [CLS] + wordpieces of the stripped prompt (official `prompt_ids`)."""
  return (tok.cls_id,) + tuple(tok.pieces(prompt.strip()))


def decode_all(tok: Tokenizer, tokens) -> List[str]:
  """Generated token rows → texts as the official `tokenizer.decode(..., skip_special_tokens=True)`."""
  return [tok.decode(row, clean_up=True) for row in np.asarray(tokens)]
