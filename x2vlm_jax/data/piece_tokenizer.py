"""What the two pipeline tokenizers (BERT WordPiece in data/text.py, XLM-R SentencePiece in
data/spm_text.py) share: a row of pieces framed by [CLS]/<s> and [SEP]/</s>, cut to `max_tokens`,
padded; and, from the same pass, which rows the cut shortened."""

import tensorflow as tf


class PieceTokenizer:
  """Subclasses set pad_id, cls_id, sep_id, max_tokens and implement `pieces`."""

  pad_id: int
  cls_id: int
  sep_id: int
  max_tokens: int

  def pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """texts [B] → piece ids [B, (pieces)] int64 (no [CLS]/[SEP], no cut)."""
    raise NotImplementedError

  def encode(self, texts: tf.Tensor):
    """texts [B] (already pre_caption-ed) → ids [B, L] int32, mask [B, L] int32, cut [B] int32 (1 where
    the text had more than max_tokens − 2 pieces, so that pieces were dropped)."""
    pieces = self.pieces(texts)  # [B, (pieces)]
    room = self.max_tokens - 2
    cut = tf.cast(pieces.row_lengths() > room, tf.int32)
    pieces = pieces[:, :room]
    b = tf.shape(texts)[0]
    cls = tf.fill([b, 1], tf.constant(self.cls_id, tf.int64))
    sep = tf.fill([b, 1], tf.constant(self.sep_id, tf.int64))
    ids = tf.concat([cls, pieces, sep], axis=1)
    dense = ids.to_tensor(default_value=self.pad_id, shape=[None, self.max_tokens])
    mask = tf.sequence_mask(ids.row_lengths(), self.max_tokens, dtype=tf.int32)
    return tf.cast(dense, tf.int32), mask, cut

  def __call__(self, texts: tf.Tensor):
    """texts [B] → ids [B, L] int32, mask [B, L] int32."""
    ids, mask, _ = self.encode(texts)
    return ids, mask
