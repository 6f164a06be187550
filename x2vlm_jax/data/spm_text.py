"""XLM-R SentencePiece tokenisation in the tf graph (tensorflow-text's SentencePiece op), the twin of
`inference/spm_tokenizer.py` (same ids: tests/test_spm_tokenizer.py).

The op returns the model's own ids; XLM-R shifts them by fairseq's offset (+1) and maps SentencePiece's
`<unk>` (0) to 3, `<mask>` is the last id (docs/reference.md §4.4; inference/spm_tokenizer.py explains).
"""

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from x2vlm_jax import fs
from x2vlm_jax.data.piece_tokenizer import PieceTokenizer
from x2vlm_jax.inference.spm_tokenizer import BOS_ID, EOS_ID, FAIRSEQ_OFFSET, PAD_ID, UNK_ID


class SentencePieceTokenizer(PieceTokenizer):
  """<s> pieces </s>, cut to `max_tokens`, padded with <pad> (1); the interface of data/text.py's tokenizer."""

  def __init__(self, model_file: str, max_tokens: int):
    proto = fs.path(model_file).read_bytes()
    if not proto:
      raise ValueError(f"sentencepiece model {model_file}: empty")
    self._tok = tf_text.SentencepieceTokenizer(model=proto, out_type=tf.int32)
    self.sp_size = int(self._tok.vocab_size().numpy())
    self._sp_unk = int(self._tok.string_to_id("<unk>").numpy())
    self.pad_id, self.cls_id, self.sep_id, self.unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    self.mask_id = self.sp_size + FAIRSEQ_OFFSET
    self.vocab_size = self.mask_id + 1
    self.special = {"<s>": BOS_ID, "<pad>": PAD_ID, "</s>": EOS_ID, "<unk>": UNK_ID, "<mask>": self.mask_id}
    self.max_tokens = max_tokens
    # The official multilingual datasets mask single pieces (mask_whole_word=False): no continuation ids.
    self.is_subword = np.zeros((self.vocab_size,), np.bool_)

  def pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """texts [B] → XLM-R ids of their pieces [B, (pieces)] int64 (no <s>/</s>, no cut)."""
    sp = self._tok.tokenize(texts)
    ids = tf.ragged.map_flat_values(lambda v: tf.where(v == self._sp_unk, UNK_ID, v + FAIRSEQ_OFFSET), sp)
    return tf.cast(ids, tf.int64)

  def tokens_of(self, ids):
    """Piece strings of ids (tests and debugging)."""
    names = {v: k for k, v in self.special.items()}
    return [names.get(int(i)) or self._tok.id_to_string(int(i) - FAIRSEQ_OFFSET).numpy().decode("utf-8") for i in ids]
