"""Decoding for X²-VLM: VQA answer-list ranking, free-form VQA generation, MLM captioning.

Everything here is one jitted program per call: the token loop is a `lax.while_loop` over a
fixed-size key/value cache (`TextStack.init_cache`), the vision / question memory is projected into
cross-attention keys/values once, and beams share that memory by folding into the query axis
(`BertAttention.attend`) instead of being copied. Shapes are static: `max_len` steps at most.

  rank_answers        docs/reference.md §5.2 `rank_answer` (ALBEF): first-token top-k, teacher-forced re-scoring.
  generate_answers    free-form VQA answers, greedy or beam search (not in the release; asked for
                      in github.com/zengyan-97/X2-VLM/issues/11).
  generate_captions   docs/reference.md §5.5: UniLM s2s-ft beam search with the MLM head ([MASK] at the next position).

The search engines `greedy_search` / `beam_search` take a `step_fn(tokens, t, state) → (logp, state)`
so that the scoring rules (min length, n-gram blocking, frozen finished beams) can be unit-tested on
hand-made distributions; `answer_steps` / `caption_steps` build the model-backed step functions.
"""

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# The official s2s-ft penalty for forbidden tokens and finished beams (added to log-probabilities).
PENALTY = -10000.0
_NEG = -1e30  # an impossible score (no candidate yet)


class Generated(NamedTuple):
  """tokens [B, max_len]: the generated ids, [SEP] and everything after it replaced by pad;
  lengths [B]: tokens before [SEP]; scores [B]: summed (penalised) log-probabilities of the returned
  hypothesis including its [SEP], divided by the length penalty if one is used."""

  tokens: jax.Array
  lengths: jax.Array
  scores: jax.Array


# ----------------------------------------------------------------------------------------------------
# Scoring rules shared by greedy and beam search
# ----------------------------------------------------------------------------------------------------
def repeated_ngram_mask(seqs, length, n: int, vocab_size: int):
  """seqs [N, T] (generated tokens, the first `length` valid) → bool [N, V]: tokens w such that
  (the last n−1 tokens, w) already occurs as an n-gram of the sequence (s2s-ft
  `get_dup_ngram_candidates`; the prompt is not part of `seqs`)."""
  nrows, tmax = seqs.shape
  if n < 1 or tmax < n:
    return jnp.zeros((nrows, vocab_size), bool)
  tail = [jnp.take(seqs, jnp.maximum(length - (n - 1) + j, 0), axis=1) for j in range(n - 1)]
  starts = jnp.arange(tmax - n + 1)
  match = starts[None, :] + n - 1 < length  # the whole n-gram is generated
  for j in range(n - 1):
    match &= seqs[:, j : j + tmax - n + 1] == tail[j][:, None]
  rows = jnp.broadcast_to(jnp.arange(nrows)[:, None], match.shape)
  hits = jnp.zeros((nrows, vocab_size), jnp.int32).at[rows, seqs[:, n - 1 :]].add(match.astype(jnp.int32))
  return hits > 0


def adjust_log_probs(logp, seqs, t, *, eos_id: int, min_length: int, no_repeat_ngram: int):
  """The s2s-ft rules for step t (0-based) in the official order: a token that would repeat an
  n-gram gets +PENALTY; [SEP] is set to PENALTY while t + 1 ≤ min_length."""
  if no_repeat_ngram:
    logp = logp + PENALTY * repeated_ngram_mask(seqs, t, no_repeat_ngram, logp.shape[-1])
  if min_length:
    logp = logp.at[:, eos_id].set(jnp.where(t + 1 <= min_length, PENALTY, logp[:, eos_id]))
  return logp


def _finish(seqs, ends, eos_id: int, pad_id: int):
  """seqs [B, T] whose hypothesis ends at frame `ends` [B] → (tokens with [SEP]/tail → pad, lengths)."""
  pos = jnp.arange(seqs.shape[1])[None]
  last = jnp.take_along_axis(seqs, ends[:, None], axis=1)[:, 0]
  lengths = jnp.where(last == eos_id, ends, ends + 1)
  return jnp.where(pos < lengths[:, None], seqs, pad_id), lengths


# ----------------------------------------------------------------------------------------------------
# Search engines
# ----------------------------------------------------------------------------------------------------
StepFn = Callable[[jax.Array, jax.Array, object], tuple]


