"""Initialising a run's params from a checkpoint directory (`config.init_from`), docs/reference.md §5 / §7.5.

The directory is our own export or a converted official checkpoint (params_io format), at ANY
resolution and frame count, with or without task heads. For every parameter of the run's model:

  same shape in the checkpoint          → loaded
  rel-pos table of another patch grid   → loaded and resized with BEiT's geometric method (the
                                          converter's function, so both paths give identical tables)
  abs. position table of another grid   → cls row kept, patch rows resized bicubically (shapes demo)
  frame embedding with other #frames    → the first min(F_ckpt, F_model) frames loaded, the rest fresh
  absent (a task head, the VQA decoder) → the model's fresh init, or what the task derives from the
                                          checkpoint (`Task.init_additions`)
  anything else                         → an error listing every mismatch (e.g. another model size)

Parameters the checkpoint did not provide (plus the checkpoint's own `new_params` from
conversion.json, and what the task names) form `new_params`, the lr × lr_mult group of docs/reference.md §6.1 —
the official `init_params`. Parameters of the checkpoint the model does not have are dropped
(reported). Planning reads only shapes, so the optimizer can be built before any value is loaded.

Layouts (x2vlm_jax/params_layout.py): the plan, the task's additions and `new_params` speak the
unstacked names (`text/layers/13/...`) whatever the layout of the checkpoint or of the model; the
checkpoint is unstacked when read and the values are stacked into the model's arrays in `apply`.
"""

import json
from typing import Any, Callable, Dict, List, NamedTuple

import jax
import numpy as np
from absl import logging
from etils import epath

from x2vlm_jax import params_io, params_layout
from x2vlm_jax.convert.assemble import flatten
from x2vlm_jax.convert.relpos import resize_rel_pos_table

# Geometry that must agree between the checkpoint and the model; the rest may differ.
_SAME_GEOMETRY = (
  "text_encoder",  # "bert" | "xlmr": the English stack and the CCLM text side share no layout
  "patch_size",
  "embed_dim",
  "vision.width",
  "vision.depth",
  "vision.num_heads",
  "vision.mlp_dim",
  "text.hidden",
  "text.num_layers",
  "text.fusion_start",
  "text.vocab_size",
  "text.num_heads",
  "text.ffn_dim",
  "vision.abs_pos_emb",
)


def _get(cfg, dotted: str):
  for part in dotted.split("."):
    cfg = cfg[part]
  return cfg


class InitPlan(NamedTuple):
  source: str
  actions: Dict[str, str]  # our param path → load | resize | frames | fresh | derived
  new_params: List[str]
  dropped: List[str]  # checkpoint params the model does not have


def plan(init_from: str, model_cfg, task=None) -> InitPlan:
  """What `apply` will do, from shapes only (cheap; no parameter value is read)."""
  stored = params_io.load_config(init_from)
  differ = [k for k in _SAME_GEOMETRY if _get(stored, k) != _get(model_cfg, k)]
  if differ:
    raise ValueError(geometry_mismatch(init_from, stored, model_cfg, differ))
  src = params_io.param_shapes(params_layout.unstacked_config(stored))
  dst = params_io.param_shapes(params_layout.unstacked_config(model_cfg))
  actions, problems = {}, []
  for path, (shape, _) in dst.items():
    if path not in src:
      actions[path] = "fresh"
    elif src[path][0] == shape:
      actions[path] = "load"
    elif path.endswith("rel_pos_table") and src[path][0][1] == shape[1]:
      actions[path] = "resize"
    elif path == "vision/pos_embed":
      actions[path] = "resize"
    elif path == "frame_pos":
      actions[path] = "frames"
    else:
      problems.append(f"{path}: checkpoint {src[path][0]}, model {shape}")
  if problems:
    raise ValueError(
      f"init_from {init_from!r}: {len(problems)} parameter(s) cannot be loaded:\n  " + "\n  ".join(problems)
    )
  derived, task_new = [], []
  if task is not None:
    derived, task_new = task.init_additions_plan(model_cfg, actions)
  for path in derived:
    actions[path] = "derived"
  fresh_in_source = set(_conversion_new_params(init_from))
  # A partially copied frame embedding is new, as officially: XVLMBase.load_pretrained deletes a frame
  # table of another length from the state dict, so it is a missing key and joins `init_params` (lr × lr_mult).
  new = sorted(
    {p for p, a in actions.items() if a in ("fresh", "frames")}
    | set(task_new)
    | {p for p in actions if _under(p, fresh_in_source)}
  )
  dropped = sorted(set(src) - set(dst))
  return InitPlan(init_from, actions, new, dropped)


def geometry_mismatch(init_from: str, stored, model_cfg, differ: List[str]) -> str:
  """The refusal of a checkpoint whose geometry differs: what differs, and the overrides that make the
  run match it. Same preset name on both sides means the run's config changed it (the `shapes` configs
  turn BEiT's absolute position table on, which converted official checkpoints do not have)."""
  if stored.name == model_cfg.name:
    head = (
      f"init_from {init_from!r}: the checkpoint is for another model: both are preset {stored.name!r}, but the "
      "run's config changes geometry the weights depend on"
    )
  else:
    head = (
      f"init_from {init_from!r}: the checkpoint is for another model: preset {stored.name!r}, the run's is "
      f"{model_cfg.name!r}"
    )
  rows = [f"{k}: checkpoint {_get(stored, k)}, model {_get(model_cfg, k)}" for k in differ]
  fix = " ".join(f"--config.model.{k}={_get(stored, k)}" for k in differ)
  hint = f"To start from this checkpoint, give the run its values: {fix}"
  if stored.name != model_cfg.name:
    hint += f" (or use a config of preset {stored.name!r})"
  if "vision.abs_pos_emb" in differ and not _get(stored, "vision.abs_pos_emb"):
    hint += (
      ". The checkpoint has no absolute position table (no released X²-VLM model has one, BEiT's "
      "use_abs_pos_emb=False); the `shapes` configs add one for a from-scratch tower (docs/grounding.md)"
    )
  return head + ":\n  " + "\n  ".join(rows) + "\n" + hint


