"""The single 18-layer BERT stack of X²-VLM: 12 text-only layers + 6 fusion layers (docs/reference.md §1.4, §1.5).

Three execution modes share one set of weights:
  text        embeddings + layers [0, fusion_start)                    → unimodal text_embeds
  fusion      precomputed text_embeds + layers [fusion_start, L)       → fused states (cross-attention on)
  multi_modal embeddings + all layers (cross-attention iff vision given) → MLM / VQA / NLVR encoders
`fusion(text(ids)) == multi_modal(ids)` exactly; tested.

Incremental decoding (captioning, docs/reference.md §5.5; the VQA answer decoder, §5.2, is the same stack with
cross-attention in every layer): `init_cache` gives every layer a fixed-size [B, T, heads, head_dim]
buffer of self-attention keys/values, `cross_kv` projects the cross-attention memory once, and
`decode` runs only the new positions, writes their keys/values into the cache at `index` and lets them
attend to all T slots under a caller-given [B, L_new, T] mask. A cache slot is the token's position in
the sequence, so one causal rule (slot ≤ query position) covers prefix passes and single steps alike.
"""

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from x2vlm_jax.models import layers, scan
from x2vlm_jax.models.attention import (
  CROSS_ATTENTION_MASK_VALUE,
  SELF_ATTENTION_MASK_VALUE,
  additive_mask,
  dot_product_attention,
)