def greedy_search(
  step_fn: StepFn,
  first_logp,
  state,
  *,
  max_len: int,
  eos_id: int,
  pad_id: int,
  min_length: int = 0,
  no_repeat_ngram: int = 0,
) -> Generated:
  """Arg-max decoding until [SEP] or `max_len` tokens, with the same rules as `beam_search`.

  first_logp [B, V]: log-probabilities of the first token (from the prefix pass); state: what
  `step_fn` needs for rows [B]; step_fn(tokens [B] (chosen at step t−1), t, state) → (logp [B, V], state).
  """
  b = first_logp.shape[0]
  rules = dict(eos_id=eos_id, min_length=min_length, no_repeat_ngram=no_repeat_ngram)
  seqs = jnp.full((b, max_len), pad_id, jnp.int32)
  logp = adjust_log_probs(first_logp.astype(jnp.float32), seqs, 0, **rules)
  tok = jnp.argmax(logp, -1).astype(jnp.int32)
  seqs = seqs.at[:, 0].set(tok)
  score = jnp.take_along_axis(logp, tok[:, None], 1)[:, 0]
  done = tok == eos_id
  ends = jnp.zeros((b,), jnp.int32)

  def cond(c):
    t, _, _, _, done, _, _ = c
    return (t < max_len) & ~jnp.all(done)

  def body(c):
    t, seqs, tok, score, done, ends, state = c
    logp, state = step_fn(tok, t, state)
    logp = adjust_log_probs(logp.astype(jnp.float32), seqs, t, **rules)
    new = jnp.argmax(logp, -1).astype(jnp.int32)
    new = jnp.where(done, pad_id, new)
    seqs = jax.lax.dynamic_update_slice_in_dim(seqs, new[:, None], t, axis=1)
    score = score + jnp.where(done, 0.0, jnp.take_along_axis(logp, new[:, None], 1)[:, 0])
    ends = jnp.where(done, ends, t)
    return t + 1, seqs, new, score, done | (new == eos_id), ends, state

  _, seqs, _, score, _, ends, _ = jax.lax.while_loop(
    cond, body, (jnp.asarray(1, jnp.int32), seqs, tok, score, done, ends, state)
  )
  tokens, lengths = _finish(seqs, ends, eos_id, pad_id)
  return Generated(tokens, lengths, score)


def _expand(tree, k: int):
  """Rows [B, ...] → [B·K, ...], beam-minor (row b·K + j is beam j of item b)."""
  return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), tree)


def _select(tree, rows):
  return jax.tree.map(lambda x: jnp.take(x, rows, axis=0), tree)


