"""MLM masking of docs/reference.md §3.3 (`TextMaskingGenerator`), vectorised over a batch in the tf graph.

The official generator walks shuffled candidate positions one at a time. Here the walk is a
`tf.while_loop` over the rank t of the candidate (≤ max_tokens steps) with every row of the batch
advancing in parallel, which is equivalent row by row and far cheaper than a per-example loop.
"""

import tensorflow as tf

IGNORE_ID = -100


def _split(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def choose_masked_positions(
  ids,
  mask,
  seeds,
  *,
  is_subword,
  mask_prob,
  max_masks,
  skipgram_prb,
  skipgram_size,
  whole_word,
  num_source_tokens: int = 0,
):
  """The position choice of `TextMaskingGenerator` → bool [B, L] (True = chosen).

  seeds: 4 stateless seeds (order, span use, span length, overshoot cut). num_source_tokens = P:
  tokens 1 … P after [CLS] (the captioning prompt, docs/reference.md §5.5) are never chosen and do not count:
  n_pred = min(max_masks, max(1, round((n − P)·mask_prob))), candidates P+1 … n−1, and a span that
  starts at or before P adds nothing (the official loop stops at its first special position).
  """
  b, length = tf.shape(ids)[0], ids.shape[1]
  s_perm, s_span, s_len, s_keep = seeds
  n = tf.reduce_sum(mask, axis=1)  # incl. [CLS] and [SEP]
  n_src = num_source_tokens
  n_pred = tf.cast(tf.round(tf.cast(n - n_src, tf.float32) * mask_prob), tf.int32)  # half-to-even
  n_pred = tf.minimum(max_masks, tf.maximum(1, n_pred))
  pos = tf.range(length)[None, :]
  cand = (pos >= 1 + n_src) & (pos < n[:, None])  # final [SEP] included
  # Random order of the candidates: argsort of uniform keys with non-candidates pushed last.
  keys = tf.random.stateless_uniform([b, length], s_perm) + tf.cast(~cand, tf.float32) * 2.0
  order = tf.argsort(keys, axis=1, stable=True)
  use_span = tf.random.stateless_uniform([b, length], s_span) < skipgram_prb
  span_len = tf.random.stateless_uniform([b, length], s_len, minval=2, maxval=skipgram_size + 1, dtype=tf.int32)
  span_len = tf.where(use_span & (skipgram_size >= 2), span_len, 1)

  sub = tf.gather(tf.constant(is_subword), ids) & (mask > 0) if whole_word else tf.zeros([b, length], tf.bool)
  # word_start[i]: last non-continuation index ≤ i; next_word[i]: first non-continuation index ≥ i.
  # A masked [B, L, L] max/min is tiny at L ≤ 64 and traces far faster than a scan.
  j = tf.range(length)
  starts = tf.where(sub, -1, tf.broadcast_to(pos, [b, length]))[:, None, :]  # [B, 1, L(j)]
  word_start = tf.reduce_max(tf.where((j[None, :] <= j[:, None])[None], starts, -1), axis=-1)
  ends = tf.where(sub, length, tf.broadcast_to(pos, [b, length]))[:, None, :]
  next_word = tf.reduce_min(tf.where((j[None, :] >= j[:, None])[None], ends, length), axis=-1)
  next_word_ext = tf.concat([next_word, tf.fill([b, 1], length)], axis=1)  # index l → l

  def body(t, masked):
    p = order[:, t]
    active = (t < n - 1 - n_src) & (tf.reduce_sum(tf.cast(masked, tf.int32), 1) < n_pred)
    active &= ~tf.gather(masked, p, batch_dims=1)
    k = tf.gather(span_len, p, batch_dims=1)
    st = tf.gather(word_start, p, batch_dims=1)
    end = tf.minimum(p + k, length)
    end = tf.gather(next_word_ext, end, batch_dims=1)
    end = tf.minimum(end, n)  # positions > n-1 stop the span
    active &= st > n_src  # official: a special position stops it
    add = (pos >= st[:, None]) & (pos < end[:, None]) & active[:, None]
    return t + 1, masked | add

  _, masked = tf.while_loop(lambda t, m: t < length, body, (tf.constant(0), tf.zeros([b, length], tf.bool)))

  # Too many (spans overshoot): keep a random n_pred of them.
  keep_keys = tf.random.stateless_uniform([b, length], s_keep) + tf.cast(~masked, tf.float32) * 2.0
  rank = tf.argsort(tf.argsort(keep_keys, axis=1, stable=True), axis=1, stable=True)
  return masked & (rank < n_pred[:, None])


def mask_tokens(
  ids, mask, seed, *, is_subword, mask_id, vocab_size, mask_prob, max_masks, skipgram_prb, skipgram_size, whole_word
):
  """ids/mask [B, L] int32 ([CLS] … [SEP], 0-padded) → (ids_masked, masked_pos, mlm_labels)."""
  b, length = tf.shape(ids)[0], ids.shape[1]
  s_perm, s_span, s_len, s_keep, s_rep, s_rand = _split(seed, 6)
  masked = choose_masked_positions(
    ids,
    mask,
    (s_perm, s_span, s_len, s_keep),
    is_subword=is_subword,
    mask_prob=mask_prob,
    max_masks=max_masks,
    skipgram_prb=skipgram_prb,
    skipgram_size=skipgram_size,
    whole_word=whole_word,
  )
  pos = tf.range(length)[None, :]

  u = tf.random.stateless_uniform([b, length], s_rep)
  rand_ids = tf.random.stateless_uniform([b, length], s_rand, minval=0, maxval=vocab_size, dtype=tf.int32)
  new = tf.where(u < 0.8, mask_id, tf.where(u < 0.9, rand_ids, ids))
  ids_masked = tf.where(masked, new, ids)

  # masked_pos ascending, 0-padded to max_masks; labels −100 on padding.
  sort_keys = tf.where(masked, pos, length + pos)
  first = tf.argsort(sort_keys, axis=1)[:, :max_masks]
  got = tf.gather(masked, first, batch_dims=1)
  masked_pos = tf.where(got, first, 0)
  labels = tf.where(got, tf.gather(ids, first, batch_dims=1), IGNORE_ID)
  if length < max_masks:
    pad = [[0, 0], [0, max_masks - length]]
    masked_pos = tf.pad(masked_pos, pad)
    labels = tf.pad(labels, pad, constant_values=IGNORE_ID)
  return ids_masked, tf.cast(masked_pos, tf.int32), tf.cast(labels, tf.int32)