class BertEmbeddings(nnx.Module):
  def __init__(self, t, *, rngs: nnx.Rngs, dtype, hidden_dropout: float):
    init = layers.annotate(layers.bert_normal, ("vocab", "embed"))
    self.word = nnx.Embed(t.vocab_size, t.hidden, dtype=dtype, param_dtype=jnp.float32, embedding_init=init, rngs=rngs)
    self.position = nnx.Embed(
      t.max_positions,
      t.hidden,
      dtype=dtype,
      param_dtype=jnp.float32,
      embedding_init=layers.annotate(layers.bert_normal, (None, "embed")),
      rngs=rngs,
    )
    self.token_type = nnx.Embed(
      t.type_vocab_size,
      t.hidden,
      dtype=dtype,
      param_dtype=jnp.float32,
      embedding_init=layers.annotate(layers.bert_normal, (None, "embed")),
      rngs=rngs,
    )
    self.ln = layers.layer_norm(t.hidden, t.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.hidden_dropout = hidden_dropout

  def __call__(self, ids, rng=None, positions=None):
    # Explicit positions: captioning gives an inserted [MASK] the position of the token it precedes.
    if positions is None:
      positions = jnp.arange(ids.shape[1])[None]
    # Token types are always 0 in X²-VLM (docs/reference.md §10 item 19).
    x = self.word(ids) + self.position(positions) + self.token_type(jnp.zeros_like(ids))
    return layers.dropout(self.ln(x), self.hidden_dropout, rng)


class BertAttention(nnx.Module):
  """Self- or cross-attention sub-layer, post-LN: LN(x + Dropout(Out(Attn(Q(x), K(kv), V(kv)))))."""

  def __init__(
    self, t, kv_width: int, *, rngs: nnx.Rngs, dtype, implementation: str, hidden_dropout: float, drop_path: float
  ):
    h = t.hidden
    self.num_heads = t.num_heads
    self.implementation = implementation
    self.attention_dropout = t.attention_dropout
    self.hidden_dropout = hidden_dropout
    self.drop_path = drop_path
    self.query = layers.dense(h, h, ("embed", "heads"), rngs=rngs, dtype=dtype)
    self.key = layers.dense(kv_width, h, ("embed", "heads"), rngs=rngs, dtype=dtype)
    self.value = layers.dense(kv_width, h, ("embed", "heads"), rngs=rngs, dtype=dtype)
    self.out = layers.dense(h, h, ("heads", "embed"), rngs=rngs, dtype=dtype)
    self.ln = layers.layer_norm(h, t.layer_norm_eps, rngs=rngs, dtype=dtype)

  def project_kv(self, kv) -> Tuple[jax.Array, jax.Array]:
    """kv [B, L, W] → keys, values [B, L, heads, head_dim]."""
    b, length, _ = kv.shape
    n = self.num_heads
    return (self.key(kv).reshape(b, length, n, -1), self.value(kv).reshape(b, length, n, -1))

  def attend(self, x, k, v, bias, rng=None, drop_path=None):
    """Queries from x [Bq, Lq, H] against projected k/v [Bk, Lk, heads, head_dim].

    Bq may be a multiple R·Bk: rows r·R … r·R+R−1 (the answers of one question, the beams of one
    image) all read memory row r. They are folded into the query axis, [Bk, R·Lq], so the memory's
    keys/values are neither copied nor projected R times; a bias must then not depend on Lq.
    """
    b, lq, h = x.shape
    n = self.num_heads
    q = self.query(x).reshape(b, lq, n, h // n)
    if b != k.shape[0]:
      if b % k.shape[0] or (bias is not None and bias.shape[2] != 1):
        raise ValueError(
          f"attention: {b} query rows cannot share {k.shape[0]} memory rows with bias "
          f"{None if bias is None else bias.shape}"
        )
      q = q.reshape(k.shape[0], (b // k.shape[0]) * lq, n, h // n)
    r_attn, r_hidden, r_path = layers.split_rng(rng, 3)
    ctx = dot_product_attention(
      q, k, v, bias, implementation=self.implementation, dropout_rate=self.attention_dropout, rng=r_attn
    )
    y = layers.dropout(self.out(ctx.reshape(b, lq, h)), self.hidden_dropout, r_hidden)
    # Official text DropPath drops whole token positions across the batch: mask shape (1, L, 1).
    rate = self.drop_path if drop_path is None else drop_path
    y = layers.drop_path(y, rate, r_path, (1, lq, 1))
    return self.ln(x + y)

  def __call__(self, x, kv, bias, rng=None, drop_path=None):
    return self.attend(x, *self.project_kv(kv), bias, rng, drop_path)


class BertLayer(nnx.Module):
  def __init__(
    self,
    t,
    *,
    has_cross: bool,
    vision_width: int,
    drop_path: float,
    rngs: nnx.Rngs,
    dtype,
    implementation: str,
    hidden_dropout: float,
  ):
    kw = dict(rngs=rngs, dtype=dtype, implementation=implementation, hidden_dropout=hidden_dropout, drop_path=drop_path)
    self.self_attn = BertAttention(t, t.hidden, **kw)
    self.cross_attn = BertAttention(t, vision_width, **kw) if has_cross else None
    self.intermediate = layers.dense(t.hidden, t.ffn_dim, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.output = layers.dense(t.ffn_dim, t.hidden, ("mlp", "embed"), rngs=rngs, dtype=dtype)
    self.ln = layers.layer_norm(t.hidden, t.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.hidden_dropout = hidden_dropout
    self.drop_path = drop_path

  def __call__(self, x, self_bias, vision=None, vision_bias=None, rng=None, cross_kv=None, drop_path=None):
    """cross_kv: the cross-attention's projected memory (`cross_attn.project_kv(vision)`), if the
    caller computed it once for many calls; otherwise it is projected from `vision` here.
    drop_path: this call's rate instead of the constructor's (a scanned layer's, traced)."""
    r_self, r_cross, r_hidden, r_path = layers.split_rng(rng, 4)
    x = self.self_attn(x, x, self_bias, r_self, drop_path)
    return self._cross_and_ffn(x, vision, vision_bias, cross_kv, r_cross, r_hidden, r_path, drop_path)

  def _cross_and_ffn(self, x, vision, vision_bias, cross_kv, r_cross=None, r_hidden=None, r_path=None, drop_path=None):
    rate = self.drop_path if drop_path is None else drop_path
    if self.cross_attn is not None and (vision is not None or cross_kv is not None):
      if cross_kv is None:
        cross_kv = self.cross_attn.project_kv(vision)
      x = self.cross_attn.attend(x, *cross_kv, vision_bias, r_cross, drop_path)
    y = self.output(layers.gelu(self.intermediate(x)))
    y = layers.dropout(y, self.hidden_dropout, r_hidden)
    y = layers.drop_path(y, rate, r_path, (1, x.shape[1], 1))
    return self.ln(x + y)

  def decode(self, x, self_bias, cache: Tuple[jax.Array, jax.Array], index, cross_kv=None, cross_bias=None):
    """Deterministic incremental step: x [B, L_new, H] are the positions index … index+L_new−1;
    their keys/values go into cache slots of the same numbers, then they attend to all T slots
    (self_bias [B, 1, L_new, T] hides the future and the unused ones). → (x, new cache)."""
    k_new, v_new = self.self_attn.project_kv(x)
    k = jax.lax.dynamic_update_slice_in_dim(cache[0], k_new.astype(cache[0].dtype), index, axis=1)
    v = jax.lax.dynamic_update_slice_in_dim(cache[1], v_new.astype(cache[1].dtype), index, axis=1)
    x = self.self_attn.attend(x, k, v, self_bias)
    return self._cross_and_ffn(x, None, cross_bias, cross_kv), (k, v)


class MLMHead(nnx.Module):
  """dense → GELU → LayerNorm → (word embedding)ᵀ + bias. The decoder weight is tied (docs/reference.md §1.5)."""

  def __init__(self, t, *, rngs: nnx.Rngs, dtype):
    self.dense = layers.dense(t.hidden, t.hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.ln = layers.layer_norm(t.hidden, t.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.bias = nnx.Param(jnp.zeros((t.vocab_size,)), out_sharding=("vocab",), eager_sharding=False)

  def __call__(self, hidden, word_embed: nnx.Embed):
    h = self.ln(layers.gelu(self.dense(hidden)))
    return word_embed.attend(h) + self.bias[...].astype(h.dtype)


class TextStack(nnx.Module):
  """Embeddings + BERT layers + tied MLM head.

  The defaults build the 18-layer X²-VLM stack from `cfg.text`; the VQA answer decoder (docs/reference.md §5.2,
  `models/decoder.py`) is the same BertLMHeadModel with its own depth, cross-attention from layer 0
  and memory width H, hence the overrides.
  """

  def __init__(
    self,
    cfg,
    *,
    rngs: nnx.Rngs,
    num_layers: Optional[int] = None,
    fusion_start: Optional[int] = None,
    cross_width: Optional[int] = None,
  ):
    t = cfg.text
    dtype = jnp.dtype(cfg.dtype)
    num_layers = t.num_layers if num_layers is None else num_layers
    self.fusion_start = t.fusion_start if fusion_start is None else fusion_start
    cross_width = cfg.vision.width if cross_width is None else cross_width
    self.num_heads = t.num_heads
    self.dtype = dtype
    self.remat = scan.remat_policy(cfg, "text")
    self.constrain = bool(cfg.get("constrain_activations", True))
    # Official rule (xbert.py: BertEncoder.__init__): a positive text drop-path rate sets hidden dropout
    # to 0 for the encoder layers; BertModel builds its BertEmbeddings before the encoder, so the
    # embedding dropout keeps hidden_dropout_prob (0.1).
    hidden_dropout = 0.0 if t.drop_path_rate > 0 else t.hidden_dropout
    rates = list(np.linspace(0.0, t.drop_path_rate, self.fusion_start)) + list(
      np.linspace(0.0, t.cross_drop_path_rate, num_layers - self.fusion_start)
    )
    self.num_layers = num_layers
    self.drop_path_rates = tuple(float(r) for r in rates)
    self.embeddings = BertEmbeddings(t, rngs=rngs, dtype=dtype, hidden_dropout=t.hidden_dropout)

    def make(i, r, rate):
      return BertLayer(
        t,
        has_cross=i >= self.fusion_start,
        vision_width=cross_width,
        drop_path=rate,
        rngs=r,
        dtype=dtype,
        implementation=cfg.attention_impl,
        hidden_dropout=hidden_dropout,
      )

    if cfg.get("scan_layers", False):
      # Two scans (x2vlm_jax/models/scan.py): the text-only layers [0, fusion_start) and the fusion
      # layers [fusion_start, L) with cross-attention; rates and RNG keys are per-layer scan data.
      n_text, n_fusion = self.fusion_start, num_layers - self.fusion_start
      self.layers = None
      self.text_stack = scan.stacked(lambda r: make(0, r, 0.0), n_text, rngs) if n_text else None
      self.fusion_stack = scan.stacked(lambda r: make(num_layers, r, 0.0), n_fusion, rngs) if n_fusion else None
    else:
      self.layers = nnx.List([make(i, rngs, self.drop_path_rates[i]) for i in range(num_layers)])
      self.text_stack = self.fusion_stack = None
    self.mlm = MLMHead(t, rngs=rngs, dtype=dtype)

  def _run(self, x, mask, start: int, end: int, vision=None, vision_mask=None, rng=None):
    """`vision` may have fewer rows than `x` (Bv dividing B): text rows r·R … r·R+R−1 then all attend
    to vision row r, whose cross-attention keys/values are projected once per layer instead of once
    per text (retrieval's i2t rerank: one image against its k candidate captions)."""
    self_bias = additive_mask(mask, SELF_ATTENTION_MASK_VALUE)
    vision_bias = None
    shared = vision is not None and vision.shape[0] != x.shape[0]
    if vision is not None:
      if shared and x.shape[0] % vision.shape[0]:
        raise ValueError(f"fusion: {x.shape[0]} text rows cannot share {vision.shape[0]} vision rows")
      if vision_mask is None:
        vision_mask = jnp.ones(vision.shape[:2], jnp.int32)
      vision_bias = additive_mask(vision_mask, CROSS_ATTENTION_MASK_VALUE)
      vision = vision.astype(x.dtype)
    if self.layers is None:
      return self._run_scanned(x, self_bias, start, end, vision, vision_bias, shared, rng)
    rngs = layers.split_rng(rng, self.num_layers)
    call = scan.remat_layer(lambda layer, *a: layer(*a), self.remat)
    for i in range(start, end):
      lyr = self.layers[i]
      kv = lyr.cross_attn.project_kv(vision) if shared and lyr.cross_attn is not None else None
      x = self._constrain(call(lyr, x, self_bias, None if kv is not None else vision, vision_bias, rngs[i], kv))
    return x

  def _constrain(self, x):
    return scan.constrain_batch(x) if self.constrain else x

  def _groups(self, start: int, end: int):
    """The scanned groups covering layers [start, end) as (stack, first layer, last layer + 1)."""
    groups = [(self.text_stack, 0, self.fusion_start), (self.fusion_stack, self.fusion_start, self.num_layers)]
    out = []
    for stack, lo, hi in groups:
      if stack is None or hi <= start or lo >= end:
        continue
      if lo < start or hi > end:
        raise ValueError(f"scan_layers: layers [{start}, {end}) do not align with the scanned group [{lo}, {hi})")
      out.append((stack, lo, hi))
    return out

  def _run_scanned(self, x, self_bias, start, end, vision, vision_bias, shared, rng):
    for stack, lo, hi in self._groups(start, end):
      keys = scan.layer_keys(rng, self.num_layers, lo, hi)
      rates = scan.rates_input(self.drop_path_rates[lo:hi]) if keys is not None else None

      def body(lyr, h, inp, lo=lo):
        k, rate = inp
        rate = 0.0 if rate is None else rate
        kv = lyr.cross_attn.project_kv(vision) if shared and lyr.cross_attn is not None else None
        h = lyr(h, self_bias, None if kv is not None else vision, vision_bias, k, kv, rate)
        return self._constrain(h), None

      x, _ = scan.run(stack, x, body, xs=(keys, rates), policy=self.remat)
    return x

  def text(self, ids, mask, rng=None, positions=None):
    r_emb, r_layers = layers.split_rng(rng, 2)
    return self._run(self.embeddings(ids, r_emb, positions), mask, 0, self.fusion_start, rng=r_layers)

  def fusion(self, text_embeds, mask, vision, vision_mask=None, rng=None):
    return self._run(text_embeds, mask, self.fusion_start, self.num_layers, vision, vision_mask, rng)

  def multi_modal(self, ids, mask, vision=None, vision_mask=None, rng=None, positions=None):
    """mask: [B, L] padding mask or a 3-D [B, L, L] attention mask (captioning, causal decoders);
    positions: [B, L] or [1, L] position ids (default 0 … L−1)."""
    r_emb, r_layers = layers.split_rng(rng, 2)
    return self._run(self.embeddings(ids, r_emb, positions), mask, 0, self.num_layers, vision, vision_mask, r_layers)

  def mlm_logits(self, hidden):
    return self.mlm(hidden, self.embeddings.word)

  # --- incremental decoding (deterministic) ----------------------------------------------------------
  def init_cache(self, batch: int, length: int, dtype=None) -> Tuple[Tuple[jax.Array, jax.Array], ...]:
    """Zeroed self-attention key/value buffers, one (k, v) pair of [batch, length, heads, head_dim]
    per layer (compute dtype unless given). Slots a step has not written yet must be hidden by the
    mask passed to `decode`."""
    dtype = self.dtype if dtype is None else dtype
    h = self.embeddings.word.features
    shape = (batch, length, self.num_heads, h // self.num_heads)
    if self.layers is None:
      # Scanned: one (k, v) pair per group, [batch, layers, length, heads, head_dim] (batch first, so
      # that beam search re-orders every cache leaf on axis 0 in both layouts).
      return tuple(
        (jnp.zeros((batch, hi - lo) + shape[1:], dtype), jnp.zeros((batch, hi - lo) + shape[1:], dtype))
        for _, lo, hi in self._groups(0, self.num_layers)
      )
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in self.layers)

  def cross_kv(self, memory) -> Tuple[Optional[Tuple[jax.Array, jax.Array]], ...]:
    """Cross-attention keys/values of `memory` [Bm, Lm, W] for every layer that has cross-attention
    (None for the others), projected once per generation instead of once per step. Scanned: one entry per
    group, the fusion group's keys/values stacked on a leading layer axis."""
    if self.layers is None:
      out = []
      for stack, lo, hi in self._groups(0, self.num_layers):
        if lo < self.fusion_start:
          out.append(None)
          continue
        _, kv = scan.run(stack, None, lambda lyr, c, _: (c, lyr.cross_attn.project_kv(memory)))
        out.append(kv)
      return tuple(out)
    return tuple(None if lyr.cross_attn is None else lyr.cross_attn.project_kv(memory) for lyr in self.layers)

  def decode(self, ids, positions, cache, index, self_mask, cross_kv: Sequence = (), memory_mask=None):
    """Runs the new tokens ids [B, L_new] (position ids `positions`) through every layer.

    cache: `init_cache` layout; slots index … index+L_new−1 receive the new keys/values.
    self_mask: [B or 1, L_new, T] 0/1 over cache slots (which earlier positions each new one sees).
    cross_kv: `cross_kv(memory)` or () for no cross-attention (text-only); its batch may divide B
    (beams / answers sharing one memory row). memory_mask: [Bm, Lm] (default all ones).
    → (hidden [B, L_new, H], updated cache).
    """
    x = self.embeddings(ids, None, positions)
    self_bias = additive_mask(self_mask, SELF_ATTENTION_MASK_VALUE)
    cross_bias = None
    kv0 = next((kv for kv in cross_kv if kv is not None), None)
    if kv0 is not None:
      if memory_mask is None:
        # kv0[0]: [Bm, Lm, heads, head_dim], scanned [layers, Bm, Lm, heads, head_dim]
        memory_mask = jnp.ones(kv0[0].shape[-4:-2], jnp.int32)
      cross_bias = additive_mask(memory_mask, CROSS_ATTENTION_MASK_VALUE)
    if self.layers is None:
      return self._decode_scanned(x, self_bias, cache, index, cross_kv, cross_bias)
    new_cache = []
    for i, lyr in enumerate(self.layers):
      kv = cross_kv[i] if cross_kv else None
      x, c = lyr.decode(x, self_bias, cache[i], index, kv, cross_bias)
      new_cache.append(c)
    return x, tuple(new_cache)

  def _decode_scanned(self, x, self_bias, cache, index, cross_kv, cross_bias):
    """`decode` over the scanned groups: layer i of a group reads and rewrites slice i of the group's
    [B, layers, T, heads, head_dim] buffers, carried through the scan (updated in place by XLA)."""
    new_cache = []
    for g, (stack, lo, hi) in enumerate(self._groups(0, self.num_layers)):
      kv = cross_kv[g] if cross_kv else None

      def body(lyr, carry, inp):
        h, k_all, v_all = carry
        i, layer_kv = inp
        layer_cache = (
          jax.lax.dynamic_index_in_dim(k_all, i, axis=1, keepdims=False),
          jax.lax.dynamic_index_in_dim(v_all, i, axis=1, keepdims=False),
        )
        h, (k, v) = lyr.decode(h, self_bias, layer_cache, index, layer_kv, cross_bias)
        k_all = jax.lax.dynamic_update_index_in_dim(k_all, k, i, axis=1)
        v_all = jax.lax.dynamic_update_index_in_dim(v_all, v, i, axis=1)
        return (h, k_all, v_all), None

      (x, k_all, v_all), _ = scan.run(stack, (x, *cache[g]), body, xs=(jnp.arange(hi - lo), kv))
      new_cache.append((k_all, v_all))
    return x, tuple(new_cache)
