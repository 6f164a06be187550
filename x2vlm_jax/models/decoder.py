"""The VQA answer decoder of X²-VLM (docs/reference.md §5.2, official `text_decoder`, a BertLMHeadModel).

Its own word/position/type embeddings, `cfg.heads.decoder_layers` BERT layers (post-LN), each =
causal self-attention + cross-attention to the question memory (the 18-layer stack's multi_modal
output, so keys/values come from width H, not the vision width) + FFN, and an MLM-style head tied to
ITS OWN word embeddings. Structurally this is `TextStack` with cross-attention from layer 0.

Answers are sequences [CLS] a₁ … a_m [SEP] (pad 0); [CLS] acts as BOS. Training is teacher-forced
with targets = ids shifted left (pads → ignored) and a per-answer SUM of token cross-entropies.

`decoder_from_fusion` is the official initialisation of the decoder from a pre-trained stack.
"""

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from x2vlm_jax.models.text import TextStack

IGNORE_ID = -100


def causal_mask(mask):
  """HF decoder self-attention mask: [B, L] padding mask → [B, L, L] (query i sees keys j ≤ i that
  are not padding)."""
  length = mask.shape[1]
  tril = jnp.tril(jnp.ones((length, length), mask.dtype))
  return tril[None] * mask[:, None, :]


def shifted_targets(ids, pad_id: int):
  """Next-token targets: targets[:, t] = ids[:, t+1], IGNORE_ID where that is padding or past the end
  (the official labels = ids with pads → −100, compared with logits[:, :-1])."""
  nxt = ids[:, 1:]
  t = jnp.where(nxt == pad_id, IGNORE_ID, nxt)
  return jnp.concatenate([t, jnp.full((ids.shape[0], 1), IGNORE_ID, t.dtype)], axis=1)


def sequence_nll(logits, targets):
  """Σ_t −log softmax(logits[:, t])[targets[:, t]] over targets ≠ IGNORE_ID → [B] (float32)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  valid = targets != IGNORE_ID
  picked = jnp.take_along_axis(logp, jnp.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
  return -jnp.sum(jnp.where(valid, picked, 0.0), axis=-1)


def decoder_config(cfg):
  """The model config the decoder's TextStack is built from. English: the model's own. Multilingual
  (official `XVLMPlusForVQA.build_text_decoder`, xGQA): a BertLMHeadModel with the cross encoder's
  config — BERT geometry (bert-base/-large-uncased: LayerNorm eps 1e-12, 512 positions counted from 0,
  2 token types) — but XLM-R's vocabulary and pad id, so it reads and writes XLM-R pieces."""
  if cfg.get("text_encoder", "bert") != "xlmr":
    return cfg
  c = cfg.copy_and_resolve_references()
  c.text.update(
    num_heads=cfg.cross.num_heads,
    ffn_dim=cfg.cross.ffn_dim,
    layer_norm_eps=cfg.cross.layer_norm_eps,
    hidden_dropout=cfg.cross.hidden_dropout,
    attention_dropout=cfg.cross.attention_dropout,
    max_positions=512,
    type_vocab_size=2,
  )
  return c


