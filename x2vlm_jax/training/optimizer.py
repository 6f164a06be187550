"""The official optimizer of X²-VLM as an optax GradientTransformation (docs/reference.md §6.1–§6.3).

    tx, learning_rate_fn = build_optimizer(config.optim, new_params=..., total_steps=...)
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    params["temp"] = itc.clamp_temperature(params["temp"])  # x2vlm_jax.objectives.itc

`params` / `grads` may be a pure nested dict or an `nnx.State` of `nnx.Param` (int keys for layer lists
are fine); every rule below is decided from the parameter's path string "a/b/0/c". A stacked layer
array (`text/fusion_stack/...`, x2vlm_jax/params_layout.py) is decided per layer on the unstacked name of
each slice (`text/layers/12/...`); where the layers of one array fall into different groups, the lr
(or decay) is a per-layer vector broadcast over the slice, so both layouts update the same elements
with the same rates.

Config fields (`default_config()`; a plain dict with the same keys works too):
  lr                peak learning rate of the base group (1e-4 base 4M / 5e-5 large; docs/reference.md §6.4)
  b1, b2, eps       Adam moments, 0.9 / 0.98 / 1e-8
  weight_decay      0.01, decoupled, masked by the official name rule (`decays`)
  lr_mult           2.0: peak lr multiplier of freshly initialised ("new") params
  warmup_steps      2500: int = optimizer steps, float in (0, 1) = fraction of total_steps
  warmup_fraction   0.0; > 0 overrides warmup_steps with this fraction of total_steps (fine-tuning 0.1)
  total_steps       optimizer steps at which the lr reaches 0 (may be passed to build_optimizer instead)
  clip_norm         1.0: global-norm clipping of the full gradient before Adam; None/0 = off (fine-tuning)
  vision_lr         peak lr of `vision/*` (official `vision_encoder.*`) if set, else None
  text_lr           peak lr of `text/*` (official `text_encoder.*`) if set, else None
  cross_lr          peak lr of official `cross_encoder.*` params (CCLM models); defaults to text_lr when
                    vision_lr is set, as officially. The English X²-VLM keeps its fusion layers inside
                    `text_encoder`, so nothing of ours matches it: accepted for parity, it changes nothing.
  grad_accum_steps  1: micro-steps averaged into one optimizer step (optax.MultiSteps)

Exactness notes: Adam is the HF `transformers.AdamW` (v4.12.5) update, not optax.adamw: its ε is added to
√v before the bias correction is folded into the step size, and its decoupled decay acts on the
parameter AFTER the Adam step (p ← p' − lr·wd·p'). Clipping follows torch `clip_grad_norm_`
(coefficient clip_norm / (‖g‖ + 1e-6), applied only when < 1). These differ from optax's stock
transformations by O(ε) terms only, but cost nothing to reproduce. All optimizer state is float32.
"""

from typing import Any, Callable, Dict, Iterable, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from x2vlm_jax import params_layout
from x2vlm_jax.official_names import official_name, path_to_str  # noqa: F401 (re-exported; the one table)

# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.lr = 1e-4
  c.b1 = 0.9
  c.b2 = 0.98
  c.eps = 1e-8
  c.weight_decay = 0.01
  c.lr_mult = 2.0
  c.warmup_steps = 2500
  c.warmup_fraction = 0.0  # > 0 overrides warmup_steps: a fraction of total_steps (fine-tuning's 0.1)
  c.total_steps = ml_collections.config_dict.placeholder(int)
  c.clip_norm = 1.0
  c.vision_lr = ml_collections.config_dict.placeholder(float)
  c.text_lr = ml_collections.config_dict.placeholder(float)
  c.cross_lr = ml_collections.config_dict.placeholder(float)
  c.grad_accum_steps = 1
  return c


def _field(cfg, name, default=None):
  if isinstance(cfg, dict):
    return cfg.get(name, default)
  return cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)


# ---------------------------------------------------------------------------------------------------
# Paths and official names
# ---------------------------------------------------------------------------------------------------
# Substrings of the official no-decay rule (docs/reference.md §6.1), kept verbatim, redundancies included.
NO_DECAY_SUBSTRINGS = (
  "bias",
  "LayerNorm.bias",
  "LayerNorm.weight",
  "norm.bias",
  "norm.weight",
  "norm1.bias",
  "norm1.weight",
  "norm2.bias",
  "norm2.weight",
)


def decays(path) -> bool:
  """Whether weight decay applies: decided on the OFFICIAL name by substring, exactly like the
  original (so rel-pos tables are exempt because their name contains "bias", while `temp`, γ,
  cls_token, embeddings and the heads' LayerNorm weights "itm_head.1.weight" do decay)."""
  name = official_name(path)
  return not any(s in name for s in NO_DECAY_SUBSTRINGS)


