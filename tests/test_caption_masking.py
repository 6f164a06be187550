"""Captioning training input (docs/reference.md §5.5): [MASK] insertion, position ids and the 3-D attention mask
against an independent numpy construction of the official `preprocess_fg_free`; the masked-position
choice with the prompt excluded; the label-smoothed KL loss against a numpy formula."""

import numpy as np
import pytest
import tensorflow as tf

from x2vlm_jax.data import caption_masking as C

PAD, CLS, SEP, MASK = 0, 2, 3, 4
MAX_TOKENS, MAX_MASKS = 12, 4


def official_fg_free(tokens, chosen, max_tokens, max_masks):
  """Numpy port of the official construction (docs/reference.md §5.5) for one caption (tokens: real ids, no padding)."""
  rebuilt, positions, masked_pos, masked_ids = [], [], [], []
  for p, tok in enumerate(tokens):
    if p in chosen:
      masked_pos.append(len(rebuilt))
      rebuilt += [MASK, tok]
      positions += [p, p]
      masked_ids.append(tok)
    else:
      rebuilt.append(tok)
      positions.append(p)
  t = max_tokens + max_masks
  att = np.tril(np.ones((t, t), np.int32))
  for c in masked_pos:
    att[:, c] = 0
    att[c, c] = 1
  n_pad = t - len(rebuilt)
  positions += list(range(len(tokens), len(tokens) + n_pad))
  rebuilt += [PAD] * n_pad
  k = len(masked_ids)
  return dict(
    ids=rebuilt,
    positions=positions,
    attention=att,
    masked_pos=masked_pos + [0] * (max_masks - k),
    masked_ids=masked_ids + [CLS] * (max_masks - k),
    masked_weight=[1] * k + [0] * (max_masks - k),
  )


def test_insert_masks_equals_the_official_construction():
  # [CLS] a picture of | w1 w2 ##w2 w3 [SEP]; the chosen sets include the first caption token, a
  # continuation piece, the final [SEP], and a row with no mask at all.
  rows = [
    ([CLS, 20, 21, 22, 30, 31, 32, 33, SEP], {4, 6, 8}),
    ([CLS, 20, 21, 22, 40, 41, SEP], {5}),
    ([CLS, 20, 21, 22, 50, 51, 52, 53, 54, 55, SEP], {4, 5, 9, 10}),
    ([CLS, 20, 21, 22, 60, SEP], set()),
  ]
  ids = np.full((len(rows), MAX_TOKENS), PAD, np.int32)
  chosen = np.zeros_like(ids, bool)
  for r, (toks, ch) in enumerate(rows):
    ids[r, : len(toks)] = toks
    chosen[r, sorted(ch)] = True
  got = C.insert_masks(
    tf.constant(ids), tf.constant(chosen), max_masks=MAX_MASKS, mask_id=MASK, pad_id=PAD, ignore_id=CLS
  )
  for r, (toks, ch) in enumerate(rows):
    want = official_fg_free(toks, ch, MAX_TOKENS, MAX_MASKS)
    for key, value in want.items():
      np.testing.assert_array_equal(got[key][r].numpy(), np.asarray(value), err_msg=f"row {r} {key}")
  # Spot-check docs/reference.md §5.5's wording on row 0: [MASK] before w1 at index 4 with w1's position 4; nobody
  # else sees it; it sees the prompt and itself, not w1.
  a = got["attention"][0].numpy()
  assert got["ids"][0, 4] == MASK and got["ids"][0, 5] == 30 and got["positions"][0, 4] == got["positions"][0, 5] == 4
  assert a[4, :5].tolist() == [1, 1, 1, 1, 1] and a[5:, 4].sum() == 0 and a[4, 5] == 0


@pytest.fixture(scope="module")
def vocab():
  is_sub = np.zeros(100, bool)
  is_sub[[32, 52, 53]] = True  # ##-pieces
  return is_sub


def _choose(ids, mask, seed, vocab, **kw):
  from x2vlm_jax.data.masking import choose_masked_positions

  seeds = tf.unstack(tf.random.experimental.stateless_split(tf.constant([seed, 1], tf.int64), 4))
  args = dict(is_subword=vocab, mask_prob=0.6, max_masks=18, skipgram_prb=0.2, skipgram_size=3, whole_word=True)
  args.update(kw)
  return choose_masked_positions(tf.constant(ids), tf.constant(mask), seeds, **args).numpy()


