"""XLM-R SentencePiece tokenisation without tensorflow (the multilingual CCLM model, docs/reference.md §1.8, §4.4).

XLM-R's ids are the SentencePiece model's ids shifted by fairseq's offset: fairseq's dictionary starts
with `<s>=0 <pad>=1 </s>=2 <unk>=3`, then the SentencePiece pieces from piece 3 on (SentencePiece's own
0/1/2 are `<unk> <s> </s>`), so a piece's id is `sp_id + 1`, SentencePiece's `<unk>` (0) becomes 3, and
`<mask>` is appended last (`len(sp) + 1`). This is HF `XLMRobertaTokenizer`'s mapping
(`fairseq_offset = 1`); tests/test_spm_tokenizer.py checks ids and character offsets against it.

Sequences are `<s> pieces </s>`, cut to `max_tokens` (the final `</s>` kept) and padded with `<pad>`
(id 1, which RoBERTa's position ids skip), as the official multilingual dataset builds them
(`pretrain_dataset_multilingual.py: ImageMultiTextDataset.preprocess`, `cls_token`/`sep_token` of XLM-R).
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
from etils import epath

from x2vlm_jax.inference.token_batch import encode_batch

FAIRSEQ_OFFSET = 1
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>")
MODEL_FILE = "sentencepiece.bpe.model"  # XLM-R's file name (HF hub, fairseq release)


def is_sentencepiece_file(path: str) -> bool:
  """A SentencePiece model is named `*.model` (XLM-R: sentencepiece.bpe.model); a WordPiece vocab is text."""
  return str(path).endswith(".model")


class SentencePieceTokenizer:
  """XLM-R ids from a SentencePiece model (bytes of `sentencepiece.bpe.model`), HF-compatible."""

  def __init__(self, model_file: str, max_tokens: int = 40):
    import sentencepiece as spm

    proto = epath.Path(model_file).read_bytes()
    if not proto:
      raise ValueError(f"sentencepiece model {model_file}: empty")
    self.model_file = str(model_file)
    self.model_proto = proto
    self._sp = spm.SentencePieceProcessor(model_proto=proto)
    self.sp_size = self._sp.get_piece_size()
    self.pad_id, self.unk_id = PAD_ID, UNK_ID
    self.cls_id, self.sep_id = BOS_ID, EOS_ID  # XLM-R's cls_token is <s>, sep_token </s>
    self.mask_id = self.sp_size + FAIRSEQ_OFFSET
    self.vocab_size = self.mask_id + 1
    self.max_tokens = int(max_tokens)
    # No whole-word masking for SentencePiece (the official multilingual datasets pass
    # mask_whole_word=False), so no id is a "continuation".
    self.is_subword = np.zeros((self.vocab_size,), np.bool_)

  def _to_xlmr(self, sp_ids: Sequence[int]) -> List[int]:
    return [UNK_ID if i == self._sp.unk_id() else i + FAIRSEQ_OFFSET for i in sp_ids]

  def pieces(self, text: str) -> List[int]:
    """text → XLM-R ids of its pieces (no <s>/</s>, no cut)."""
    return self._to_xlmr(self._sp.encode(text))

  def piece_strings(self, text: str) -> List[str]:
    return self._sp.encode(text, out_type=str)

  def encode_with_offsets(self, text: str) -> Tuple[List[int], List[Tuple[int, int]]]:
    """ids and character offsets (start, end) into `text` of each piece, with HF's convention: a
    piece's leading "▁" is not part of its span, and a piece left with no character of its own (a lone
    "▁") spans the next character."""
    proto = self._sp.encode(text, out_type="proto")
    raw = text.encode("utf-8")
    char_of_byte = np.zeros(len(raw) + 1, np.int64)  # byte offset → character offset
    pos = 0
    for c, ch in enumerate(text):
      n = len(ch.encode("utf-8"))
      char_of_byte[pos : pos + n] = c
      pos += n
    char_of_byte[len(raw)] = len(text)
    ids, offsets = [], []
    for p in proto.pieces:
      start, end = int(char_of_byte[p.begin]), int(char_of_byte[p.end])
      if p.piece.startswith("▁"):
        while start < len(text) and text[start].isspace():
          start += 1
      if end <= start:  # a lone "▁", or the "▁x" of a character NFKC expands ("ﬁ" → "▁f" "i")
        end = min(start + 1, len(text))
      ids.append(UNK_ID if p.id == self._sp.unk_id() else p.id + FAIRSEQ_OFFSET)
      offsets.append((start, end))
    return ids, offsets

  def __call__(
    self, texts: Sequence[str], max_tokens: Optional[int] = None, *, clean: Optional[int] = None
  ) -> Tuple[np.ndarray, np.ndarray]:
    """texts → (ids [B, L] int32 `<pad>`-padded, mask [B, L] int32), L = max_tokens; `clean` as the
    WordPiece tokenizer (the official `pre_caption` with this many words first)."""
    return encode_batch(self, texts, max_tokens, clean, "<s> and </s>")

  def decode(self, ids: Sequence[int], skip_special: bool = True, clean_up: bool = False) -> str:
    """ids → text (SentencePiece detokenisation); special ids and <mask> are skipped (or shown)."""
    del clean_up  # SentencePiece restores the spacing itself
    out, sp_ids = [], []
    for i in ids:
      i = int(i)
      if i < len(SPECIAL_PIECES) or i == self.mask_id:
        if sp_ids:
          out.append(self._sp.decode(sp_ids))
          sp_ids = []
        if not skip_special:
          out.append("<mask>" if i == self.mask_id else SPECIAL_PIECES[i])
        continue
      sp_ids.append(i - FAIRSEQ_OFFSET)
    if sp_ids:
      out.append(self._sp.decode(sp_ids))
    return " ".join(s for s in out if s)
