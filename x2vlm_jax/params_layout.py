"""The two layouts of the layer parameters, and the conversion between them (load/save boundaries).

unstacked (`model.scan_layers=False`, and every checkpoint written before scanning existed):
    vision/blocks/{i}/...        text/layers/{i}/...        decoder/layers/{i}/...
stacked (`scan_layers=True`, x2vlm_jax/models/scan.py): one array per parameter with a leading layer axis
    vision/block_stack/...       [depth, ...]
    text/text_stack/...          [fusion_start, ...]   the text-only layers 0 … fusion_start−1
    text/fusion_stack/...        [L − fusion_start, ...] the fusion layers (with cross-attention)
    decoder/fusion_stack/...     [decoder_layers, ...] (every decoder layer has cross-attention)
The multilingual model (`text_encoder="xlmr"`, models/xlmr.py) has no fusion layers in its text stack
and a separate cross encoder: unstacked `text/cross/{j}/...`, stacked `text/cross_stack/...` [6, ...].

Layer j of a fusion stack is layer `fusion_start + j` of the unstacked stack; the offset is read from
the tree itself (the length of the text stack), so conversions need no config. The unstacked names
are the canonical ones: official names, optimizer groups, `new_params` and `init_from` plans are
decided per unstacked layer (`layer_paths`), whatever the layout a model runs in.

Functions take a flat {"a/b/c": array} dict or a nested pure dict and return the same form; values
may be numpy (host) or jax arrays.
"""

import re
from typing import Any, Dict, List, Mapping

import jax
import jax.numpy as jnp
import numpy as np

# (owner, unstacked list name, stacked group names in layer order)
_GROUPS = (
  ("vision", "blocks", ("block_stack",)),
  ("text", "layers", ("text_stack", "fusion_stack")),
  ("text", "cross", ("cross_stack",)),
  ("decoder", "layers", ("text_stack", "fusion_stack")),
)
_LIST_OF_GROUP = {name: list_name for _, list_name, names in _GROUPS for name in names}
_STACK_NAMES = tuple(_LIST_OF_GROUP)
_OWNERS = "|".join(dict.fromkeys(owner for owner, _, _ in _GROUPS))
_STACK_RE = re.compile(rf"^({_OWNERS})/({'|'.join(_STACK_NAMES)})/(.+)$")
_LAYER_RE = re.compile(rf"^({_OWNERS})/({'|'.join(dict.fromkeys(g[1] for g in _GROUPS))})/(\d+)/(.+)$")


def _stack(values):
  v = values[0]
  if isinstance(v, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(values),) + tuple(v.shape), v.dtype)
  return (jnp if isinstance(v, jax.Array) else np).stack(values)