def beam_search(
  step_fn: StepFn,
  first_logp,
  state,
  *,
  num_beams: int,
  max_len: int,
  eos_id: int,
  pad_id: int,
  min_length: int = 0,
  no_repeat_ngram: int = 0,
  length_penalty: float = 0.0,
) -> Generated:
  """The beam search of UniLM s2s-ft as used by the official captioner (docs/reference.md §5.5).

  K beams; at each step every beam proposes its top-K tokens (after `adjust_log_probs`), a beam whose
  last token was [SEP] is finished and its continuations get +PENALTY (it is frozen: it survives only
  if nothing better is left), and the K best of the K·K candidates by summed log-probability go on.
  A hypothesis is complete at the frame where it emits [SEP]; the search of an item stops at the first
  frame where all K beams emit [SEP], and at the last frame (max_len) every beam counts. The best
  complete hypothesis by score / ((5 + frame + 1) / 6) ** length_penalty (penalty 0 = raw sum) is
  returned, the earliest frame winning ties.

  first_logp [B, V] and `state` are for rows [B]; the state is repeated per beam and re-ordered by
  the beams' back-pointers every step; step_fn sees rows [B·K] (beam-minor).
  """
  b, v = first_logp.shape
  k = num_beams
  rules = dict(eos_id=eos_id, min_length=min_length, no_repeat_ngram=no_repeat_ngram)

  def lp_norm(score, frame):
    if not length_penalty:
      return score
    return score / ((5.0 + frame.astype(jnp.float32) + 1.0) / 6.0) ** length_penalty

  def record(best, seqs, tok, score, frame, done):
    """Offers this frame's complete hypotheses (emitted [SEP], or any at the last frame)."""
    best_score, best_seq, best_end = best
    cand = (tok == eos_id) | (frame == max_len - 1)
    s = jnp.where(cand & ~done[:, None], lp_norm(score, frame), _NEG)
    j = jnp.argmax(s, axis=1)  # first beam on ties
    s_j = jnp.take_along_axis(s, j[:, None], 1)[:, 0]
    better = s_j > best_score  # strict: the earliest frame keeps a tie
    seq_j = jnp.take_along_axis(seqs, j[:, None, None], 1)[:, 0]
    return (
      jnp.where(better, s_j, best_score),
      jnp.where(better[:, None], seq_j, best_seq),
      jnp.where(better, frame, best_end),
    )

  # Frame 0: the K best first tokens of the single prefix distribution.
  seqs0 = jnp.full((b, max_len), pad_id, jnp.int32)
  logp = adjust_log_probs(first_logp.astype(jnp.float32), seqs0, 0, **rules)
  score, tok = jax.lax.top_k(logp, k)
  tok = tok.astype(jnp.int32)
  seqs = jnp.full((b, k, max_len), pad_id, jnp.int32).at[:, :, 0].set(tok)
  done = jnp.zeros((b,), bool)
  best = (jnp.full((b,), _NEG, jnp.float32), jnp.full((b, max_len), pad_id, jnp.int32), jnp.zeros((b,), jnp.int32))
  frame0 = jnp.asarray(0, jnp.int32)
  best = record(best, seqs, tok, score, frame0, done)
  done = jnp.all(tok == eos_id, axis=1)
  state = _expand(state, k)

  def cond(c):
    return (c[0] < max_len) & ~jnp.all(c[4])

  def body(c):
    t, seqs, tok, score, done, best, state = c
    logp, state = step_fn(tok.reshape(b * k), t, state)
    logp = adjust_log_probs(logp.astype(jnp.float32), seqs.reshape(b * k, max_len), t, **rules)
    kk_score, kk_tok = jax.lax.top_k(logp.reshape(b, k, v), k)  # [B, K, K]
    kk_score = kk_score + (PENALTY * (tok == eos_id) + score)[:, :, None]
    new_score, flat = jax.lax.top_k(kk_score.reshape(b, k * k), k)
    back = flat // k
    new_tok = jnp.take_along_axis(kk_tok.reshape(b, k * k), flat, 1).astype(jnp.int32)
    seqs = jnp.take_along_axis(seqs, back[:, :, None], 1)
    seqs = jax.lax.dynamic_update_slice_in_dim(seqs, new_tok[:, :, None], t, axis=2)
    state = _select(state, (jnp.arange(b)[:, None] * k + back).reshape(b * k))
    best = record(best, seqs, new_tok, new_score, t, done)
    done = done | jnp.all(new_tok == eos_id, axis=1)
    return t + 1, seqs, new_tok, new_score, done, best, state

  _, _, _, _, _, best, _ = jax.lax.while_loop(
    cond, body, (jnp.asarray(1, jnp.int32), seqs, tok, score, done, best, state)
  )
  best_score, best_seq, best_end = best
  tokens, lengths = _finish(best_seq, best_end, eos_id, pad_id)
  return Generated(tokens, lengths, best_score)


def _search(step_fn, first_logp, state, *, num_beams: int, search: str, **kw) -> Generated:
  if search == "greedy":
    kw.pop("length_penalty", None)
    return greedy_search(step_fn, first_logp, state, **kw)
  if search == "beam":
    return beam_search(step_fn, first_logp, state, num_beams=num_beams, **kw)
  raise ValueError(f"search: expected 'greedy' or 'beam', got {search!r}")


def _causal_over_slots(query_positions, num_slots: int):
  """[L_new] positions → [1, L_new, T] mask: a query sees the cache slots at or before its position."""
  return (jnp.arange(num_slots)[None, :] <= query_positions[:, None])[None].astype(jnp.int32)


def _log_softmax(logits):
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


