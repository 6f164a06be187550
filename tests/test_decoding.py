"""Decoding (inference/decoding.py): the s2s-ft beam search against a plain-Python port of the
official loop, its scoring rules on hand-made distributions, greedy = beam search with one beam, the
KV-cached steps against full recomputation of the prefix, answer-list ranking against brute force,
and explicit position ids / 3-D masks against the PyTorch reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from reference.x2vlm_torch import X2VLMReference

from x2vlm_jax.convert import assemble
from x2vlm_jax.convert import layout as L
from x2vlm_jax.inference import decoding as D
from x2vlm_jax.models import X2VLM, get_preset

EOS, PAD, MASK, CLS = 3, 0, 4, 2
PROMPT = (CLS, 20, 21, 22)


@pytest.fixture(scope="module")
def model():
  cfg = get_preset("tiny")
  cfg.heads.decoder_layers = 1
  m = X2VLM(cfg, rngs=nnx.Rngs(5))
  # Random init gives nearly uniform distributions; sharpen the heads so searches have real choices.
  for head in (m.text.mlm, m.decoder.mlm):
    head.ln.scale.value = head.ln.scale.value * 6.0
  return m


@pytest.fixture(scope="module")
def image():
  return jax.random.normal(jax.random.key(1), (2, 5, 64))


@pytest.fixture(scope="module")
def question(model, image):
  """(memory [2, 5, H], question mask) of two questions about the two images."""
  q = jnp.array([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
  qm = (q > 0).astype(jnp.int32)
  return nnx.jit(lambda m, q, qm, im: m.vqa_memory(q, qm, im))(model, q, qm, image), qm


# --- scoring rules ----------------------------------------------------------------------------------


def test_repeated_ngram_mask_hand_cases():
  seqs = jnp.array(
    [
      [5, 6, 5, 6, 0, 0, 0],  # trigrams (5,6,5) (6,5,6); tail (5,6) → 5 banned
      [5, 6, 7, 5, 6, 0, 0],  # (5,6,7) …; tail (5,6) → 7 banned
      [1, 2, 1, 2, 1, 2, 9],  # only 4 generated: (1,2,1) (2,1,2); tail (1,2) → 1; 9 is beyond
      [5, 6, 0, 0, 0, 0, 0],
    ]
  )  # 2 tokens: no trigram yet
  lengths = [4, 5, 4, 2]
  for row, (length, banned) in enumerate(zip(lengths, ({5}, {7}, {1}, set()))):
    got = D.repeated_ngram_mask(seqs[row : row + 1], length, 3, 12)[0]
    assert set(np.flatnonzero(np.asarray(got)).tolist()) == banned, row


def _const_step(logp_row):
  """A model whose next-token distribution never changes."""
  table = jnp.asarray(logp_row, jnp.float32)
  return lambda tok, t, state: (jnp.broadcast_to(table, (tok.shape[0], table.shape[0])), state)


def test_min_length_forbids_eos_on_hand_logits():
  # [SEP] is always the favourite, then token 7, then 5: with min_length 3 the first three tokens
  # cannot be [SEP] (7 7 7), the fourth is.
  logp = np.log(np.array([0.01, 0.01, 0.01, 0.6, 0.01, 0.09, 0.01, 0.25, 0.01]))
  kw = dict(max_len=8, eos_id=EOS, pad_id=PAD, min_length=3)
  for search in ("greedy", "beam"):
    out = D._search(_const_step(logp), jnp.asarray(logp)[None], jnp.zeros((1,)), num_beams=2, search=search, **kw)
    assert out.tokens[0].tolist() == [7, 7, 7, 0, 0, 0, 0, 0] and int(out.lengths[0]) == 3, search
    assert float(out.scores[0]) == pytest.approx(3 * logp[7] + logp[3], rel=1e-5)
  # min_length 4 and trigram blocking: after 7 7 7 a fourth 7 would repeat (7,7,7) and [SEP] is still
  # forbidden, so 5 comes; then [SEP].
  out = D._search(
    _const_step(logp),
    jnp.asarray(logp)[None],
    jnp.zeros((1,)),
    num_beams=1,
    search="greedy",
    max_len=8,
    eos_id=EOS,
    pad_id=PAD,
    min_length=4,
    no_repeat_ngram=3,
  )
  assert out.tokens[0].tolist()[:5] == [7, 7, 7, 5, 0] and int(out.lengths[0]) == 4
  assert float(out.scores[0]) == pytest.approx(3 * logp[7] + logp[5] + logp[3], rel=1e-5)


def s2s_ft_reference(first, step, *, K, max_len, eos, min_length, ngram, length_penalty=0.0):
  """Plain-Python port of the official `XVLMForMLMCaptioning.beam_search` bookkeeping (UniLM s2s-ft)
  for one item: step(history, t) gives the next log-probabilities of a beam with that history."""
  total_scores, beam_masks, step_ids, step_ptrs, partial = [], [], [], [], []
  forbid = None
  for t in range(max_len):
    rows = np.array([first]) if t == 0 else np.array([step(partial[k], t) for k in range(K)])
    rows = rows.astype(np.float64)
    if forbid is not None:
      rows = rows + forbid * -10000.0
    if min_length and t + 1 <= min_length:
      rows[:, eos] = -10000.0
    kk_ids = np.argsort(-rows, axis=1, kind="stable")[:, :K]
    kk_scores = np.take_along_axis(rows, kk_ids, 1)
    if t == 0:
      ids, ptrs, scores = kk_ids[0], np.zeros(K, int), kk_scores[0]
    else:
      kk_scores = kk_scores + (np.array(beam_masks[-1]) * -10000.0 + np.array(total_scores[-1]))[:, None]
      flat = np.argsort(-kk_scores.reshape(-1), kind="stable")[:K]
      scores, ptrs, ids = kk_scores.reshape(-1)[flat], flat // K, kk_ids.reshape(-1)[flat]
    step_ptrs.append(ptrs)
    step_ids.append(ids)
    beam_masks.append((ids == eos).astype(float))
    total_scores.append(scores)
    partial = [[int(ids[k])] for k in range(K)] if t == 0 else [partial[ptrs[k]] + [int(ids[k])] for k in range(K)]
    forbid = None
    if ngram and len(partial[0]) >= ngram:
      forbid = np.zeros_like(rows[:1].repeat(K, 0))
      for k, seq in enumerate(partial):
        tail = seq[-(ngram - 1) :]
        for i in range(len(seq) - (ngram - 1)):
          if seq[i : i + ngram - 1] == tail:
            forbid[k, seq[i + ngram - 1]] = 1.0
  last = next((i for i, w in enumerate(step_ids) if all(x == eos for x in w)), len(step_ids) - 1)
  best, frame, pos = -math.inf, -1, -1
  for fid in range(last + 1):
    for i, w in enumerate(step_ids[fid]):
      if w == eos or fid == last:
        s = total_scores[fid][i]
        if length_penalty > 0:
          s /= math.pow((5 + fid + 1) / 6.0, length_penalty)
        if s > best:
          best, frame, pos = s, fid, i
  seq = [int(step_ids[frame][pos])]
  for fid in range(frame, 0, -1):
    pos = step_ptrs[fid][pos]
    seq.append(int(step_ids[fid - 1][pos]))
  return seq[::-1], best


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_equals_official_bookkeeping(seed):
  """A toy model whose distribution depends on a running hash of the beam's history (kept as the
  search state, so the back-pointer re-ordering of the state is exercised too)."""
  v, max_len, k = 9, 9, 3
  rng = np.random.default_rng(seed)
  table = rng.standard_normal((max_len, v, v)) * 2.5
  table[..., EOS] += 1.0  # beams finish often, so frozen finished beams and early stops matter
  table = table - np.log(np.exp(table).sum(-1, keepdims=True))
  first = table[0, 0]

  def h(state, tok):
    return (state * 7 + tok + 1) % v

  def step(tok, t, state):
    state = h(state, tok)
    return jnp.asarray(table, jnp.float32)[t, state], state

  def ref_step(history, t):
    s = 0
    for tok in history:
      s = (s * 7 + tok + 1) % v
    return table[t, s]

  # A length penalty lets longer hypotheses win, which is when frozen finished beams matter.
  for min_length, ngram, lp in ((2, 3, 0.0), (0, 0, 0.0), (0, 3, 2.0)):
    out = jax.jit(
      lambda f: D.beam_search(
        step,
        f,
        jnp.zeros((1,), jnp.int32),
        num_beams=k,
        max_len=max_len,
        eos_id=EOS,
        pad_id=PAD,
        min_length=min_length,
        no_repeat_ngram=ngram,
        length_penalty=lp,
      )
    )(jnp.asarray(first, jnp.float32)[None])
    seq, score = s2s_ft_reference(
      first, ref_step, K=k, max_len=max_len, eos=EOS, min_length=min_length, ngram=ngram, length_penalty=lp
    )
    words = [w for w in seq if w != EOS]
    assert out.tokens[0].tolist() == words + [PAD] * (max_len - len(words)), (seed, min_length)
    assert int(out.lengths[0]) == len(words)
    assert float(out.scores[0]) == pytest.approx(score, rel=1e-5, abs=1e-3)


# --- model-backed steps: cache = recomputation ------------------------------------------------------


@pytest.mark.slow  # the fast tier: the caption beam search with and without the cache (below)
def test_caption_cached_steps_equal_full_recomputation(model, image):
  """Rows = 2 images × 2 beams with different histories; the reference runs the whole prefix
  [CLS, prompt, y₀ … y_{t−1}, MASK] through the stack (`multi_modal`, no cache) with a causal mask."""
  hist = jnp.asarray(np.random.default_rng(0).integers(5, 200, (4, 3)), jnp.int32)

  @nnx.jit
  def both(model, image, hist):
    first, cache, step = D.caption_steps(model, image, None, PROMPT, mask_id=MASK, max_len=4)
    cache = D._expand(cache, 2)
    image_rows = jnp.repeat(image, 2, 0)

    def full(row_ids):
      n = row_ids.shape[1]
      h = model.text.multi_modal(row_ids, jnp.tril(jnp.ones((n, n), jnp.int32))[None], image_rows)
      return jax.nn.log_softmax(model.text.mlm_logits(h[:, -1]), -1)

    prompt = jnp.broadcast_to(jnp.asarray(PROMPT), (4, len(PROMPT)))
    cached, recomputed = [jnp.repeat(first, 2, 0)], [full(jnp.concatenate([prompt, jnp.full((4, 1), MASK)], 1))]
    for t in range(1, 4):
      logp, cache = step(hist[:, t - 1], jnp.asarray(t), cache)
      cached.append(logp)
      recomputed.append(full(jnp.concatenate([prompt, hist[:, :t], jnp.full((4, 1), MASK)], 1)))
    return cached, recomputed

  cached, recomputed = both(model, image, hist)
  for t, (a, b) in enumerate(zip(cached, recomputed)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, err_msg=f"step {t}")


def test_answer_cached_steps_equal_full_recomputation(model, question):
  hist = jnp.asarray(np.random.default_rng(1).integers(5, 200, (6, 3)), jnp.int32)  # 2 questions × 3 beams

  @nnx.jit
  def both(model, memory, qm, hist):
    first, cache, step = D.answer_steps(model, memory, qm, bos_id=CLS, max_len=4)
    cache = D._expand(cache, 3)
    mem_rows, mask_rows = jnp.repeat(memory, 3, 0), jnp.repeat(qm, 3, 0)

    def full(ids):
      logits = model.decoder(ids, jnp.ones(ids.shape, jnp.int32), mem_rows, mask_rows)
      return jax.nn.log_softmax(logits[:, -1], -1)

    cached, recomputed = [jnp.repeat(first, 3, 0)], [full(jnp.full((6, 1), CLS))]
    for t in range(1, 4):
      logp, cache = step(hist[:, t - 1], jnp.asarray(t), cache)
      cached.append(logp)
      recomputed.append(full(jnp.concatenate([jnp.full((6, 1), CLS), hist[:, :t]], 1)))
    return cached, recomputed

  cached, recomputed = both(model, *question, hist)
  for t, (a, b) in enumerate(zip(cached, recomputed)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, err_msg=f"step {t}")


# --- whole searches on the model -----------------------------------------------------------------


def test_caption_generation_beam1_is_greedy_and_cache_is_transparent(model, image):
  kw = dict(prompt_ids=PROMPT, mask_id=MASK, eos_id=EOS, max_len=7, min_length=2)
  greedy = D.generate_captions(model, image, search="greedy", **kw)
  beam1 = D.generate_captions(model, image, num_beams=1, **kw)
  np.testing.assert_array_equal(np.asarray(beam1.tokens), np.asarray(greedy.tokens))
  np.testing.assert_allclose(np.asarray(beam1.scores), np.asarray(greedy.scores), rtol=1e-5)
  beam3 = D.generate_captions(model, image, num_beams=3, **kw)
  nocache = D.generate_captions(model, image, num_beams=3, use_cache=False, **kw)
  np.testing.assert_array_equal(np.asarray(beam3.tokens), np.asarray(nocache.tokens))
  np.testing.assert_allclose(np.asarray(beam3.scores), np.asarray(nocache.scores), rtol=1e-5)


def test_answer_generation_beam1_is_greedy(model, question):
  memory, qm = question
  greedy = D.generate_answers(model, memory, qm, bos_id=CLS, eos_id=EOS, max_len=6, search="greedy")
  beam1 = D.generate_answers(model, memory, qm, bos_id=CLS, eos_id=EOS, max_len=6, num_beams=1)
  np.testing.assert_array_equal(np.asarray(beam1.tokens), np.asarray(greedy.tokens))
  np.testing.assert_allclose(np.asarray(beam1.scores), np.asarray(greedy.scores), rtol=1e-5)


@pytest.mark.slow  # the fast tier: the VQA evaluator's ranking against brute force (test_eval_vqa.py)
def test_rank_answers_equals_brute_force(model, question):
  """k = |answer list|: the ranking must order every candidate like scoring each one alone with the
  decoder's full forward: 2·log p(a₁|[CLS]) + Σ_{t≥2} log p(a_t|a_<t) + log p([SEP]|…) (ALBEF)."""
  memory, qm = question
  decoder_logits = nnx.jit(lambda m, x, mem, mm: m.decoder(x, jnp.ones_like(x), mem, mm))
  answers = [[2, 40, 3], [2, 41, 42, 3], [2, 43, 44, 3], [2, 46, 3], [2, 40, 47, 3]]
  la = max(map(len, answers))
  ids = np.array([a + [0] * (la - len(a)) for a in answers], np.int32)
  for double in (True, False):
    got_idx, got_p = D.rank_answers_jit(
      model, memory, qm, ids, (ids > 0).astype(np.int32), k=len(answers), double_count_first=double
    )
    for b in range(2):
      scores = []
      for a in answers:
        logits = np.asarray(decoder_logits(model, jnp.asarray([a]), memory[b : b + 1], qm[b : b + 1]))[0]
        logits = logits.astype(np.float64)
        logp = logits - logits.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        s = sum(logp[t, a[t + 1]] for t in range(len(a) - 1))
        scores.append(s + (logp[0, a[1]] if double else 0.0))
      scores = np.array(scores)
      probs = np.exp(scores - scores.max())
      probs /= probs.sum()
      order = np.argsort(-probs, kind="stable")
      assert np.asarray(got_idx[b]).tolist() == order.tolist(), (b, double)
      np.testing.assert_allclose(np.asarray(got_p[b]), probs[order], atol=1e-5)
  # With k < |list| the first-token filter keeps the k best first tokens only.
  idx, _ = D.rank_answers_jit(model, memory, qm, ids, (ids > 0).astype(np.int32), k=2)
  bos = jnp.full((2, 1), CLS)
  first = np.asarray(jax.nn.log_softmax(decoder_logits(model, bos, memory, qm)[:, 0], -1))[:, ids[:, 1]]
  for b in range(2):
    assert set(np.asarray(idx[b]).tolist()) == set(np.argsort(-first[b], kind="stable")[:2].tolist())


