"""Caption cleaning (`pre_caption`, docs/reference.md §4.4) and BERT WordPiece tokenisation with tensorflow-text
(`Tokenizer` hands a SentencePiece `*.model` to data/spm_text.py).

Special ids are looked up in the vocab, never hard-coded: the real uncased vocab has [CLS]=101,
the 200-entry shapes vocab has [CLS]=2.
"""

from typing import Dict

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from x2vlm_jax import fs
from x2vlm_jax.data.piece_tokenizer import PieceTokenizer
from x2vlm_jax.text_clean import PUNCT as _PUNCT
from x2vlm_jax.text_clean import pre_caption as pre_caption_py  # noqa: F401  (the Python twin, for builders)

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def pre_caption(caption: tf.Tensor, max_words: int) -> tf.Tensor:
  """Graph `pre_caption` on a string tensor of any shape; an empty result stays empty (→ invalid)."""
  c = tf.strings.lower(caption, encoding="utf-8")
  c = tf.strings.regex_replace(c, "<person>", "person")
  c = tf.strings.regex_replace(c, _PUNCT, " ")
  c = tf.strings.regex_replace(c, r"\s{2,}", " ")
  c = tf.strings.strip(c)
  words = tf.strings.split(c, " ")
  return tf.strings.reduce_join(words[..., :max_words], axis=-1, separator=" ")


def pre_question(question: tf.Tensor, max_words: int) -> tf.Tensor:
  """Graph twin of `text_clean.pre_question` (official VQA / video-QA question cleaning)."""
  q = tf.strings.regex_replace(tf.strings.lower(question, encoding="utf-8"), _PUNCT, " ")
  q = tf.strings.regex_replace(q, r" +$", "")
  words = tf.strings.split(q, " ")
  return tf.strings.reduce_join(words[..., :max_words], axis=-1, separator=" ")


def read_vocab(vocab_file: str):
  tokens = fs.path(vocab_file).read_text().splitlines()
  if not tokens:
    raise ValueError(f"vocab_file {vocab_file}: empty")
  return tokens


def Tokenizer(vocab_file: str, max_tokens: int):  # noqa: N802  (a constructor to its callers)
  """The pipeline tokenizer of a vocabulary file: XLM-R SentencePiece for `*.model` (data/spm_text.py),
  BERT WordPiece otherwise."""
  from x2vlm_jax.inference.spm_tokenizer import is_sentencepiece_file

  if is_sentencepiece_file(vocab_file):
    from x2vlm_jax.data.spm_text import SentencePieceTokenizer

    return SentencePieceTokenizer(vocab_file, max_tokens)
  return WordPieceTokenizer(vocab_file, max_tokens)


class WordPieceTokenizer(PieceTokenizer):
  """[CLS] wordpieces [SEP], cut to `max_tokens`, 0-padded; BERT-uncased basic tokenisation."""

  def __init__(self, vocab_file: str, max_tokens: int):
    self.tokens = read_vocab(vocab_file)
    index = {t: i for i, t in enumerate(self.tokens)}
    missing = [s for s in SPECIALS if s not in index]
    if missing:
      raise ValueError(f"vocab_file {vocab_file}: missing special tokens {missing}")
    self.special: Dict[str, int] = {s: index[s] for s in SPECIALS}
    self.pad_id, self.cls_id = self.special["[PAD]"], self.special["[CLS]"]
    self.sep_id, self.mask_id = self.special["[SEP]"], self.special["[MASK]"]
    self.vocab_size = len(self.tokens)
    self.max_tokens = max_tokens
    # Whole-word masking needs "is this id a ##continuation"; a constant gather table is cheapest.
    self.is_subword = np.array([t.startswith("##") for t in self.tokens], np.bool_)
    init = tf.lookup.KeyValueTensorInitializer(tf.constant(self.tokens), tf.range(len(self.tokens), dtype=tf.int64))
    self._table = tf.lookup.StaticHashTable(init, default_value=-1)
    self._tok = tf_text.BertTokenizer(self._table, token_out_type=tf.int64, unknown_token="[UNK]", lower_case=True)

  def pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """texts [B] → their wordpiece ids [B, (pieces)] int64 (no [CLS]/[SEP], no cut)."""
    return self._tok.tokenize(texts).merge_dims(-2, -1)

  def tokens_of(self, ids):
    """Wordpiece strings of ids (tests and debugging)."""
    return [self.tokens[int(i)] for i in ids]