def test_choice_excludes_cls_and_prompt_and_counts_without_them(vocab):
  ids = np.array(
    [[CLS, 20, 21, 22, 30, 31, 32, 33, 34, 35, 36, SEP, 0, 0], [CLS, 20, 21, 22, 40, SEP, 0, 0, 0, 0, 0, 0, 0, 0]],
    np.int32,
  )
  mask = (ids > 0).astype(np.int32)
  n = mask.sum(1)
  for seed in range(20):
    ch = _choose(ids, mask, seed, vocab, num_source_tokens=3, skipgram_prb=0.0, whole_word=False)
    assert not ch[:, :4].any() and not (ch & (mask == 0)).any()
    # n_pred = min(18, max(1, round((n − 3) · 0.6))): 12 tokens → round(5.4) = 5; 6 tokens → round(1.8) = 2.
    assert ch.sum(1).tolist() == [5, 2] == [min(18, max(1, round((k - 3) * 0.6))) for k in n]
    ch = _choose(ids, mask, seed, vocab, num_source_tokens=3)
    assert not ch[:, :4].any()
    assert ch.sum(1)[0] <= 5  # spans and whole words never push the count past n_pred


def test_fg_free_inputs_end_to_end(vocab):
  pieces = tf.ragged.constant([[30, 31, 32, 33, 34, 35, 36, 37, 38, 39], [40, 41]], dtype=tf.int32)
  ids, mask = C.caption_ids(pieces, (20, 21, 22), cls_id=CLS, sep_id=SEP, pad_id=PAD, max_tokens=MAX_TOKENS)
  # The official cut drops [SEP] of the long caption: [CLS] + 3 prompt + 8 of its 10 pieces.
  assert ids.numpy()[0].tolist() == [CLS, 20, 21, 22, 30, 31, 32, 33, 34, 35, 36, 37]
  assert ids.numpy()[1].tolist() == [CLS, 20, 21, 22, 40, 41, SEP] + [PAD] * 5
  out = C.fg_free_inputs(
    ids,
    mask,
    tf.constant([3, 4], tf.int64),
    num_prompt_tokens=3,
    is_subword=vocab,
    mask_id=MASK,
    pad_id=PAD,
    ignore_id=CLS,
    max_masks=MAX_MASKS,
  )
  assert out["ids"].shape == (2, MAX_TOKENS + MAX_MASKS) and out["attention"].shape == (2, 16, 16)
  for r in range(2):
    k = int(out["masked_weight"][r].numpy().sum())
    mpos = out["masked_pos"][r].numpy()[:k]
    assert (out["ids"][r].numpy()[mpos] == MASK).all()
    # Each [MASK] predicts the token right after it, which has the same position id.
    np.testing.assert_array_equal(out["masked_ids"][r].numpy()[:k], out["ids"][r].numpy()[mpos + 1])
    np.testing.assert_array_equal(out["positions"][r].numpy()[mpos], out["positions"][r].numpy()[mpos + 1])
    assert k >= 1 and (mpos > 3).all()


def test_caption_loss_matches_numpy_kl():
  import jax.numpy as jnp

  from x2vlm_jax.objectives import caption_mlm_loss

  rng = np.random.default_rng(0)
  v, eps = 7, 0.1
  logits = rng.standard_normal((2, 3, v)).astype(np.float32) * 2
  gold = np.array([[5, 1, CLS], [4, 6, 0]], np.int32)  # [CLS] pads row 0's last slot
  w = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
  num = 0.0
  for b in range(2):
    for m in range(3):
      x = logits[b, m].astype(np.float64)
      logp = x - np.log(np.exp(x).sum())
      q = np.full(v, eps / (v - 2))
      q[CLS] = 0.0
      q[gold[b, m]] = 1 - eps
      if gold[b, m] == CLS:
        q[:] = 0.0
      kl = sum(q[i] * (np.log(q[i]) - logp[i]) for i in range(v) if q[i] > 0)
      num += kl * w[b, m]
  want = num / (w.sum() + 1e-5)
  got = float(caption_mlm_loss(jnp.asarray(logits), jnp.asarray(gold), jnp.asarray(w), ignore_id=CLS))
  assert got == pytest.approx(want, rel=1e-5)