class AnswerDecoder(TextStack):
  """`decoder_layers` layers, all with cross-attention of width H (docs/reference.md §5.2)."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    cfg = decoder_config(cfg)
    super().__init__(cfg, rngs=rngs, num_layers=cfg.heads.decoder_layers, fusion_start=0, cross_width=cfg.text.hidden)
    self.pad_id = cfg.text.pad_token_id

  def __call__(self, ids, mask, memory, memory_mask=None, rng=None):
    """Teacher-forced vocab logits [Ba, La, V] (float32) of answers ids/mask [Ba, La] against the
    memory [Bm, Lm, H]. Ba may be a multiple of Bm: answers a·R … a·R+R−1 read memory row a
    (no copy of the memory, see `BertAttention.attend`)."""
    hidden = self.multi_modal(ids, causal_mask(mask), memory, memory_mask, rng)
    return self.mlm_logits(hidden).astype(jnp.float32)

  def answer_nll(self, ids, mask, memory, memory_mask=None, rng=None):
    """Per-answer summed token cross-entropy [Ba] (the official `reduction='none'` loss)."""
    return sequence_nll(self(ids, mask, memory, memory_mask, rng), shifted_targets(ids, self.pad_id))


# ----------------------------------------------------------------------------------------------------
# Official initialisation from the pre-trained stack
# ----------------------------------------------------------------------------------------------------
def decoder_source_layers(num_layers: int, fusion_start: int, decoder_layers: int):
  """Which text layer initialises decoder layer j (official `XVLMForVQA.load_pretrained`).

  decoder_layers == F (F = num_layers − fusion_start fusion layers): layer fusion_start + j.
  decoder_layers == F // 2: the odd fusion layers 13, 15, 17 of the 18-layer stack. Generalised here
  as fusion_start + 2j + 1, the second layer of each consecutive pair of fusion layers; the official
  code tests the absolute index (`layer_num % 2 == 0` dropped), which agrees for every even
  fusion_start (all released configs: 12) and would take the first of each pair for an odd one.
  Any other depth has no official initialisation (the original asserts) and raises.
  """
  f = num_layers - fusion_start
  if decoder_layers == f:
    return [fusion_start + j for j in range(decoder_layers)]
  if decoder_layers == f // 2 and decoder_layers > 0:
    return [fusion_start + 2 * j + 1 for j in range(decoder_layers)]
  raise ValueError(
    f"decoder_from_fusion: no official initialisation for {decoder_layers} decoder layers "
    f"from {f} fusion layers (expected {f} or {f // 2})"
  )


def decoder_from_fusion(flat_params: Dict[str, np.ndarray], cfg) -> Dict[str, np.ndarray]:
  """Decoder parameters initialised from a pre-trained model's flat params (docs/reference.md §5.2).

  flat_params: {"text/layers/13/self_attn/query/kernel": array, ...} (at least text/*).
  → {"decoder/...": array} for: embeddings ← text embeddings; layer j ← text layer
  `decoder_source_layers(...)[j]` (self-attention, cross-attention, FFN, LayerNorms); head ← the MLM
  head (dense, LayerNorm, bias; the output matrix is tied to the decoder's word embeddings anyway).
  The cross-attention key/value kernels are copied only when the vision width equals H; otherwise
  (as in the official code) they are left out and keep the decoder's fresh initialisation.
  """
  t = cfg.text
  same_width = cfg.vision.width == t.hidden
  if cfg.get("text_encoder", "bert") == "xlmr":
    return _decoder_from_cross_encoder(flat_params, cfg, same_width)
  src = decoder_source_layers(t.num_layers, t.fusion_start, cfg.heads.decoder_layers)
  out = {}
  for path, value in flat_params.items():
    parts = path.split("/")
    if parts[0] != "text":
      continue
    if parts[1] in ("embeddings", "mlm"):
      out["decoder/" + "/".join(parts[1:])] = np.asarray(value)
    elif parts[1] == "layers":
      layer = int(parts[2])
      if layer not in src:
        continue
      if parts[3] == "cross_attn" and parts[4] in ("key", "value") and not same_width:
        continue
      out["/".join(["decoder", "layers", str(src.index(layer))] + parts[3:])] = np.asarray(value)
  return out


def _decoder_from_cross_encoder(flat_params, cfg, same_width: bool) -> Dict[str, np.ndarray]:
  """Multilingual (official `XVLMPlusForVQA.load_pretrained`): decoder layer j ← cross-encoder layer j
  (the depths must agree: the original asserts `num_dec_layers == num_cross_layers`). The cross
  encoder has no embeddings and no head, so the decoder's embeddings and head keep their fresh init."""
  if cfg.heads.decoder_layers != cfg.cross.num_layers:
    raise ValueError(
      f"decoder_from_fusion: the multilingual decoder is initialised layer by layer from the "
      f"{cfg.cross.num_layers} cross-encoder layers; decoder_layers={cfg.heads.decoder_layers} differs"
    )
  out = {}
  for path, value in flat_params.items():
    parts = path.split("/")
    if parts[:2] != ["text", "cross"]:
      continue
    if parts[3] == "cross_attn" and parts[4] in ("key", "value") and not same_width:
      continue
    out["/".join(["decoder", "layers"] + parts[2:])] = np.asarray(value)
  return out
