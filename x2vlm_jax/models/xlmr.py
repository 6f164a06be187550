"""The multilingual text side of X²-VLM (docs/reference.md §1.8): XLM-R text encoder + separate cross encoder.

The official XVLMPlus / CrossViewLM (`models/xvlm.py: XVLMPlusBase`, `models/model_pretrain.py: CrossViewLM`)
replaces the English 18-layer stack by
  text_encoder   XLM-R: RoBERTa embeddings + BERT layers without cross-attention
  cross_encoder  a BertModel without embeddings whose every layer cross-attends to the vision tokens
  mlm_head       BertOnlyMLMHead built from the XLM-R config, decoder NOT tied to the word embeddings.
`XLMRStack` exposes the methods of `text.TextStack` (text / fusion / multi_modal / mlm_logits), so the
vision tower, ITC/ITM/MLM, the box head and the tasks run unchanged on either text side. Both towers
reuse `text.BertLayer` (the math of one RoBERTa layer is the math of one BERT layer).
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from x2vlm_jax.models import layers, scan
from x2vlm_jax.models.attention import CROSS_ATTENTION_MASK_VALUE, SELF_ATTENTION_MASK_VALUE, additive_mask
from x2vlm_jax.models.text import BertLayer


def roberta_position_ids(ids, pad_id: int, past: int = 0):
  """HF `create_position_ids_from_input_ids`: real tokens count up from pad_id + 1, padding gets pad_id.

  Positions depend on the ids, not on the attention mask (a <mask> token is a real token)."""
  real = (ids != pad_id).astype(jnp.int32)
  return (jnp.cumsum(real, axis=1) + past) * real + pad_id


class RobertaEmbeddings(nnx.Module):
  """word + position (ids offset by padding_idx + 1) + the single token type, then LayerNorm, dropout."""

  def __init__(self, t, *, rngs: nnx.Rngs, dtype, hidden_dropout: float):
    def embed(n, axes):
      return nnx.Embed(
        n,
        t.hidden,
        dtype=dtype,
        param_dtype=jnp.float32,
        embedding_init=layers.annotate(layers.bert_normal, axes),
        rngs=rngs,
      )

    self.word = embed(t.vocab_size, ("vocab", "embed"))
    self.position = embed(t.max_positions, (None, "embed"))
    self.token_type = embed(t.type_vocab_size, (None, "embed"))
    self.ln = layers.layer_norm(t.hidden, t.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.pad_id = int(t.pad_token_id)
    self.hidden_dropout = hidden_dropout

  def __call__(self, ids, rng=None, positions=None):
    # Explicit positions (0-based, as TextStack takes them) are shifted into RoBERTa's numbering.
    pos = roberta_position_ids(ids, self.pad_id) if positions is None else positions + self.pad_id + 1
    x = self.word(ids) + self.position(pos) + self.token_type(jnp.zeros_like(ids))
    return layers.dropout(self.ln(x), self.hidden_dropout, rng)


class UntiedMLMHead(nnx.Module):
  """BertOnlyMLMHead / RobertaLMHead: dense → GELU → LayerNorm → decoder (its own weight) + bias."""

  def __init__(self, t, *, rngs: nnx.Rngs, dtype):
    self.dense = layers.dense(t.hidden, t.hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.ln = layers.layer_norm(t.hidden, t.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.decoder = layers.dense(t.hidden, t.vocab_size, ("embed", "vocab"), rngs=rngs, dtype=dtype, use_bias=False)
    self.bias = nnx.Param(jnp.zeros((t.vocab_size,)), out_sharding=("vocab",), eager_sharding=False)

  def __call__(self, hidden):
    h = self.ln(layers.gelu(self.dense(hidden)))
    return self.decoder(h) + self.bias[...].astype(h.dtype)


def cross_config(cfg):
  """The per-layer config BertLayer reads, for the cross encoder: text width, `cross` geometry."""
  c = cfg.text.copy_and_resolve_references()
  c.update(
    num_heads=cfg.cross.num_heads,
    ffn_dim=cfg.cross.ffn_dim,
    layer_norm_eps=cfg.cross.layer_norm_eps,
    hidden_dropout=cfg.cross.hidden_dropout,
    attention_dropout=cfg.cross.attention_dropout,
  )
  return c


class XLMRStack(nnx.Module):
  """XLM-R (`layers`) + cross encoder (`cross`) + untied MLM head (`lm_head`), TextStack's interface.

  text        XLM-R on ids                                   → text_embeds (official get_text_embeds)
  fusion      cross encoder on text_embeds against `vision`  → fused states (official get_cross_embeds)
  multi_modal fusion(text(ids)) — XLM-R alone when there is no vision (or memory) to attend to
  """

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    t = cfg.text
    dtype = jnp.dtype(cfg.dtype)
    self.dtype = dtype
    self.num_heads = t.num_heads
    self.remat = scan.remat_policy(cfg, "text")
    self.constrain = bool(cfg.get("constrain_activations", True))
    # Same rule as TextStack: a positive text drop-path rate forces hidden dropout to 0. The official
    # cross encoder asserts that no `cross_drop_path_rate` is configured (XVLMPlusBase.build_cross_encoder).
    hidden_dropout = 0.0 if t.drop_path_rate > 0 else t.hidden_dropout
    self.drop_path_rates = tuple(float(r) for r in np.linspace(0.0, t.drop_path_rate, t.num_layers))
    kw = dict(dtype=dtype, implementation=cfg.attention_impl, vision_width=cfg.vision.width)
    self.embeddings = RobertaEmbeddings(t, rngs=rngs, dtype=dtype, hidden_dropout=hidden_dropout)
    c = cross_config(cfg)

    def text_layer(r, rate):
      return BertLayer(t, has_cross=False, drop_path=rate, hidden_dropout=hidden_dropout, rngs=r, **kw)

    def cross_layer(r):
      return BertLayer(c, has_cross=True, drop_path=0.0, hidden_dropout=c.hidden_dropout, rngs=r, **kw)

    if cfg.get("scan_layers", False):
      # One scan for the XLM-R layers, one for the cross encoder (x2vlm_jax/models/scan.py); per-layer
      # drop-path rates and RNG keys enter as scan data.
      self.layers = self.cross = None
      self.text_stack = scan.stacked(lambda r: text_layer(r, 0.0), t.num_layers, rngs)
      self.cross_stack = scan.stacked(cross_layer, cfg.cross.num_layers, rngs)
    else:
      self.layers = nnx.List([text_layer(rngs, r) for r in self.drop_path_rates])
      self.cross = nnx.List([cross_layer(rngs) for _ in range(cfg.cross.num_layers)])
      self.text_stack = self.cross_stack = None
    self.lm_head = UntiedMLMHead(t, rngs=rngs, dtype=dtype)
    self.fusion_start = t.num_layers

  def _run(self, group, x, mask, vision=None, vision_mask=None, rng=None):
    """`group`: "text" (the XLM-R layers) or "cross" (the cross encoder)."""
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

    def layer_call(lyr, h, key, rate=None):
      kv = lyr.cross_attn.project_kv(vision) if shared and lyr.cross_attn is not None else None
      h = lyr(h, self_bias, None if kv is not None else vision, vision_bias, key, kv, *([] if rate is None else [rate]))
      return scan.constrain_batch(h) if self.constrain else h

    stack = self.text_stack if group == "text" else self.cross_stack
    if stack is not None:
      n = scan.num_layers(stack)
      keys = scan.layer_keys(rng, n, 0, n)
      rates = scan.rates_input(self.drop_path_rates) if group == "text" and keys is not None else None

      def body(lyr, h, inp):
        k, rate = inp
        return layer_call(lyr, h, k, 0.0 if rate is None else rate), None

      x, _ = scan.run(stack, x, body, xs=(keys, rates), policy=self.remat)
      return x
    unrolled = self.layers if group == "text" else self.cross
    keys = layers.split_rng(rng, len(unrolled))
    call = scan.remat_layer(layer_call, self.remat)
    for i, lyr in enumerate(unrolled):
      x = call(lyr, x, keys[i])
    return x

  def text(self, ids, mask, rng=None, positions=None):
    r_emb, r_layers = layers.split_rng(rng, 2)
    return self._run("text", self.embeddings(ids, r_emb, positions), mask, rng=r_layers)

  def fusion(self, text_embeds, mask, vision, vision_mask=None, rng=None):
    """`vision` may have fewer rows than the text (Bv dividing B), as in TextStack.fusion."""
    return self._run("cross", text_embeds, mask, vision, vision_mask, rng)

  def multi_modal(self, ids, mask, vision=None, vision_mask=None, rng=None, positions=None):
    if mask.ndim != 2:
      raise NotImplementedError("xlmr text side: only [B, L] padding masks (no causal decoding)")
    r_text, r_fuse = layers.split_rng(rng, 2)
    embeds = self.text(ids, mask, r_text, positions)
    if vision is None:
      return embeds
    return self.fusion(embeds, mask, vision, vision_mask, r_fuse)

  def mlm_logits(self, hidden):
    return self.lm_head(hidden)

  def init_cache(self, *args, **kwargs):
    raise NotImplementedError(
      "xlmr text side: incremental decoding (captioning, the VQA answer decoder) is not built for the "
      "multilingual model; the official release has no multilingual captioner"
    )

  cross_kv = decode = init_cache