def _layer_names(tree) -> Dict[str, list]:
  """{path string: unstacked name of each layer} for every leaf of a params-like tree."""
  shapes = {path_to_str(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  return params_layout.layer_paths(shapes)


def decay_mask(params):
  """Tree of bools (same structure as params): True where weight decay applies; for a stacked array,
  a bool vector over its layers when they disagree (never the case under the official rule)."""
  names = _layer_names(params)

  def leaf(path, _):
    flags = [decays(n) for n in names[path_to_str(path)]]
    return flags[0] if len(set(flags)) == 1 else np.asarray(flags)

  return jax.tree_util.tree_map_with_path(leaf, params)


# ---------------------------------------------------------------------------------------------------
# Groups and schedules
# ---------------------------------------------------------------------------------------------------
def _normalise_new_params(new_params) -> frozenset:
  if new_params is None:
    return frozenset()
  return frozenset(path_to_str(p) for p in new_params)


def _per_layer(keys, table, leaf_shape):
  """table[key] of each layer → a scalar when the layers agree, else [layers, 1, …] broadcast over
  each layer's slice of a stacked array."""
  if len(set(keys)) == 1:
    return table[keys[0]]
  vec = jnp.stack([jnp.asarray(table[k], jnp.float32) for k in keys])
  return vec.reshape((len(keys),) + (1,) * (len(leaf_shape) - 1))


def param_group(path, optim, new_params: frozenset) -> str:
  """Official group priority (docs/reference.md §6.1), first match wins:
  "vision" (official name vision_encoder.*, vision_lr set) → "text" (text_encoder.*, text_lr set) →
  "cross" (cross_encoder.*, cross_lr set; only CCLM models have such names) → "new" (in new_params)
  → "base"."""
  s = path_to_str(path)
  name = official_name(s)
  if _field(optim, "vision_lr") is not None and "vision_encoder" in name:
    return "vision"
  if _field(optim, "text_lr") is not None and "text_encoder" in name:
    return "text"
  if _cross_lr(optim) is not None and "cross_encoder" in name:
    return "cross"
  if s in new_params:
    return "new"
  return "base"


def _cross_lr(optim):
  """Official: cross_lr, or text_lr when vision_lr is set (optim.py's `cross_lr = text_lr` default)."""
  cross = _field(optim, "cross_lr")
  if cross is None and _field(optim, "vision_lr") is not None:
    cross = _field(optim, "text_lr")
  return cross


def peak_learning_rates(optim) -> Dict[str, float]:
  lr = float(_field(optim, "lr"))
  vision_lr, text_lr, cross_lr = _field(optim, "vision_lr"), _field(optim, "text_lr"), _cross_lr(optim)
  return {
    "base": lr,
    "new": lr * float(_field(optim, "lr_mult", 1.0)),
    "vision": float(vision_lr) if vision_lr is not None else lr,
    "text": float(text_lr) if text_lr is not None else lr,
    "cross": float(cross_lr) if cross_lr is not None else lr,
  }


def resolve_warmup(warmup_steps, total_steps: int) -> int:
  """An int is a step count; a float in (0, 1) is a fraction of total_steps (floored)."""
  if isinstance(warmup_steps, float) and 0.0 < warmup_steps < 1.0:
    return int(warmup_steps * total_steps)
  return int(warmup_steps)


def lr_factor(step, warmup_steps: int, total_steps: int):
  """factor(t) = t/warmup for t < warmup, else max(0, (T − t)/(T − warmup))  (docs/reference.md §6.2).

  `step` counts optimizer updates already applied, so the very first update uses factor(0) = 0,
  exactly like torch LambdaLR stepped after each optimizer.step().
  """
  t = jnp.asarray(step, jnp.float32)
  warm = t / float(max(warmup_steps, 1))
  decay = jnp.maximum(0.0, (float(total_steps) - t) / float(max(total_steps - warmup_steps, 1)))
  return jnp.where(t < warmup_steps, warm, decay)


def make_schedule(peak: float, warmup_steps: int, total_steps: int) -> Callable:
  return lambda step: peak * lr_factor(step, warmup_steps, total_steps)


# ---------------------------------------------------------------------------------------------------
# Transformations
# ---------------------------------------------------------------------------------------------------
class _CountState(NamedTuple):
  count: jax.Array


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
  """torch.nn.utils.clip_grad_norm_: g ← g·min(1, max_norm/(‖g‖₂ + 1e-6)) over the whole gradient."""

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    norm = optax.global_norm(updates)
    coef = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates), state

  return optax.GradientTransformation(init, update)


def scale_by_hf_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """The Adam direction of HF AdamW (correct_bias=True):
  u = √(1−b2ᵗ)/(1−b1ᵗ) · m / (√v + ε). State is optax.ScaleByAdamState (count, mu, nu), float32."""

  def init(params):
    def zeros(p):
      return jnp.zeros(jnp.shape(p), jnp.float32)

    return optax.ScaleByAdamState(
      count=jnp.zeros([], jnp.int32), mu=jax.tree.map(zeros, params), nu=jax.tree.map(zeros, params)
    )

  def update(updates, state, params=None):
    del params
    g32 = jax.tree.map(lambda g: g.astype(jnp.float32), updates)
    mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, g32)
    nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, g32)
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    step_size = jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    out = jax.tree.map(lambda m, v: step_size * m / (jnp.sqrt(v) + eps), mu, nu)
    return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init, update)


