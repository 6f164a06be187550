"""Official X²-VLM state dict (docs/reference.md §7.2/§7.3) → flat {our param path: np.ndarray}, strictly.

Strict means: every parameter of our model must come from the file (unless the caller names it in
`allow_missing`, e.g. the heads a fine-tuned file lacks or the new params of pre-training init),
every tensor of the file must be used (buffers and tied duplicates are known and skipped), and every
shape must match. All problems are collected and raised as ONE `ConversionError` (a ValueError).
Relative-position tables of another resolution are not a problem: they are resized (docs/reference.md §7.5).
"""

from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from x2vlm_jax.convert import layout as L
from x2vlm_jax.convert.relpos import grid_from_rows, resize_rel_pos_table
from x2vlm_jax.convert.task_heads import BUFFER_KEYS
from x2vlm_jax.progress import Progress

FRAME_KEY = "absolute_frame_pos_embed"
_TIED_DECODER = {  # duplicate tensor → the tensor it must equal (HF ties them, the file stores both)
  L.CLS_PREFIX + "decoder.bias": L.CLS_PREFIX + "bias",
  # The VQA answer decoder's head is tied to ITS OWN word embeddings (docs/reference.md §5.2, §7.3).
  L.DECODER_CLS_PREFIX + "decoder.bias": L.DECODER_CLS_PREFIX + "bias",
  L.DECODER_CLS_PREFIX + "decoder.weight": L.DECODER_PREFIX + "embeddings.word_embeddings.weight",
  # CCLM's untied mlm_head still shares decoder.bias with bias (HF BertLMPredictionHead).
  L.XLMR_CLS_PREFIX + "decoder.bias": L.XLMR_CLS_PREFIX + "bias",
}
_BUFFER_SUFFIXES = ("relative_position_index", "position_ids")


class ConversionError(ValueError):
  """A checkpoint does not fit the requested model; the message lists every problem."""


def text_prefix_of(sd: Dict[str, np.ndarray]) -> str:
  """Pre-training files use BertForMaskedLM keys (`text_encoder.bert.`); fine-tuned task models a
  BertModel without `bert.` (docs/reference.md §7.3)."""
  if any(k.startswith(L.MLM_LAYOUT_PREFIX) for k in sd):
    return L.MLM_LAYOUT_PREFIX
  if any(k.startswith(L.BERTMODEL_LAYOUT_PREFIX + p) for k in sd for p in ("embeddings.", "encoder.")):
    return L.BERTMODEL_LAYOUT_PREFIX
  return L.MLM_LAYOUT_PREFIX


def checkpoint_grid(sd: Dict[str, np.ndarray]) -> Optional[int]:
  """Patch grid G the file was trained at, from its first rel-pos table (None if it has none)."""
  for k in sorted(sd):
    if k.endswith("relative_position_bias_table"):
      try:
        return grid_from_rows(sd[k].shape[0])
      except ValueError:
        return None
  return None


def checkpoint_num_frames(sd: Dict[str, np.ndarray]) -> int:
  return int(sd[FRAME_KEY].shape[1]) if FRAME_KEY in sd and sd[FRAME_KEY].ndim == 4 else 0


def checkpoint_decoder_layers(sd: Dict[str, np.ndarray]) -> int:
  """Depth of a VQA file's answer decoder (`text_decoder.bert.encoder.layer.N.*`), 0 if it has none."""
  head = L.DECODER_PREFIX + "encoder.layer."
  return len({k[len(head) :].split(".")[0] for k in sd if k.startswith(head)})


def _under(path: str, prefixes) -> bool:
  """`path` equals one of `prefixes` or lies below it (component-wise: 'text/layers/1' ∌ 'text/layers/12')."""
  return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _is_buffer(key: str) -> bool:
  return key.endswith(_BUFFER_SUFFIXES) or key in BUFFER_KEYS


def _transform(kind: str, value: np.ndarray, cfg) -> np.ndarray:
  if kind == "linear":
    return np.ascontiguousarray(value.T)
  if kind == "conv":
    # OIHW [D,3,P,P] → [P,P,3,D] → [P·P·3, D]: rows in the (h, w, c) order of vision.patchify.
    return np.ascontiguousarray(value.transpose(2, 3, 1, 0)).reshape(-1, value.shape[0])
  return value


