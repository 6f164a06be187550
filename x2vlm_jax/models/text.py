"""The single 18-layer BERT stack of X²-VLM: 12 text-only layers + 6 fusion layers (spec §1.4, §1.5).

Three execution modes share one set of weights:
  text        embeddings + layers [0, fusion_start)                    → unimodal text_embeds
  fusion      precomputed text_embeds + layers [fusion_start, L)       → fused states (cross-attention on)
  multi_modal embeddings + all layers (cross-attention iff vision given) → MLM / VQA / NLVR encoders
`fusion(text(ids)) == multi_modal(ids)` exactly; tested.
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from x2vlm_jax.models import layers
from x2vlm_jax.models.attention import (CROSS_ATTENTION_MASK_VALUE, SELF_ATTENTION_MASK_VALUE,
                                        additive_mask, dot_product_attention)


class BertEmbeddings(nnx.Module):

  def __init__(self, t, *, rngs: nnx.Rngs, dtype, hidden_dropout: float):
    init = layers.annotate(layers.bert_normal, ("vocab", "embed"))
    self.word = nnx.Embed(t.vocab_size, t.hidden, dtype=dtype, param_dtype=jnp.float32,
                          embedding_init=init, rngs=rngs)
    self.position = nnx.Embed(t.max_positions, t.hidden, dtype=dtype, param_dtype=jnp.float32,
                              embedding_init=layers.annotate(layers.bert_normal, (None, "embed")), rngs=rngs)
    self.token_type = nnx.Embed(t.type_vocab_size, t.hidden, dtype=dtype, param_dtype=jnp.float32,
                                embedding_init=layers.annotate(layers.bert_normal, (None, "embed")), rngs=rngs)
    self.ln = layers.layer_norm(t.hidden, t.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.hidden_dropout = hidden_dropout

  def __call__(self, ids, rng=None):
    positions = jnp.arange(ids.shape[1])[None]
    # Token types are always 0 in X²-VLM (spec §10 item 19).
    x = self.word(ids) + self.position(positions) + self.token_type(jnp.zeros_like(ids))
    return layers.dropout(self.ln(x), self.hidden_dropout, rng)


class BertAttention(nnx.Module):
  """Self- or cross-attention sub-layer, post-LN: LN(x + Dropout(Out(Attn(Q(x), K(kv), V(kv)))))."""

  def __init__(self, t, kv_width: int, *, rngs: nnx.Rngs, dtype, implementation: str,
               hidden_dropout: float, drop_path: float):
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

  def __call__(self, x, kv, bias, rng=None):
    b, lq, h = x.shape
    n, dh = self.num_heads, h // self.num_heads
    q = self.query(x).reshape(b, lq, n, dh)
    k = self.key(kv).reshape(b, kv.shape[1], n, dh)
    v = self.value(kv).reshape(b, kv.shape[1], n, dh)
    r_attn, r_hidden, r_path = layers.split_rng(rng, 3)
    ctx = dot_product_attention(q, k, v, bias, implementation=self.implementation,
                                dropout_rate=self.attention_dropout, rng=r_attn)
    y = layers.dropout(self.out(ctx.reshape(b, lq, h)), self.hidden_dropout, r_hidden)
    # Official text DropPath drops whole token positions across the batch: mask shape (1, L, 1).
    y = layers.drop_path(y, self.drop_path, r_path, (1, lq, 1))
    return self.ln(x + y)


class BertLayer(nnx.Module):

  def __init__(self, t, *, has_cross: bool, vision_width: int, drop_path: float, rngs: nnx.Rngs, dtype,
               implementation: str, hidden_dropout: float):
    kw = dict(rngs=rngs, dtype=dtype, implementation=implementation, hidden_dropout=hidden_dropout,
              drop_path=drop_path)
    self.self_attn = BertAttention(t, t.hidden, **kw)
    self.cross_attn = BertAttention(t, vision_width, **kw) if has_cross else None
    self.intermediate = layers.dense(t.hidden, t.ffn_dim, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.output = layers.dense(t.ffn_dim, t.hidden, ("mlp", "embed"), rngs=rngs, dtype=dtype)
    self.ln = layers.layer_norm(t.hidden, t.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.hidden_dropout = hidden_dropout
    self.drop_path = drop_path

  def __call__(self, x, self_bias, vision=None, vision_bias=None, rng=None):
    r_self, r_cross, r_hidden, r_path = layers.split_rng(rng, 4)
    x = self.self_attn(x, x, self_bias, r_self)
    if self.cross_attn is not None and vision is not None:
      x = self.cross_attn(x, vision, vision_bias, r_cross)
    y = self.output(layers.gelu(self.intermediate(x)))
    y = layers.dropout(y, self.hidden_dropout, r_hidden)
    y = layers.drop_path(y, self.drop_path, r_path, (1, x.shape[1], 1))
    return self.ln(x + y)


class MLMHead(nnx.Module):
  """dense → GELU → LayerNorm → (word embedding)ᵀ + bias. The decoder weight is tied (spec §1.5)."""

  def __init__(self, t, *, rngs: nnx.Rngs, dtype):
    self.dense = layers.dense(t.hidden, t.hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.ln = layers.layer_norm(t.hidden, t.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.bias = nnx.Param(jnp.zeros((t.vocab_size,)), out_sharding=("vocab",), eager_sharding=False)

  def __call__(self, hidden, word_embed: nnx.Embed):
    h = self.ln(layers.gelu(self.dense(hidden)))
    return word_embed.attend(h) + self.bias[...].astype(h.dtype)


class TextStack(nnx.Module):

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    t = cfg.text
    dtype = jnp.dtype(cfg.dtype)
    self.fusion_start = t.fusion_start
    self.remat = bool(cfg.remat_text)
    # Official rule: a positive text drop-path rate forces hidden dropout to 0.
    hidden_dropout = 0.0 if t.drop_path_rate > 0 else t.hidden_dropout
    rates = list(np.linspace(0.0, t.drop_path_rate, t.fusion_start)) + list(
        np.linspace(0.0, t.cross_drop_path_rate, t.num_layers - t.fusion_start))
    self.embeddings = BertEmbeddings(t, rngs=rngs, dtype=dtype, hidden_dropout=hidden_dropout)
    self.layers = nnx.List([
        BertLayer(t, has_cross=i >= t.fusion_start, vision_width=cfg.vision.width, drop_path=float(rates[i]),
                  rngs=rngs, dtype=dtype, implementation=cfg.attention_impl, hidden_dropout=hidden_dropout)
        for i in range(t.num_layers)])
    self.mlm = MLMHead(t, rngs=rngs, dtype=dtype)

  def _run(self, x, mask, start: int, end: int, vision=None, vision_mask=None, rng=None):
    self_bias = additive_mask(mask, SELF_ATTENTION_MASK_VALUE)
    vision_bias = None
    if vision is not None:
      if vision_mask is None:
        vision_mask = jnp.ones(vision.shape[:2], jnp.int32)
      vision_bias = additive_mask(vision_mask, CROSS_ATTENTION_MASK_VALUE)
      vision = vision.astype(x.dtype)
    rngs = layers.split_rng(rng, len(self.layers))
    for i in range(start, end):
      if self.remat:
        x = nnx.remat(lambda lyr, *a: lyr(*a))(self.layers[i], x, self_bias, vision, vision_bias, rngs[i])
      else:
        x = self.layers[i](x, self_bias, vision, vision_bias, rngs[i])
    return x

  def text(self, ids, mask, rng=None):
    r_emb, r_layers = layers.split_rng(rng, 2)
    return self._run(self.embeddings(ids, r_emb), mask, 0, self.fusion_start, rng=r_layers)

  def fusion(self, text_embeds, mask, vision, vision_mask=None, rng=None):
    return self._run(text_embeds, mask, self.fusion_start, len(self.layers), vision, vision_mask, rng)

  def multi_modal(self, ids, mask, vision=None, vision_mask=None, rng=None):
    r_emb, r_layers = layers.split_rng(rng, 2)
    return self._run(self.embeddings(ids, r_emb), mask, 0, len(self.layers), vision, vision_mask, r_layers)

  def mlm_logits(self, hidden):
    return self.mlm(hidden, self.embeddings.word)
