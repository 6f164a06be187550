"""Pre-training initialisation (docs/reference.md §7.4): BEiT-v2 → vision tower, HF BERT → text stack.

Both source files are rewritten into the official X²-VLM key layout and then go through the same
strict converter as a released checkpoint; what neither provides (cross-attention sub-layers,
vision_proj, text_proj, temp, itm_head, bbox_head, frame_pos — and the MLM head if the BERT file has
none) keeps the model's own fresh init and is reported as `new_params` (the lr×2 group in training).
"""

import re
from typing import Dict, List, Tuple

import numpy as np

from x2vlm_jax.convert import layout as L
from x2vlm_jax.convert.x2vlm import ConversionError, convert_official

_BEIT_DROP = ("head.weight", "head.bias")
_SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"
_BERT_DROP_PREFIXES = ("pooler.", "cls.seq_relationship.")
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.*)$")


def beit_to_official(beit: Dict[str, np.ndarray], depth: int) -> Dict[str, np.ndarray]:
  """BEiT-v2 checkpoint keys → `vision_encoder.*` (classifier dropped, shared table per block)."""
  sd = {k: v for k, v in beit.items() if k not in _BEIT_DROP and not k.endswith("relative_position_index")}
  shared = sd.pop(_SHARED_TABLE, None)
  sd.pop("rel_pos_bias.relative_position_index", None)
  if shared is not None:
    # X²-VLM builds BEiT with a table per block; a shared-table checkpoint is copied into each.
    for i in range(depth):
      sd.setdefault(f"blocks.{i}.attn.relative_position_bias_table", shared)
  return {"vision_encoder." + k: v for k, v in sd.items()}


def bert_layer_map(n_src: int, fusion_start: int, num_layers: int) -> Dict[int, int]:
  """{our layer: BERT layer}. Text layers 0..min(n,f)−1 1:1; fusion layers f..L−1 take the LAST L−f
  BERT layers n−(L−f)..n−1 (bert-base into the official stack: 0–11 1:1 and 6–11 → 12–17)."""
  mapping = {i: i for i in range(min(n_src, fusion_start))}
  n_fusion = num_layers - fusion_start
  if n_fusion > n_src:
    raise ValueError(f"BERT init: {n_fusion} fusion layers need at least {n_fusion} BERT layers, the file has {n_src}")
  for j in range(n_fusion):
    mapping[fusion_start + j] = n_src - n_fusion + j
  return mapping


def bert_to_official(
  bert: Dict[str, np.ndarray], fusion_start: int, num_layers: int
) -> Tuple[Dict[str, np.ndarray], dict]:
  """HF BERT (BertModel or BertForPreTraining/MaskedLM keys, legacy gamma/beta) → `text_encoder.bert.*`
  and `text_encoder.cls.*` of a stack with `num_layers` layers, fusion from `fusion_start`."""
  sd = {}
  for k, v in bert.items():
    k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    sd[k[len("bert.") :] if k.startswith("bert.") else k] = v
  by_layer: Dict[int, Dict[str, np.ndarray]] = {}
  out, unused = {}, []
  for k, v in sd.items():
    m = _LAYER.match(k)
    if m:
      by_layer.setdefault(int(m.group(1)), {})[m.group(2)] = v
    elif k.startswith(_BERT_DROP_PREFIXES):
      unused.append(k)
    elif k.startswith("cls."):
      out["text_encoder." + k] = v
    else:
      out[L.MLM_LAYOUT_PREFIX + k] = v  # embeddings.* and anything unknown (reported as unexpected later)
  n_src = len(by_layer)
  if sorted(by_layer) != list(range(n_src)):
    raise ValueError(f"BERT init: layer indices are not 0..{n_src - 1}: {sorted(by_layer)}")
  mapping = bert_layer_map(n_src, fusion_start, num_layers)
  for ours, theirs in mapping.items():
    for rest, v in by_layer[theirs].items():
      out[f"{L.MLM_LAYOUT_PREFIX}encoder.layer.{ours}.{rest}"] = v
  unused += [f"encoder.layer.{i}.*" for i in sorted(set(range(n_src)) - set(mapping.values()))]
  return out, {
    "bert_layers": n_src,
    "layer_map": {str(k): v for k, v in sorted(mapping.items())},
    "ignored_bert_keys": unused,
  }


def new_param_prefixes(cfg, has_mlm: bool) -> List[str]:
  """Our params that pre-training init leaves fresh (docs/reference.md §7.4: the lr×2 group)."""
  out = [f"text/layers/{i}/cross_attn" for i in range(cfg.text.fusion_start, cfg.text.num_layers)]
  out += ["vision_proj", "text_proj", "temp", "itm_head", "bbox_head"]
  if cfg.num_frames > 0:
    out.append("frame_pos")
  if not has_mlm:
    out.append("text/mlm")
  return out


def init_from_pretrained(
  beit: Dict[str, np.ndarray], bert: Dict[str, np.ndarray], cfg, fresh
) -> Tuple[Dict[str, np.ndarray], dict]:
  """→ (flat params for every model param, report with new_params, layer map, resized tables)."""
  vision = beit_to_official(beit, cfg.vision.depth)
  text, text_info = bert_to_official(bert, cfg.text.fusion_start, cfg.text.num_layers)
  clash = set(vision) & set(text)
  if clash:
    raise ConversionError(f"BEiT and BERT files both provide {sorted(clash)}")
  has_mlm = any(k.startswith(L.CLS_PREFIX + "transform.") for k in text)
  flat, report = convert_official({**vision, **text}, cfg, allow_missing=new_param_prefixes(cfg, has_mlm), fresh=fresh)
  report.update(text_info)
  return flat, report