def _preset_hint(sd: Dict[str, np.ndarray], cfg, prefix: str) -> str:
  """One line saying which geometry the file has, so 'base weights into tiny' is obvious at once.
  Empty when the geometry agrees with the model (then the problem is something else)."""
  facts, differs = [], False

  def fact(name, found, model):
    nonlocal differs
    differs |= found != model
    facts.append(f"{name} {found} (model {model})")

  pe = sd.get("vision_encoder.patch_embed.proj.weight")
  if pe is not None and pe.ndim == 4:
    fact("vision width", pe.shape[0], cfg.vision.width)
  blocks = {k.split(".")[2] for k in sd if k.startswith("vision_encoder.blocks.")}
  if blocks:
    fact("vision blocks", len(blocks), cfg.vision.depth)
  we = sd.get(prefix + "embeddings.word_embeddings.weight")
  if we is not None and we.ndim == 2:
    fact("text hidden", we.shape[1], cfg.text.hidden)
    fact("vocab", we.shape[0], cfg.text.vocab_size)
  depth = len(prefix.split("."))  # index of the layer number in "text_encoder.(bert.)encoder.layer.N.…"
  layers = {k.split(".")[depth + 1] for k in sd if k.startswith(prefix + "encoder.layer.")}
  if layers:
    fact("text layers", len(layers), cfg.text.num_layers)
  if not differs:
    return ""
  return "this checkpoint is for another model size: " + ", ".join(facts) + "; pick the matching --model preset"


def format_problems(
  cfg, missing: List[str], unexpected: List[str], misshaped: List[str], inconsistent: List[str], hint: str
) -> str:
  lines = [
    f"checkpoint does not fit model preset {cfg.name!r} (image_res {cfg.image_res}, "
    f"num_frames {cfg.num_frames}): {len(missing)} missing, {len(unexpected)} unexpected, "
    f"{len(misshaped)} mis-shaped, {len(inconsistent)} inconsistent"
  ]
  if hint:  # first, because the lists below can be hundreds of lines for a wrong preset
    lines.append(f"  hint: {hint}")
  for title, items in (
    ("missing keys", missing),
    ("unexpected keys", unexpected),
    ("mis-shaped keys (expected vs found)", misshaped),
    ("inconsistent tied tensors", inconsistent),
  ):
    if items:
      lines.append(f"  {title} ({len(items)}):")
      lines.extend(f"    {s}" for s in items)
  return "\n".join(lines)