def _apply_groups(
  optim, new_params: frozenset, schedules: Dict[str, Callable], weight_decay: float
) -> optax.GradientTransformation:
  """Adam direction u → parameter delta with the group's scheduled lr and decoupled decay:
  p' = p − lr·u; p'' = p' − lr·wd·p' (decay only where `decays`), returned as p'' − p."""

  def groups_of(tree) -> Callable[[Any], list]:
    names = _layer_names(tree)
    every = {n for ns in names.values() for n in ns}
    # new_params may name a stacked array (all its layers) or unstacked layers (init_from's plan).
    new = set()
    for p in new_params:
      new.update(names.get(p, [p]))
    unknown = sorted(new - every)
    if unknown:
      raise ValueError(
        f"optimizer new_params: {len(unknown)} path(s) are not parameters of the model, e.g. {unknown[:5]}"
      )
    # Training from scratch every parameter is "new"; the official code then has no init_params
    # (nothing was loaded), so nobody gets lr_mult.
    effective = frozenset() if new and new >= every else frozenset(new)
    groups = {p: [param_group(n, optim, effective) for n in ns] for p, ns in names.items()}
    decay = {p: [decays(n) for n in ns] for p, ns in names.items()}
    return lambda p: (groups[path_to_str(p)], decay[path_to_str(p)])

  def init(params):
    groups_of(params)  # validates new_params against the tree once, eagerly
    return _CountState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("the X²-VLM optimizer needs params in tx.update (decoupled weight decay)")
    group = groups_of(updates)
    lrs = {name: fn(state.count) for name, fn in schedules.items()}

    def leaf(path, u, p):
      groups, flags = group(path)
      lr = _per_layer(groups, lrs, u.shape)
      delta = -lr * u
      if weight_decay and any(flags):
        mask = 1.0 if all(flags) else _per_layer(flags, {True: 1.0, False: 0.0}, u.shape)
        delta = delta - mask * lr * weight_decay * (p.astype(jnp.float32) + delta)
      return delta.astype(u.dtype)

    out = jax.tree_util.tree_map_with_path(leaf, updates, params)
    return out, _CountState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)


def build_optimizer(
  optim, new_params: Optional[Iterable[Union[str, tuple]]] = None, total_steps: Optional[int] = None
) -> Tuple[optax.GradientTransformation, Callable]:
  """→ (tx, learning_rate_fn).

  optim: the config described in the module docstring (ConfigDict or dict).
  new_params: paths ("itm_head/ln/scale" or key tuples) of freshly initialised parameters, which get
    lr × lr_mult (from the converter's conversion.json). None/empty, or every parameter (training
    from scratch), means no parameter gets the multiplier. Unknown paths raise at `tx.init`.
  total_steps: overrides optim.total_steps (the trainer derives it from the data size).
  learning_rate_fn(step): the base group's lr at optimizer step `step` (= updates already applied),
    for logging; with grad accumulation, `step` counts optimizer steps, not micro-steps.
  """
  total = total_steps if total_steps is not None else _field(optim, "total_steps")
  if total is None or int(total) <= 0:
    raise ValueError(f"optimizer: total_steps must be a positive int, got {total!r}")
  total = int(total)
  fraction = float(_field(optim, "warmup_fraction", 0.0) or 0.0)
  warmup = resolve_warmup(fraction if fraction > 0 else _field(optim, "warmup_steps", 0), total)
  if not 0 <= warmup < total:
    raise ValueError(f"optimizer: warmup_steps={warmup} must be in [0, total_steps={total})")
  peaks = peak_learning_rates(optim)
  schedules = {g: make_schedule(peak, warmup, total) for g, peak in peaks.items()}

  chain = []
  clip = _field(optim, "clip_norm")
  if clip:
    chain.append(clip_by_global_norm_torch(float(clip)))
  chain.append(
    scale_by_hf_adam(
      float(_field(optim, "b1", 0.9)), float(_field(optim, "b2", 0.98)), float(_field(optim, "eps", 1e-8))
    )
  )
  chain.append(
    _apply_groups(optim, _normalise_new_params(new_params), schedules, float(_field(optim, "weight_decay", 0.0)))
  )
  tx = optax.chain(*chain)

  accum = int(_field(optim, "grad_accum_steps", 1) or 1)
  if accum > 1:
    # MultiSteps averages the micro-gradients and runs the whole chain (clip included, as the
    # official clips the full gradient) once every `accum` calls; inner counts = optimizer steps.
    tx = optax.MultiSteps(tx, every_k_schedule=accum, use_grad_mean=True).gradient_transformation()
  return tx, schedules["base"]
