"""Tokenisation parity with HF BertTokenizer and MLM masking statistics (docs/reference.md §3.3, §4.4)."""

import random

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from x2vlm_jax.data import masking  # noqa: E402
from x2vlm_jax.data.text import Tokenizer, pre_caption, pre_caption_py  # noqa: E402

MAX_TOKENS = 40


def _captions(vocab_file, n, seed):
  """Varied captions: real words, rare words split into ##pieces, punctuation, digits, accents, CJK."""
  rs = random.Random(seed)
  words = [w for w in open(vocab_file).read().split("\n") if w.isalpha() and len(w) > 1][:20000]
  odd = [
    "Café",
    "naïve",
    "Zoë's",
    "über-cool",
    "x-ray",
    "3.5kg",
    "1,000",
    "O'Neill",
    "e-mail",
    "antidisestablishmentarianism",
    "photobombing",
    "selfies",
    "<person>",
    "#hashtag",
    "don't",
    "(left)",
    "“quoted”",
    "—dash",
    "smörgåsbord",
    "東京",
    "niño",
    "ROCK&ROLL",
    "100%",
    "a/b",
    "well...",
    "what?!",
    "🙂",
    "☃☃",
    "ab" * 60,
    "item;",
    "x:y",
    "~approx",
    "*star*",
    "jalapeño",
    "Ångström",
    "façade",
  ]
  out = []
  for _ in range(n):
    k = rs.randint(1, 45)
    toks = [rs.choice(odd) if rs.random() < 0.2 else rs.choice(words) for _ in range(k)]
    toks = [t.upper() if rs.random() < 0.1 else t.capitalize() if rs.random() < 0.1 else t for t in toks]
    sep = rs.choice([" ", " ", "  ", ", ", " . "])
    out.append(sep.join(toks))
  return out


def test_pre_caption_graph_matches_python():
  caps = [
    "A Man, riding a horse!!",
    "  <person> in the   park. ",
    "x-ray/photo of (a) cat?",
    "one two three four five six",
    "...",
    "Tab\tseparated  words",
  ]
  got = [s.decode() for s in pre_caption(tf.constant(caps), 5).numpy()]
  assert got == [pre_caption_py(c, 5) for c in caps]
  assert got[0] == "a man riding a horse" and got[1] == "person in the park" and got[4] == ""


def test_tokenisation_parity_with_hf(bert_vocab_file):
  """The cut is the official PRE-TRAINING one (dataset/pretrain_dataset.py: `[cls] + tokens[:max_tokens
  - 1]`, then with add_eos=True, always set, `tokens[:max_tokens - 1] + [eos]`): [CLS] + the first
  max_tokens − 2 wordpieces + [SEP], which is HF's `truncation=True`. Fine-tuning retrieval does not cut
  officially (README deviations)."""
  from transformers import BertTokenizer

  hf = BertTokenizer(bert_vocab_file, do_lower_case=True)
  tok = Tokenizer(bert_vocab_file, MAX_TOKENS)
  assert (tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id) == (101, 102, 103, 0)
  caps = _captions(bert_vocab_file, 1200, seed=0)
  clean = [pre_caption_py(c, MAX_TOKENS) for c in caps]
  assert [s.decode() for s in pre_caption(tf.constant(caps), MAX_TOKENS).numpy()] == clean
  ids, mask = tok(tf.constant(clean))
  ids, mask = ids.numpy(), mask.numpy()
  mismatches = []
  for i, c in enumerate(clean):
    ref = hf(c, max_length=MAX_TOKENS, truncation=True)["input_ids"]
    got = ids[i, : mask[i].sum()].tolist()
    if got != ref:
      mismatches.append((c, got, ref))
  assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]}"
  assert mask.sum(1).max() == MAX_TOKENS  # truncation is exercised
  assert (ids == 100).any()  # [UNK] is exercised


