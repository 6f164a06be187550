"""The official X²-VLM key layout (docs/reference.md §7.2) expressed against our parameter paths.

Every parameter of our model comes from exactly ONE official tensor; `kind` says how to turn it
into our layout:
  copy    same array (LayerNorm, biases, embeddings, gamma, q/v bias)
  linear  PyTorch Linear weight [out, in] → Flax kernel [in, out] (transpose)
  conv    patch Conv2d OIHW [D, 3, P, P] → Dense kernel [P·P·3, D] in our (h, w, c) patch order
  relpos  relative-position table [T, heads]; resized when T belongs to another grid
  frames  absolute_frame_pos_embed [1, F, 1, D]; the first min(F_ckpt, F_model) frames are copied
"""

import functools
import json
from typing import Dict, List, NamedTuple, Tuple

# Prefixes of the two text-stack layouts: the pre-training BertForMaskedLM and the BertModel that the
# fine-tuned task models (retrieval, grounding, NLVR, VQA encoder) use (docs/reference.md §7.3).
MLM_LAYOUT_PREFIX = "text_encoder.bert."
BERTMODEL_LAYOUT_PREFIX = "text_encoder."
CLS_PREFIX = "text_encoder.cls.predictions."
# The VQA answer decoder of a fine-tuned VQA file (docs/reference.md §7.3): a BertLMHeadModel `text_decoder`.
DECODER_PREFIX = "text_decoder.bert."
DECODER_CLS_PREFIX = "text_decoder.cls.predictions."
# The multilingual CrossViewLM / XVLMPlus (docs/reference.md §1.8, §7.2): XLM-R RobertaModel `text_encoder.`
# (no `bert.`, no head), a BertModel without embeddings `cross_encoder.`, an untied `mlm_head.`.
XLMR_PREFIX = "text_encoder."
CROSS_PREFIX = "cross_encoder."
XLMR_CLS_PREFIX = "mlm_head.predictions."


class Entry(NamedTuple):
  path: str  # our flat param path ("vision/blocks/0/attn/qkv/kernel")
  key: str  # official state-dict key
  kind: str  # copy | linear | conv | relpos | frames


def _linear(out: List[Entry], path: str, key: str) -> None:
  out.append(Entry(f"{path}/kernel", f"{key}.weight", "linear"))
  out.append(Entry(f"{path}/bias", f"{key}.bias", "copy"))


def _layer_norm(out: List[Entry], path: str, key: str) -> None:
  out.append(Entry(f"{path}/scale", f"{key}.weight", "copy"))
  out.append(Entry(f"{path}/bias", f"{key}.bias", "copy"))


def _vision(cfg, out: List[Entry]) -> None:
  v = "vision_encoder."
  out.append(Entry("vision/patch_embed/kernel", v + "patch_embed.proj.weight", "conv"))
  out.append(Entry("vision/patch_embed/bias", v + "patch_embed.proj.bias", "copy"))
  out.append(Entry("vision/cls_token", v + "cls_token", "copy"))
  if cfg.vision.abs_pos_emb:  # BEiT `use_abs_pos_emb`; no released X²-VLM model has it
    out.append(Entry("vision/pos_embed", v + "pos_embed", "copy"))
  for i in range(cfg.vision.depth):
    p, k = f"vision/blocks/{i}", f"{v}blocks.{i}"
    _layer_norm(out, f"{p}/norm1", f"{k}.norm1")
    out.append(Entry(f"{p}/attn/qkv/kernel", f"{k}.attn.qkv.weight", "linear"))  # rows [q; k; v]
    out.append(Entry(f"{p}/attn/q_bias", f"{k}.attn.q_bias", "copy"))
    out.append(Entry(f"{p}/attn/v_bias", f"{k}.attn.v_bias", "copy"))
    out.append(Entry(f"{p}/attn/rel_pos_table", f"{k}.attn.relative_position_bias_table", "relpos"))
    _linear(out, f"{p}/attn/proj", f"{k}.attn.proj")
    out.append(Entry(f"{p}/gamma_1", f"{k}.gamma_1", "copy"))
    out.append(Entry(f"{p}/gamma_2", f"{k}.gamma_2", "copy"))
    _layer_norm(out, f"{p}/norm2", f"{k}.norm2")
    _linear(out, f"{p}/fc1", f"{k}.mlp.fc1")
    _linear(out, f"{p}/fc2", f"{k}.mlp.fc2")
  _layer_norm(out, "vision/fc_norm", v + "fc_norm")


def _attention(out: List[Entry], path: str, key: str) -> None:
  for name in ("query", "key", "value"):
    _linear(out, f"{path}/{name}", f"{key}.self.{name}")
  _linear(out, f"{path}/out", f"{key}.output.dense")
  _layer_norm(out, f"{path}/ln", f"{key}.output.LayerNorm")


def _embeddings(out: List[Entry], ours: str, prefix: str) -> None:
  e = prefix + "embeddings."
  out.append(Entry(f"{ours}/embeddings/word/embedding", e + "word_embeddings.weight", "copy"))
  out.append(Entry(f"{ours}/embeddings/position/embedding", e + "position_embeddings.weight", "copy"))
  out.append(Entry(f"{ours}/embeddings/token_type/embedding", e + "token_type_embeddings.weight", "copy"))
  _layer_norm(out, f"{ours}/embeddings/ln", e + "LayerNorm")