def _take(value, j: int):
  if isinstance(value, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(tuple(value.shape[1:]), value.dtype)
  return value[j]


# ---------------------------------------------------------------------------------------------------
# flat <-> nested
# ---------------------------------------------------------------------------------------------------
def flatten(params: Mapping) -> Dict[str, Any]:
  out = {}

  def walk(prefix, node):
    if isinstance(node, Mapping):
      for k, v in node.items():
        walk(f"{prefix}/{k}" if prefix else str(k), v)
    else:
      out[prefix] = node

  walk("", params)
  return out


def unflatten(flat: Mapping[str, Any]) -> Dict:
  """Nested dict; all-digit path segments become int keys (nnx.List indices, as nnx.to_pure_dict)."""
  out: Dict = {}
  for path, value in flat.items():
    node = out
    parts = [int(p) if p.isdigit() else p for p in path.split("/")]
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return out


def _same_form(params, fn):
  """fn on the flat form; nested in → nested out."""
  if any(isinstance(v, Mapping) for v in params.values()):
    return unflatten(fn(flatten(params)))
  return fn(dict(params))


# ---------------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------------
def is_stack_path(path: str) -> bool:
  """Whether a flat param path names a stacked layer group's array."""
  return bool(_STACK_RE.match(path))


def is_stacked(params) -> bool:
  """True when the params (flat or nested) hold stacked layer groups."""
  flat = flatten(params) if any(isinstance(v, Mapping) for v in params.values()) else params
  return any(_STACK_RE.match(p) for p in flat)


def _stack_lengths(flat: Mapping[str, Any]) -> Dict[str, int]:
  """{"text/text_stack": n, ...} from the leading axis of each group's leaves."""
  out = {}
  for path, value in flat.items():
    m = _STACK_RE.match(path)
    if m:
      out[f"{m.group(1)}/{m.group(2)}"] = int(np.shape(value)[0])
  return out


def _offsets(lengths: Mapping[str, int]) -> Dict[str, int]:
  out = {}
  for owner, _, names in _GROUPS:
    offset = 0  # layers are numbered per unstacked list
    for name in names:
      key = f"{owner}/{name}"
      out[key] = offset
      offset += lengths.get(key, 0)
  return out


def unstacked_name(stack_path: str, j: int, offsets: Mapping[str, int]) -> str:
  """ "text/fusion_stack/ln/bias", layer j → "text/layers/{offset + j}/ln/bias"."""
  m = _STACK_RE.match(stack_path)
  owner, group, rest = m.groups()
  return f"{owner}/{_LIST_OF_GROUP[group]}/{offsets[f'{owner}/{group}'] + j}/{rest}"


def layer_paths(shapes: Mapping[str, Any]) -> Dict[str, List[str]]:
  """{param path: the unstacked path of each of its layers} (one entry, itself, for an unstacked or
  non-layer param). `shapes`: flat {path: array or shape}."""
  as_shape = {p: (v if isinstance(v, tuple) else np.shape(v)) for p, v in shapes.items()}
  lengths = {}
  for path, shape in as_shape.items():
    m = _STACK_RE.match(path)
    if m:
      lengths[f"{m.group(1)}/{m.group(2)}"] = int(shape[0])
  offsets = _offsets(lengths)
  out = {}
  for path, shape in as_shape.items():
    if _STACK_RE.match(path):
      out[path] = [unstacked_name(path, j, offsets) for j in range(int(shape[0]))]
    else:
      out[path] = [path]
  return out


def unstack_flat(flat: Mapping[str, Any]) -> Dict[str, Any]:
  offsets = _offsets(_stack_lengths(flat))
  out = {}
  for path, value in flat.items():
    if _STACK_RE.match(path):
      for j in range(int(np.shape(value)[0])):
        out[unstacked_name(path, j, offsets)] = _take(value, j)
    else:
      out[path] = value
  return out


def stack_flat(flat: Mapping[str, Any]) -> Dict[str, Any]:
  """Unstacked → stacked. A text/decoder layer belongs to the fusion stack iff it has cross-attention;
  those must be the last layers (fusion_start … L−1), as in every X²-VLM stack. Every layer of the
  multilingual cross encoder (`text/cross`) goes to its own stack."""
  layers: Dict[tuple, Dict[int, Dict[str, Any]]] = {}
  out = {}
  for path, value in flat.items():
    m = _LAYER_RE.match(path)
    if m:
      owner, list_name, i, rest = m.groups()
      layers.setdefault((owner, list_name), {}).setdefault(int(i), {})[rest] = value
    else:
      out[path] = value
  for (owner, list_name), by_index in layers.items():
    n = len(by_index)
    if sorted(by_index) != list(range(n)):
      raise ValueError(f"stack_layers: {owner}/{list_name} layers {sorted(by_index)} are not 0 … {n - 1}")
    if owner == "vision":
      groups = [("block_stack", list(range(n)))]
    elif list_name == "cross":
      groups = [("cross_stack", list(range(n)))]
    else:
      fused = [i for i in range(n) if any(r.startswith("cross_attn/") for r in by_index[i])]
      start = n - len(fused)
      if fused != list(range(start, n)):
        raise ValueError(f"stack_layers: {owner} layers with cross-attention {fused} are not the last ones")
      groups = [("text_stack", list(range(start))), ("fusion_stack", fused)]
    for name, indices in groups:
      if not indices:
        continue
      keys = set(by_index[indices[0]])
      for i in indices:
        if set(by_index[i]) != keys:
          raise ValueError(f"stack_layers: {owner} layer {i} has other params than layer {indices[0]}")
      for rest in sorted(keys):
        values = [by_index[i][rest] for i in indices]
        out[f"{owner}/{name}/{rest}"] = _stack(values)
  return out


def stack_layers(params, cfg=None):
  """Unstacked → stacked layout (flat or nested in, the same form out). Already stacked: unchanged.
  `cfg`, when given, is checked: the groups must have its depths."""
  if is_stacked(params):
    return params
  out = _same_form(params, stack_flat)
  if cfg is not None:
    _check_depths(out, cfg)
  return out


def unstack_layers(params, cfg=None):
  """Stacked → unstacked layout (flat or nested in, the same form out). Already unstacked: unchanged."""
  if cfg is not None and is_stacked(params):
    _check_depths(params, cfg)
  if not is_stacked(params):
    return params
  return _same_form(params, unstack_flat)


def to_layout(params, cfg):
  """The params in the layout of `cfg` (`cfg.scan_layers`), whichever layout they are in."""
  return stack_layers(params, cfg) if cfg.get("scan_layers", False) else unstack_layers(params, cfg)


def _check_depths(params, cfg) -> None:
  flat = flatten(params) if any(isinstance(v, Mapping) for v in params.values()) else params
  lengths = _stack_lengths(flat)
  t = cfg.text
  want = {
    "vision/block_stack": cfg.vision.depth,
    "text/text_stack": t.fusion_start,
    "text/fusion_stack": t.num_layers - t.fusion_start,
    "text/cross_stack": cfg.cross.num_layers if cfg.get("text_encoder", "bert") == "xlmr" else 0,
    "decoder/fusion_stack": cfg.heads.decoder_layers,
  }
  bad = [f"{k}: {lengths.get(k, 0)} layers, the model has {n}" for k, n in want.items() if lengths.get(k, 0) != n]
  if bad:
    raise ValueError("params layout: the stacked layers do not match the model:\n  " + "\n  ".join(bad))


def unstacked_config(cfg):
  """A copy of the model config in the unstacked layout (the converter's and init_from's view)."""
  out = cfg.copy_and_resolve_references()
  out.scan_layers = False
  return out


def stored_scan_layers(config_json: Mapping[str, Any]) -> bool:
  """The layout a checkpoint's model_config.json describes; files written before scanning existed
  have no `scan_layers` key and are unstacked."""
  return bool(config_json.get("scan_layers", False))


# ---------------------------------------------------------------------------------------------------
# whole train states (params and the optimizer moments that mirror them)
# ---------------------------------------------------------------------------------------------------
def _params_like(node) -> bool:
  """A dict shaped like the model params (the params themselves, Adam's mu / nu, MultiSteps' sums)."""
  if not isinstance(node, Mapping):
    return False
  for owner in ("vision", "text", "decoder"):
    sub = node.get(owner)
    if isinstance(sub, Mapping) and any(k in sub for k in ("blocks", "layers", "cross", *_STACK_NAMES)):
      return True
  return False


def convert_tree(tree, stacked: bool):
  """Every params-like dict inside `tree` (a train state: params, optimizer state namedtuples, ...)
  converted to the stacked (True) or unstacked layout; leaves may be arrays or ShapeDtypeStructs."""
  fn = stack_layers if stacked else unstack_layers

  def walk(node):
    if _params_like(node):
      return fn(dict(node))
    if isinstance(node, Mapping):
      return {k: walk(v) for k, v in node.items()}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
      return type(node)(*[walk(v) for v in node])
    if isinstance(node, (list, tuple)):
      return type(node)(walk(v) for v in node)
    return node

  return walk(tree)


def tree_is_stacked(tree) -> bool:
  """Whether any leaf path of a (metadata or state) tree names a stacked layer group."""
  for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    if any(p in _STACK_NAMES for p in parts):
      return True
  return False
