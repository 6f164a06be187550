"""Tokenisation without tensorflow: the ids of the data pipeline, for notebooks and evaluators.

`Tokenizer(path)` picks by file: a WordPiece `vocab.txt` (BERT, the English model) or a SentencePiece
`*.model` (XLM-R, the multilingual CCLM model: inference/spm_tokenizer.py).

HF `tokenizers` (Rust) implements BERT's basic tokenizer + WordPiece exactly like `BertTokenizer`;
the tf-text tokenizer of the input pipeline is tested against the same reference, so both give the
same ids (tests/test_tokenizer.py). Sequences are `[CLS] pieces [SEP]`, cut to `max_tokens`
(the final [SEP] kept) and 0-padded, like `data/text.py: Tokenizer`.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from etils import epath

from x2vlm_jax.inference.token_batch import encode_batch

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def Tokenizer(vocab_file: str, max_tokens: int = 40):  # noqa: N802  (a constructor to its callers)
  """The tokenizer of a vocabulary file: SentencePiece for `*.model`, WordPiece otherwise."""
  from x2vlm_jax.inference.spm_tokenizer import SentencePieceTokenizer, is_sentencepiece_file

  if is_sentencepiece_file(vocab_file):
    return SentencePieceTokenizer(vocab_file, max_tokens)
  return WordPieceTokenizer(vocab_file, max_tokens)


class WordPieceTokenizer:
  def __init__(self, vocab_file: str, max_tokens: int = 40):
    tokens = epath.Path(vocab_file).read_text().splitlines()
    if not tokens:
      raise ValueError(f"vocab_file {vocab_file}: empty")
    self.vocab: Dict[str, int] = {t: i for i, t in enumerate(tokens)}
    missing = [s for s in SPECIALS if s not in self.vocab]
    if missing:
      raise ValueError(f"vocab_file {vocab_file}: missing special tokens {missing}")
    self.tokens = tokens
    self.vocab_size = len(tokens)
    self.max_tokens = int(max_tokens)
    self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
    self.cls_id, self.sep_id, self.mask_id = self.vocab["[CLS]"], self.vocab["[SEP]"], self.vocab["[MASK]"]
    from tokenizers import BertWordPieceTokenizer

    # lowercase=True with strip_accents=None strips accents too, like HF BertTokenizer (uncased).
    self._wordpiece = BertWordPieceTokenizer(self.vocab, lowercase=True, clean_text=True, handle_chinese_chars=True)

  def pieces(self, text: str) -> Sequence[int]:
    return self._wordpiece.encode(text, add_special_tokens=False).ids

  def __call__(
    self, texts: Sequence[str], max_tokens: Optional[int] = None, *, clean: Optional[int] = None
  ) -> Tuple[np.ndarray, np.ndarray]:
    """texts → (ids [B, L] int32, mask [B, L] int32), L = max_tokens.

    clean: apply the official `pre_caption` with this many words first (retrieval/grounding use 30,
    pre-training max_tokens); None: the texts are used as given.
    """
    return encode_batch(self, texts, max_tokens, clean, "[CLS] and [SEP]")

  def decode(self, ids: Sequence[int], skip_special: bool = True, clean_up: bool = False) -> str:
    """ids → text, wordpieces joined ("##" continuations glued), special tokens skipped; `clean_up`:
    HF's `clean_up_tokenization` as the official `tokenizer.decode` applies it to generated text."""
    special = {self.vocab[s] for s in SPECIALS}
    out = []
    for i in ids:
      i = int(i)
      if skip_special and i in special:
        continue
      tok = self.tokens[i]
      if tok.startswith("##") and out:
        out[-1] += tok[2:]
      else:
        out.append(tok)
    text = " ".join(out)
    return clean_up_tokenization(text) if clean_up else text


def clean_up_tokenization(text: str) -> str:
  """transformers' `clean_up_tokenization` (BertTokenizer.decode's default): no space before
  . ? ! , and English clitics ("don ' t" → "don't")."""
  for a, b in (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
  ):
    text = text.replace(a, b)
  return text