def test_shapes_vocab_specials():
  from x2vlm_jax.data import shapes

  toks = open(shapes.VOCAB_FILE).read().split("\n")[:-1]
  assert len(toks) == 200 and toks[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  assert toks == shapes.vocab_tokens()
  tok = Tokenizer(shapes.VOCAB_FILE, 16)
  ids, _ = tok(tf.constant(["a small red circle left of a large blue square"]))
  assert ids.numpy()[0, 0] == 2 and 1 not in ids.numpy()[0]  # every caption word is in the vocab


# ------------------------------------------------------------------------ masking


def _reference_mask(tokens, rs, *, mask_prob=0.5, max_masks=12, skipgram_prb=0.2, skipgram_size=3):
  """The official generator of docs/reference.md §3.3, written from that description, on wordpiece strings."""
  n = len(tokens)
  n_pred = min(max_masks, max(1, int(round(n * mask_prob))))
  cand = list(range(1, n))
  rs.shuffle(cand)
  masked = set()
  for pos in cand:
    if len(masked) >= n_pred:
      break
    if pos in masked:
      continue
    k = rs.randint(2, skipgram_size) if rs.random() < skipgram_prb else 1
    st, end = pos, pos + k
    while st >= 0 and tokens[st].startswith("##"):
      st -= 1
    while end < n and tokens[end].startswith("##"):
      end += 1
    for p in range(st, end):
      if 0 < p <= n - 1:
        masked.add(p)
      else:
        break
  masked = list(masked)
  if len(masked) > n_pred:
    rs.shuffle(masked)
    masked = masked[:n_pred]
  return sorted(masked)


def _runs(pos_lists):
  """Histogram of lengths of contiguous masked runs."""
  h = np.zeros(16)
  for ps in pos_lists:
    ps = sorted(ps)
    run = 1
    for a, b in zip(ps, ps[1:] + [None]):
      if b is not None and b == a + 1:
        run += 1
      else:
        h[min(run, 15)] += 1
        run = 1
  return h / h.sum()


def _whole_word_rate(pos_lists, pieces):
  """Among multi-piece words touched by the masking, the fraction masked completely."""
  full = touched = 0
  for ps, toks in zip(pos_lists, pieces):
    ps = set(ps)
    i = 1
    while i < len(toks):
      j = i + 1
      while j < len(toks) and toks[j].startswith("##"):
        j += 1
      if j - i > 1 and ps & set(range(i, j)):
        touched += 1
        full += set(range(i, j)) <= ps
      i = j
  return full / max(touched, 1)


def test_masking_statistics(bert_vocab_file):
  tok = Tokenizer(bert_vocab_file, MAX_TOKENS)
  caps = [pre_caption_py(c, MAX_TOKENS) for c in _captions(bert_vocab_file, 10000, seed=1)]
  ids, mask = tok(tf.constant(caps))
  ids_m, mpos, labels = masking.mask_tokens(
    ids,
    mask,
    tf.constant([3, 4], tf.int64),
    is_subword=tok.is_subword,
    mask_id=tok.mask_id,
    vocab_size=tok.vocab_size,
    mask_prob=0.5,
    max_masks=12,
    skipgram_prb=0.2,
    skipgram_size=3,
    whole_word=True,
  )
  ids, mask, ids_m, mpos, labels = (x.numpy() for x in (ids, mask, ids_m, mpos, labels))
  n = mask.sum(1)
  real = labels != -100
  # masked count per caption is exactly min(max_masks, max(1, round_half_even(n * 0.5)))
  np.testing.assert_array_equal(real.sum(1), np.minimum(12, np.maximum(1, np.round(n * 0.5))))
  # labels are the gold ids; [CLS] is never masked; positions inside the text
  rows = np.arange(len(ids))[:, None]
  assert (labels[real] == ids[rows, mpos][real]).all()
  assert (mpos[real] >= 1).all() and (mpos[real] < n[:, None].repeat(12, 1)[real]).all()
  assert (ids_m[:, 0] == 101).all()
  # unmasked positions are untouched
  m = np.zeros_like(ids, bool)
  m[rows.repeat(12, 1)[real], mpos[real]] = True
  assert (ids_m[~m] == ids[~m]).all()
  # 80/10/10 (±1.5 %): [MASK] / random over the WHOLE vocab / unchanged
  new, gold = ids_m[m], ids[m]
  p_mask = (new == 103).mean()
  p_same = ((new == gold) & (gold != 103)).mean()
  assert abs(p_mask - 0.8) < 0.015 and abs(p_same - 0.1) < 0.015, (p_mask, p_same)
  rand = new[(new != 103) & (new != gold)]
  assert abs(len(rand) / len(new) - 0.1) < 0.015
  assert rand.min() < 999 and rand.max() > 29000  # specials/[unused] reachable, whole range used
  assert abs(rand.mean() / 30522 - 0.5) < 0.04
  # final [SEP] is a candidate: masked in about the reference's share of captions
  sep_masked = m[np.arange(len(ids)), n - 1].mean()

  # Spans and whole words: distributions match the reference algorithm (docs/reference.md §3.3) on the same pieces.
  pieces = [tok.tokens_of(r[:k]) for r, k in zip(ids, n)]
  rs = random.Random(0)
  ref = [_reference_mask(p, rs) for p in pieces]
  ours = [sorted(mpos[i][real[i]].tolist()) for i in range(len(ids))]
  assert all(len(a) == len(b) for a, b in zip(ours, ref))
  tv = 0.5 * np.abs(_runs(ours) - _runs(ref)).sum()
  assert tv < 0.02, (tv, _runs(ours)[:6], _runs(ref)[:6])
  ww, ww_ref = _whole_word_rate(ours, pieces), _whole_word_rate(ref, pieces)
  assert abs(ww - ww_ref) < 0.02 and ww > 0.8, (ww, ww_ref)
  sep_ref = np.mean([p[-1] == len(t) - 1 for p, t in zip(ref, pieces)])
  assert sep_masked > 0.05 and abs(sep_masked - sep_ref) < 0.02, (sep_masked, sep_ref)
  # whole-word masking matters: without it, far fewer multi-piece words are masked completely
  _, mpos2, labels2 = masking.mask_tokens(
    tf.constant(ids),
    tf.constant(mask),
    tf.constant([3, 4], tf.int64),
    is_subword=tok.is_subword,
    mask_id=tok.mask_id,
    vocab_size=tok.vocab_size,
    mask_prob=0.5,
    max_masks=12,
    skipgram_prb=0.2,
    skipgram_size=3,
    whole_word=False,
  )
  r2 = labels2.numpy() != -100
  ours2 = [sorted(mpos2.numpy()[i][r2[i]].tolist()) for i in range(len(ids))]
  assert _whole_word_rate(ours2, pieces) < ww - 0.1