def _under(path: str, prefixes) -> bool:
  return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _conversion_new_params(init_from: str) -> List[str]:
  """Params the converter initialised freshly in that checkpoint (BEiT-v2 + BERT init: the lr×2 group)."""
  path = epath.Path(init_from) / "conversion.json"
  if not path.exists():
    return []
  return list(json.loads(path.read_text()).get("new_params", []))


def load_values(p: InitPlan, model_cfg, fresh: Callable[[str], np.ndarray], task=None) -> Dict[str, np.ndarray]:
  """Host numpy values of every parameter whose action is not "fresh"."""
  _, params = params_io.load_numpy(p.source)
  flat = params_layout.unstack_flat(flatten(params))
  grid = model_cfg.image_res // model_cfg.patch_size
  out = {}
  for path, action in p.actions.items():
    if action == "load":
      out[path] = flat[path]
    elif action == "resize" and path == "vision/pos_embed":
      out[path] = resize_pos_embed(flat[path], grid)
    elif action == "resize":
      out[path], _ = resize_rel_pos_table(flat[path], grid)
    elif action == "frames":
      value = np.array(fresh(path), np.float32)
      n = min(flat[path].shape[1], value.shape[1])
      value[:, :n] = flat[path][:, :n]
      out[path] = value
  if task is not None:
    out.update(task.init_additions(flat, model_cfg))
  missing = sorted(path for path, a in p.actions.items() if a == "derived" and path not in out)
  if missing:
    raise ValueError(f"init_from: the task announced derived params it did not provide: {missing[:5]}")
  return out


def _torch_bicubic_matrix(old: int, new: int) -> np.ndarray:
  """[new, old] weights of torch.nn.functional.interpolate(mode="bicubic", align_corners=False) along one
  axis: source x = (i + 0.5)·old/new − 0.5, Keys' cubic with A = −0.75, edge indices clamped."""
  a = -0.75

  def w(d):
    d = abs(d)
    if d <= 1:
      return ((a + 2) * d - (a + 3)) * d * d + 1
    if d < 2:
      return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return 0.0

  m = np.zeros((new, old), np.float64)
  for i in range(new):
    x = (i + 0.5) * old / new - 0.5
    base = int(np.floor(x))
    t = x - base
    for k in range(-1, 3):
      m[i, min(max(base + k, 0), old - 1)] += w(t - k)
  return m


def resize_pos_embed(table: np.ndarray, grid: int) -> np.ndarray:
  """BEiT's `interpolate_pos_embed` for `use_abs_pos_emb`: the cls row is kept, the G×G patch rows are
  resized to grid×grid with torch's bicubic (`F.interpolate(mode="bicubic", align_corners=False)`:
  A = −0.75, no antialiasing; no released X²-VLM checkpoint has this table)."""
  d = table.shape[-1]
  old = int(round((table.shape[1] - 1) ** 0.5))
  if old * old != table.shape[1] - 1:
    raise ValueError(f"init_from: vision/pos_embed has {table.shape[1]} rows, not 1 + a square grid")
  m = _torch_bicubic_matrix(old, grid)
  patches = np.einsum("ia,jb,abd->ijd", m, m, np.asarray(table[0, 1:], np.float64).reshape(old, old, d))
  return np.concatenate([table[:, :1], patches.reshape(1, grid * grid, d).astype(table.dtype)], axis=1)


def apply(p: InitPlan, state, shardings, model_cfg, task=None):
  """Puts the checkpoint's values into a freshly initialised, sharded train state."""
  params = state["params"]
  flat_shardings = flatten_tree(shardings["params"])
  flat_params = flatten_tree(params)
  # Unstacked name → (the model's array, layer index or None): values land in slices of stacked arrays.
  where = {}
  for path, names in params_layout.layer_paths(flat_params).items():
    for j, name in enumerate(names):
      where[name] = (path, j if params_layout.is_stack_path(path) else None)

  def fresh(name):
    path, j = where[name]
    value = np.asarray(jax.device_get(flat_params[path]))
    return value if j is None else value[j]

  values = load_values(p, model_cfg, fresh, task)
  merged: Dict[str, np.ndarray] = {}
  for name, value in values.items():
    path, j = where[name]
    value = np.asarray(value, np.float32)
    if j is None:
      merged[path] = value
    else:
      if path not in merged:
        merged[path] = np.array(jax.device_get(flat_params[path]), np.float32)
      merged[path][j] = value
  for path, value in merged.items():
    sharding = flat_shardings[path]
    flat_params[path] = jax.make_array_from_callback(value.shape, sharding, lambda idx, v=value: v[idx])
  counts = {a: sum(1 for x in p.actions.values() if x == a) for a in sorted(set(p.actions.values()))}
  logging.info(
    "init_from %s: %s; %d new params (lr × lr_mult), %d checkpoint params dropped%s",
    p.source,
    counts,
    len(p.new_params),
    len(p.dropped),
    f" (e.g. {p.dropped[:3]})" if p.dropped else "",
  )
  return {**state, "params": unflatten_like(params, flat_params)}


def flatten_tree(tree) -> Dict[str, Any]:
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)] = leaf
  return out


def unflatten_like(tree, flat: Dict[str, Any]):
  paths = [
    ("/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path))
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), [flat[p] for p in paths])