# ----------------------------------------------------------------------------------------------------
# VQA (docs/reference.md §5.2)
# ----------------------------------------------------------------------------------------------------
def rank_answers(model, memory, memory_mask, answer_ids, answer_mask, k: int, *, double_count_first: bool = True):
  """The official `rank_answer`: → (answer indices [B, k], probabilities [B, k]), best first.

  memory/memory_mask [B, Lq, H] / [B, Lq]: `model.vqa_memory(...)` and the question mask.
  answer_ids/answer_mask [Na, La]: the tokenised answer list, [CLS] a₁ … [SEP] (pad 0).
  1. The decoder on [CLS] alone gives p(first token); each candidate is scored by p of its a₁ and
     the k best are kept. 2. Those k are re-scored teacher-forced: log p(a₁) + Σ_t log p(a_t | a_<t)
     — the first token counted twice, as in ALBEF/X²-VLM (`double_count_first=False` counts it once).
     3. Softmax over the k scores, sorted descending.
  """
  dec = model.decoder
  b = memory.shape[0]
  bos = jnp.broadcast_to(answer_ids[0, 0], (b, 1)).astype(jnp.int32)
  first = _log_softmax(dec(bos, jnp.ones((b, 1), jnp.int32), memory, memory_mask)[:, 0])
  first = jnp.take(first, answer_ids[:, 1], axis=1)  # [B, Na]
  first_k, idx = jax.lax.top_k(first, k)
  cand = jnp.take(answer_ids, idx, axis=0).reshape(b * k, -1)
  cand_mask = jnp.take(answer_mask, idx, axis=0).reshape(b * k, -1)
  nll = dec.answer_nll(cand, cand_mask, memory, memory_mask).reshape(b, k)  # memory shared by k rows
  score = -nll + (first_k if double_count_first else 0.0)
  probs, order = jax.lax.top_k(jax.nn.softmax(score, axis=-1), k)
  return jnp.take_along_axis(idx, order, 1), probs


def answer_steps(model, memory, memory_mask, *, bos_id: int, max_len: int):
  """(first_logp [B, V], state, step_fn) of the answer decoder with a KV cache of max_len + 1 slots
  ([CLS] at position 0, answer token t at position t + 1). The cross-attention keys/values of the
  memory are computed here once; beams read them through query folding."""
  dec = model.decoder
  b = memory.shape[0]
  slots = max_len + 1
  cross = dec.cross_kv(memory)
  cache = dec.init_cache(b, slots)
  pos0 = jnp.zeros((1,), jnp.int32)
  h, cache = dec.decode(
    jnp.full((b, 1), bos_id, jnp.int32), pos0[None], cache, 0, _causal_over_slots(pos0, slots), cross, memory_mask
  )
  first = _log_softmax(dec.mlm_logits(h[:, -1]))

  def step(tok, t, cache):
    pos = t[None]  # the token chosen at step t−1 sits at t
    h, cache = dec.decode(tok[:, None], pos[None], cache, t, _causal_over_slots(pos, slots), cross, memory_mask)
    return _log_softmax(dec.mlm_logits(h[:, -1])), cache

  return first, cache, step


@functools.partial(
  nnx.jit,
  static_argnames=("bos_id", "eos_id", "pad_id", "num_beams", "max_len", "min_length", "search", "length_penalty"),
)
def generate_answers(
  model,
  memory,
  memory_mask,
  *,
  bos_id: int,
  eos_id: int,
  pad_id: int = 0,
  num_beams: int = 3,
  max_len: int = 10,
  min_length: int = 0,
  search: str = "beam",
  length_penalty: float = 0.0,
) -> Generated:
  """Free-form answers from the VQA decoder (the release only ranks a list; github.com/zengyan-97/X2-VLM/issues/11).
  memory [B, Lq, H] from `model.vqa_memory`, memory_mask [B, Lq]. No n-gram blocking (answers are short)."""
  first, cache, step = answer_steps(model, memory, memory_mask, bos_id=bos_id, max_len=max_len)
  return _search(
    step,
    first,
    cache,
    num_beams=num_beams,
    search=search,
    max_len=max_len,
    eos_id=eos_id,
    pad_id=pad_id,
    min_length=min_length,
    length_penalty=length_penalty,
  )


rank_answers_jit = nnx.jit(rank_answers, static_argnames=("k", "double_count_first"))


