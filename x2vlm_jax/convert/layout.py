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

from x2vlm_jax.official_names import official_name

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


def is_xlmr(cfg) -> bool:
  return cfg.get("text_encoder", "bert") == "xlmr"


def kind_of(path: str) -> str:
  """How the official tensor becomes ours (module docstring), from our path."""
  if path == "vision/patch_embed/kernel":
    return "conv"
  if path.endswith("/rel_pos_table"):
    return "relpos"
  if path == "frame_pos":
    return "frames"
  if path.endswith("/kernel"):
    return "linear"
  return "copy"


def layout(cfg, text_prefix: str = MLM_LAYOUT_PREFIX) -> List[Entry]:
  """All entries for a model config: every parameter of the model (unstacked layout) with its official
  key from THE table (x2vlm_jax/official_names.py, which the optimizer's decay and lr rules also read).
  The MLM head exists only in the BertForMaskedLM layout's file, but our model always has it, so it
  is always listed (a BertModel-layout file reports it missing)."""
  out: List[Entry] = []
  if is_xlmr(cfg):  # one layout only: the CCLM files have no BertForMaskedLM/BertModel variants
    text_prefix = XLMR_PREFIX
  for path in param_shapes(cfg):
    key = official_name(path)
    if key.startswith(MLM_LAYOUT_PREFIX) and text_prefix != MLM_LAYOUT_PREFIX:
      key = text_prefix + key[len(MLM_LAYOUT_PREFIX) :]
    out.append(Entry(path, key, kind_of(path)))
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
  cfg.scan_layers = False  # conversion speaks the unstacked names; params_io.save stacks for the model
  return params_io.param_shapes(cfg)


def param_shapes(cfg) -> Dict[str, Tuple[tuple, object]]:
  """params_io.param_shapes in the unstacked layout (x2vlm_jax/params_layout.py), memoised per config
  (building the abstract model is not free)."""
  return dict(_param_shapes_cached(cfg.to_json(sort_keys=True)))


def official_shapes(cfg, text_prefix: str = MLM_LAYOUT_PREFIX) -> Dict[str, Tuple[int, ...]]:
  """{official key: shape} of a complete pre-training checkpoint for `cfg` (buffers and tied
  duplicates excluded). Used by tests to fabricate official-format checkpoints."""
  shapes = param_shapes(cfg)
  return {e.key: official_shape(e, shapes[e.path][0], cfg) for e in layout(cfg, text_prefix)}
