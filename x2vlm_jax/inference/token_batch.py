"""The one batch encoder of both tokenizers (WordPiece: inference/tokenizer.py, SentencePiece:
inference/spm_tokenizer.py): `[CLS] pieces [SEP]` (XLM-R: `<s> pieces </s>`), cut so that the end token
stays, padded with the tokenizer's pad id, with its attention mask. Its own file so that neither tokenizer
imports the other."""

from typing import Optional, Sequence

import numpy as np

from x2vlm_jax.text_clean import pre_caption


def encode_batch(tok, texts: Sequence[str], max_tokens: Optional[int], clean: Optional[int], specials: str):
  """texts → (ids [B, L] int32 pad-padded, mask [B, L] int32) for either tokenizer: `tok` gives
  `pieces(text)` → ids and `cls_id` / `sep_id` / `pad_id` / `max_tokens`; `specials` names the two ends
  in the error message."""
  if isinstance(texts, str):
    raise ValueError("texts: expected a list of strings, got a single string")
  length = int(max_tokens or tok.max_tokens)
  if length < 2:
    raise ValueError(f"max_tokens: expected >= 2 ({specials}), got {length}")
  ids = np.full((len(texts), length), tok.pad_id, np.int32)
  mask = np.zeros((len(texts), length), np.int32)
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise ValueError(f"texts[{i}]: expected a string, got {type(t).__name__}")
    if clean is not None:
      t = pre_caption(t, clean)
    row = [tok.cls_id] + list(tok.pieces(t))[: length - 2] + [tok.sep_id]
    ids[i, : len(row)] = row
    mask[i, : len(row)] = 1
  return ids, mask