def _layers(out: List[Entry], ours: str, prefix: str, num_layers: int, fusion_start: int) -> None:
  """BERT layers `ours`/i ↔ `prefix`encoder.layer.i; cross-attention from layer `fusion_start` on."""
  for layer in range(num_layers):
    p, k = f"{ours}/{layer}", f"{prefix}encoder.layer.{layer}"
    _attention(out, f"{p}/self_attn", f"{k}.attention")
    if layer >= fusion_start:
      _attention(out, f"{p}/cross_attn", f"{k}.crossattention")
    _linear(out, f"{p}/intermediate", f"{k}.intermediate.dense")
    _linear(out, f"{p}/output", f"{k}.output.dense")
    _layer_norm(out, f"{p}/ln", f"{k}.output.LayerNorm")


def _bert(out: List[Entry], ours: str, prefix: str, cls_prefix: str, num_layers: int, fusion_start: int) -> None:
  """One BERT stack with MLM head: our prefix `ours` ("text" / "decoder") ↔ official `prefix`."""
  _embeddings(out, ours, prefix)
  _layers(out, f"{ours}/layers", prefix, num_layers, fusion_start)
  _linear(out, f"{ours}/mlm/dense", cls_prefix + "transform.dense")
  _layer_norm(out, f"{ours}/mlm/ln", cls_prefix + "transform.LayerNorm")
  out.append(Entry(f"{ours}/mlm/bias", cls_prefix + "bias", "copy"))


def _xlmr(cfg, out: List[Entry]) -> None:
  """CrossViewLM text side (docs/reference.md §1.8): XLM-R, cross encoder, untied MLM head."""
  _embeddings(out, "text", XLMR_PREFIX)
  _layers(out, "text/layers", XLMR_PREFIX, cfg.text.num_layers, cfg.text.num_layers)
  _layers(out, "text/cross", CROSS_PREFIX, cfg.cross.num_layers, 0)
  _linear(out, "text/lm_head/dense", XLMR_CLS_PREFIX + "transform.dense")
  _layer_norm(out, "text/lm_head/ln", XLMR_CLS_PREFIX + "transform.LayerNorm")
  out.append(Entry("text/lm_head/decoder/kernel", XLMR_CLS_PREFIX + "decoder.weight", "linear"))
  out.append(Entry("text/lm_head/bias", XLMR_CLS_PREFIX + "bias", "copy"))


def is_xlmr(cfg) -> bool:
  return cfg.get("text_encoder", "bert") == "xlmr"


def _heads(cfg, out: List[Entry]) -> None:
  _linear(out, "vision_proj", "vision_proj")
  _linear(out, "text_proj", "text_proj")
  out.append(Entry("temp", "temp", "copy"))
  for head in ("itm_head", "bbox_head"):
    # build_mlp = Sequential(Linear, LayerNorm, GELU, Linear): indices 0, 1, 3.
    _linear(out, f"{head}/fc0", f"{head}.0")
    _layer_norm(out, f"{head}/ln", f"{head}.1")
    _linear(out, f"{head}/fc1", f"{head}.3")
  for head in ("nlvr_head", "cls_head"):  # fine-tuned NLVR2 / classification files (docs/reference.md §7.3)
    if (head == "nlvr_head" and cfg.heads.nlvr) or (head == "cls_head" and cfg.heads.num_labels):
      _linear(out, f"{head}/fc0", "cls_head.0")
      _layer_norm(out, f"{head}/ln", "cls_head.1")
      _linear(out, f"{head}/fc1", "cls_head.3")
  if cfg.num_frames > 0:
    out.append(Entry("frame_pos", "absolute_frame_pos_embed", "frames"))


def layout(cfg, text_prefix: str = MLM_LAYOUT_PREFIX) -> List[Entry]:
  """All entries for a model config. The MLM head exists only in the BertForMaskedLM layout's file,
  but our model always has it, so it is always listed (a BertModel-layout file reports it missing)."""
  out: List[Entry] = []
  _vision(cfg, out)
  if is_xlmr(cfg):  # one layout only: the CCLM files have no BertForMaskedLM/BertModel variants
    _xlmr(cfg, out)
  else:
    _bert(out, "text", text_prefix, CLS_PREFIX, cfg.text.num_layers, cfg.text.fusion_start)
  _heads(cfg, out)
  if cfg.heads.decoder_layers:
    _bert(out, "decoder", DECODER_PREFIX, DECODER_CLS_PREFIX, cfg.heads.decoder_layers, 0)
  return out


def official_shape(entry: Entry, our_shape: Tuple[int, ...], cfg) -> Tuple[int, ...]:
  """The PyTorch-side shape of an entry, derived from our parameter's shape."""
  if entry.kind == "linear":
    return tuple(reversed(our_shape))
  if entry.kind == "conv":
    return (our_shape[1], 3, cfg.patch_size, cfg.patch_size)
  return tuple(our_shape)


@functools.lru_cache(maxsize=16)
def _param_shapes_cached(cfg_json: str):
  from x2vlm_jax import params_io
  from x2vlm_jax.models import presets

  cfg = presets.get_preset(json.loads(cfg_json)["name"])
  cfg.update(json.loads(cfg_json))
  return params_io.param_shapes(cfg)


def param_shapes(cfg) -> Dict[str, Tuple[tuple, object]]:
  """params_io.param_shapes, memoised per config (building the abstract model is not free)."""
  return dict(_param_shapes_cached(cfg.to_json(sort_keys=True)))


def official_shapes(cfg, text_prefix: str = MLM_LAYOUT_PREFIX) -> Dict[str, Tuple[int, ...]]:
  """{official key: shape} of a complete pre-training checkpoint for `cfg` (buffers and tied
  duplicates excluded). Used by tests to fabricate official-format checkpoints."""
  shapes = param_shapes(cfg)
  return {e.key: official_shape(e, shapes[e.path][0], cfg) for e in layout(cfg, text_prefix)}