# --- explicit position ids and a 3-D mask against the PyTorch reference -----------------------------


def test_position_ids_and_3d_mask_match_reference(model, image):
  cfg = get_preset("tiny")
  flat = assemble.flatten(jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param))))
  sd = {}
  for e in L.layout(cfg):
    if e.key.startswith("text_encoder."):
      sd[e.key] = flat[e.path].T if e.kind == "linear" else flat[e.path]
  ref = X2VLMReference(sd, vision_heads=4, text_heads=4, fusion_start=2, num_layers=3)
  # The captioning convention: each [MASK] shares the position of the token after it.
  ids = np.array([[2, 20, 4, 30, 31, 4, 32, 3], [2, 20, 21, 4, 33, 3, 0, 0]], np.int32)
  pos = np.array([[0, 1, 2, 2, 3, 4, 4, 5], [0, 1, 2, 3, 3, 4, 5, 6]], np.int32)
  mask = np.tril(np.ones((8, 8), np.int32))[None].repeat(2, 0)
  for b, cols in ((0, (2, 5)), (1, (3,))):
    for c in cols:
      mask[b, :, c] = 0
      mask[b, c, c] = 1
  img = np.asarray(image)
  ours = model.text.mlm_logits(model.text.multi_modal(ids, mask, img, positions=pos))
  want = ref.mlm_logits(
    torch.from_numpy(ids).long(),
    torch.from_numpy(mask),
    torch.from_numpy(img),
    None,
    positions=torch.from_numpy(pos).long(),
  )
  np.testing.assert_allclose(np.asarray(ours), want.numpy(), atol=2e-5, rtol=0)
  shifted = model.text.mlm_logits(model.text.multi_modal(ids, mask, img))
  assert np.abs(np.asarray(shifted) - want.numpy()).max() > 1e-2  # the default positions differ
