"""Stage 1 of the multilingual recipe (docs/reference.md §1.8): an English X²-VLM checkpoint + public XLM-R
weights → the CrossViewLM layout, as the official loader does it (`models/xvlm.py:
XVLMPlusBase.load_pretrained_xvlm` with `is_xvlm_ckpt: True`, `xvlm_ckpt_text_num_hidden_layers: 12`,
`replace_text_encoder: True`, then `load_pretrained_text`):

  X²-VLM text layers ≥ 12 (the fusion layers)  → cross_encoder.encoder.layer.(N − 12)
  X²-VLM text layers < 12, its embeddings       → dropped, replaced by XLM-R (`roberta.` → `text_encoder.`)
  X²-VLM text_encoder.cls.predictions.transform → mlm_head.predictions.transform
  its decoder weight / bias                      → dropped (another vocabulary): fresh
  vision tower, vision_proj, text_proj, temp, itm_head, bbox_head, frame embeddings → unchanged

XLM-R's own `lm_head.*` is not used (the official `load_pretrained_text` renames only `roberta.` keys,
so `lm_head.*` ends among the unexpected keys). Everything then goes through the strict converter.
"""

import re
from typing import Dict, Tuple

import numpy as np

from x2vlm_jax.convert import layout as L
from x2vlm_jax.convert.x2vlm import ConversionError, convert_official

_LAYER = re.compile(r"^text_encoder\.encoder\.layer\.(\d+)\.(.*)$")
_XLMR_DROP = ("lm_head.", "pooler.", "roberta.pooler.")


def _strip_encoder_infix(key: str) -> str:
  # Official `load_pretrained(..., load_text=True)`: 'bert.' / 'roberta.' removed from text/cross keys.
  if key.startswith(("text_encoder.", "cross_encoder.")):
    return key.replace("roberta.", "").replace("bert.", "")
  return key


def x2vlm_to_cclm(sd: Dict[str, np.ndarray], num_text_layers: int = 12) -> Tuple[Dict[str, np.ndarray], list]:
  """An English X²-VLM state dict → CrossViewLM keys without a text encoder. → (state dict, dropped keys)."""
  out, dropped = {}, []
  for key, value in sd.items():
    k = _strip_encoder_infix(key)
    if not k.startswith("text_encoder."):
      out[k] = value
      continue
    m = _LAYER.match(k)
    if m:
      n = int(m.group(1))
      if n < num_text_layers:
        dropped.append(key)
      else:
        out[f"{L.CROSS_PREFIX}encoder.layer.{n - num_text_layers}.{m.group(2)}"] = value
    elif k.startswith("text_encoder.embeddings.") or k.startswith(
      ("text_encoder.cls.predictions.decoder", "text_encoder.cls.predictions.bias")
    ):
      dropped.append(key)
    elif k.startswith("text_encoder.cls."):
      out["mlm_head." + k[len("text_encoder.cls.") :]] = value
    else:
      out[k] = value  # unknown: reported by the strict converter
  return out, dropped


def xlmr_to_official(hf: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], list]:
  """HF XLM-R (XLMRobertaModel or XLMRobertaForMaskedLM keys) → `text_encoder.*`. → (state dict, unused keys)."""
  out, unused = {}, []
  for key, value in hf.items():
    k = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if k.startswith(_XLMR_DROP):
      unused.append(key)
      continue
    k = k[len("roberta.") :] if k.startswith("roberta.") else k
    out[L.XLMR_PREFIX + k] = value
  return out, unused


def init_cclm(
  x2vlm: Dict[str, np.ndarray], xlmr: Dict[str, np.ndarray], cfg, fresh, num_text_layers: int = 12
) -> Tuple[Dict[str, np.ndarray], dict]:
  """→ (flat params of the CrossViewLM `cfg`, report). `fresh`: () → flat fresh-init params."""
  if not L.is_xlmr(cfg):
    raise ValueError("init_cclm: the model must have the XLM-R text side (a cclm_* preset)")
  cross, dropped = x2vlm_to_cclm(x2vlm, num_text_layers)
  text, unused = xlmr_to_official(xlmr)
  clash = set(cross) & set(text)
  if clash:
    raise ConversionError(f"X²-VLM and XLM-R files both provide {sorted(clash)}")
  fresh_paths = ["text/lm_head/decoder", "text/lm_head/bias"] + (["frame_pos"] if cfg.num_frames > 0 else [])
  flat, report = convert_official({**cross, **text}, cfg, allow_missing=fresh_paths, fresh=fresh)
  # The official constructor puts every mlm_head parameter into `init_params` (lr × lr_mult), the
  # transform copied from X²-VLM included.
  report["new_params"] = sorted(set(report["new_params"]) | {"text/lm_head"})
  report.update(x2vlm_dropped_keys=dropped, xlmr_unused_keys=unused, cross_from_layers=num_text_layers)
  return flat, report