def convert_official(
  sd: Dict[str, np.ndarray],
  cfg,
  *,
  allow_missing: Iterable[str] = (),
  ignore_prefixes: Iterable[str] = (),
  fresh: Optional[Callable[[], Dict[str, np.ndarray]]] = None,
) -> Tuple[Dict[str, np.ndarray], dict]:
  """→ (flat {our path: float32 array} covering every model param, report).

  allow_missing: our-path prefixes that may be absent from the file; they keep `fresh()` values and
    are reported as `new_params`. ignore_prefixes: official-key prefixes to drop silently (e.g. a
    fine-tuned `cls_head.` we have no module for). fresh: () → flat fresh-init params (needed only for
    allowed-missing params and for frame embeddings beyond the file's frame count).
  """
  allow_missing = tuple(allow_missing)
  ignore_prefixes = tuple(ignore_prefixes)
  prefix = L.XLMR_PREFIX if L.is_xlmr(cfg) else text_prefix_of(sd)
  shapes = L.param_shapes(cfg)
  entries = L.layout(cfg, prefix)
  tied = dict(_TIED_DECODER)
  if not L.is_xlmr(cfg):
    tied[L.CLS_PREFIX + "decoder.weight"] = prefix + "embeddings.word_embeddings.weight"

  missing, misshaped, inconsistent, new_params = [], [], [], []
  used = set()
  out: Dict[str, np.ndarray] = {}
  report = {
    "text_layout": "CrossViewLM"
    if L.is_xlmr(cfg)
    else ("BertForMaskedLM" if prefix == L.MLM_LAYOUT_PREFIX else "BertModel"),
    "resized_tables": [],
    "new_params": new_params,
    "ignored_keys": [],
    "frames": None,
  }
  fresh_cache: Dict[str, Dict[str, np.ndarray]] = {}

  def fresh_value(path: str) -> np.ndarray:
    if "v" not in fresh_cache:
      if fresh is None:
        raise ValueError(f"convert_official: {path} needs a fresh initial value but no `fresh` was given")
      fresh_cache["v"] = fresh()
    return np.array(fresh_cache["v"][path], np.float32)  # a writable copy: frames are merged into it

  progress = Progress("convert", len(entries), unit="tensors")
  for e in progress.wrap(entries):
    our_shape = shapes[e.path][0]
    want = L.official_shape(e, our_shape, cfg)
    if e.key not in sd:
      if _under(e.path, allow_missing):
        out[e.path] = fresh_value(e.path)
        new_params.append(e.path)
      else:
        missing.append(f"{e.key}  (→ {e.path}, expected {list(want)})")
      continue
    used.add(e.key)
    value = np.asarray(sd[e.key])
    if e.kind == "relpos" and value.ndim == 2 and value.shape != want and value.shape[1] == want[1]:
      try:
        resized, info = resize_rel_pos_table(value, cfg.image_res // cfg.patch_size)
        report["resized_tables"].append({"key": e.key, **info})
        value = resized
      except ValueError:
        pass  # not a BEiT table at all: falls through to the shape check below
    if (
      e.kind == "frames"
      and value.ndim == 4
      and (value.shape[0], value.shape[2], value.shape[3]) == (want[0], want[2], want[3])
    ):
      n = min(value.shape[1], want[1])
      merged = fresh_value(e.path) if value.shape[1] < want[1] else np.zeros(want, np.float32)
      merged[:, :n] = value[:, :n]
      report["frames"] = {"checkpoint": int(value.shape[1]), "model": int(want[1]), "copied": n}
      if value.shape[1] != want[1]:  # another frame count: new, as the official loader treats it (lr × lr_mult)
        new_params.append(e.path)
      value = merged
    if tuple(value.shape) != tuple(want):
      misshaped.append(f"{e.key}: expected {list(want)}, found {list(value.shape)}")
      continue
    out[e.path] = _transform(e.kind, value, cfg).astype(np.float32)

  progress.done()
  unexpected = []
  for k in sorted(sd):
    if k in used or _is_buffer(k):
      continue
    if k.startswith(ignore_prefixes):
      report["ignored_keys"].append(k)
    elif k in tied:
      ref = tied[k]
      if ref in sd and (sd[ref].shape != sd[k].shape or not np.array_equal(sd[ref], sd[k])):
        inconsistent.append(f"{k} differs from {ref} (they are tied in X²-VLM)")
    else:
      unexpected.append(f"{k}  {list(np.shape(sd[k]))}")

  if missing or unexpected or misshaped or inconsistent:
    hint = _preset_hint(sd, cfg, prefix) if (misshaped or unexpected) else ""
    raise ConversionError(format_problems(cfg, missing, unexpected, misshaped, inconsistent, hint))
  return out, report


def _inverse_transform(kind: str, value: np.ndarray, cfg) -> np.ndarray:
  if kind == "linear":
    return np.ascontiguousarray(value.T)
  if kind == "conv":
    p = cfg.patch_size
    return np.ascontiguousarray(value.reshape(p, p, 3, -1).transpose(3, 2, 0, 1))
  return value


def to_official(flat: Dict[str, np.ndarray], cfg, text_prefix: str = L.MLM_LAYOUT_PREFIX) -> Dict[str, np.ndarray]:
  """Our flat params → an official-layout state dict (the inverse of `convert_official` at the model's
  own resolution), tied duplicates written the way the official files store them. For the CCLM
  layout (`text_encoder="xlmr"`) `text_prefix` is ignored: that layout has one form."""
  entries = L.layout(cfg, text_prefix)
  out = {e.key: _inverse_transform(e.kind, np.asarray(flat[e.path], np.float32), cfg) for e in entries}
  if L.is_xlmr(cfg):
    out[L.XLMR_CLS_PREFIX + "decoder.bias"] = out[L.XLMR_CLS_PREFIX + "bias"].copy()
  else:
    out[L.CLS_PREFIX + "decoder.weight"] = out[text_prefix + "embeddings.word_embeddings.weight"].copy()
    out[L.CLS_PREFIX + "decoder.bias"] = out[L.CLS_PREFIX + "bias"].copy()
  return out