# ----------------------------------------------------------------------------------------------------
# MLM captioning (docs/reference.md §5.5)
# ----------------------------------------------------------------------------------------------------
def caption_steps(
  model, image_embeds, image_mask, prompt_ids: Sequence[int], *, mask_id: int, max_len: int, use_cache: bool = True
):
  """(first_logp [B, V], state, step_fn) of the MLM captioner.

  The sequence is [CLS] + prompt (P tokens, positions 0 … P−1), then generated token t at position
  P + t. To predict token t a [MASK] is placed at position P + t; it sees every earlier real token
  and itself (causal mask), and the MLM head is read at the [MASK]. With the cache (UniLM's history
  states, docs/reference.md §5.5) a step runs only [token t−1, MASK] through the 18 layers: the token's keys/values
  are written into its slot, the [MASK]'s slot is overwritten by the real token one step later.
  `use_cache=False` is the reference/benchmark variant: the whole fixed-length sequence is recomputed
  every step (same search, same numbers up to float rounding).
  """
  text = model.text
  prompt = jnp.asarray(prompt_ids, jnp.int32)
  b, p = image_embeds.shape[0], len(prompt_ids)
  slots = p + max_len
  if image_mask is None:
    image_mask = jnp.ones(image_embeds.shape[:2], jnp.int32)
  mask_col = jnp.full((1,), mask_id, jnp.int32)

  if use_cache:
    cross = text.cross_kv(image_embeds)
    cache = text.init_cache(b, slots)
    pos = jnp.arange(p + 1, dtype=jnp.int32)
    ids = jnp.broadcast_to(jnp.concatenate([prompt, mask_col]), (b, p + 1))
    h, cache = text.decode(ids, pos[None], cache, 0, _causal_over_slots(pos, slots), cross, image_mask)
    first = _log_softmax(text.mlm_logits(h[:, -1]))

    def step(tok, t, cache):
      pos = jnp.stack([p + t - 1, p + t])
      ids = jnp.concatenate([tok[:, None], jnp.broadcast_to(mask_col, (tok.shape[0], 1))], axis=1)
      h, cache = text.decode(ids, pos[None], cache, p + t - 1, _causal_over_slots(pos, slots), cross, image_mask)
      return _log_softmax(text.mlm_logits(h[:, -1])), cache

    return first, cache, step

  causal = jnp.tril(jnp.ones((slots, slots), jnp.int32))[None]

  def full(seq, at):
    h = text.multi_modal(seq, causal, image_embeds, image_mask)
    return _log_softmax(text.mlm_logits(jax.lax.dynamic_index_in_dim(h, at, axis=1, keepdims=False)))

  seq = jnp.zeros((b, slots), jnp.int32).at[:, :p].set(prompt).at[:, p].set(mask_id)
  first = full(seq, p)

  def step_nocache(tok, t, seq):
    seq = jax.lax.dynamic_update_slice_in_dim(seq, tok[:, None], p + t - 1, axis=1)
    seq = jax.lax.dynamic_update_slice_in_dim(seq, jnp.full((seq.shape[0], 1), mask_id, jnp.int32), p + t, axis=1)
    return full(seq, p + t), seq

  return first, seq, step_nocache


@functools.partial(
  nnx.jit,
  static_argnames=(
    "prompt_ids",
    "mask_id",
    "eos_id",
    "pad_id",
    "num_beams",
    "max_len",
    "min_length",
    "no_repeat_ngram",
    "length_penalty",
    "search",
    "use_cache",
  ),
)
def generate_captions(
  model,
  image_embeds,
  image_mask=None,
  *,
  prompt_ids: tuple,
  mask_id: int,
  eos_id: int,
  pad_id: int = 0,
  num_beams: int = 3,
  max_len: int = 50,
  min_length: int = 5,
  no_repeat_ngram: int = 3,
  length_penalty: float = 0.0,
  search: str = "beam",
  use_cache: bool = True,
) -> Generated:
  """Captions for image_embeds [B, 1+N, D] with the MLM head (docs/reference.md §5.5; released config: prompt
  "a picture of ", 3 beams, min_length 5, max_length 50, trigram blocking, length_penalty 0).

  prompt_ids: ([CLS],) + the prompt's wordpieces, a tuple (static); the output holds only the
  generated tokens, never the prompt. At most `max_len` tokens are generated (prompt excluded). The
  official code allows batch_size + max_length POSITIONS instead of prompt_len + max_length
  (docs/reference.md §10 item 14: the caption budget then depends on the test batch size); that bug is
  deliberately not reproduced.
  """
  first, state, step = caption_steps(
    model, image_embeds, image_mask, prompt_ids, mask_id=mask_id, max_len=max_len, use_cache=use_cache
  )
  return _search(
    step,
    first,
    state,
    num_beams=num_beams,
    search=search,
    max_len=max_len,
    eos_id=eos_id,
    pad_id=pad_id,
    min_length=min_length,
    no_repeat_ngram=no_repeat_ngram,
    length_penalty=length_penalty,
  )
