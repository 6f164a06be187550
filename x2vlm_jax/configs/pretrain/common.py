"""Shared skeleton of the pre-training configs. Each experiment file reads like its run (docs/reference.md §6.4)."""

import ml_collections

from x2vlm_jax.models import presets


def parse_arg(arg, **defaults) -> ml_collections.ConfigDict:
  """`--config=file.py:key=value,flag` → typed ConfigDict over `defaults` (bools need no value)."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"config arg: unknown key {key!r} (known: {sorted(defaults)})")
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.lower() not in ("0", "false", "no") if value else True
    else:
      try:
        out[key] = kind(value)
      except ValueError:
        raise ValueError(
          f"config arg {key!r}: expected {kind.__name__} (default {defaults[key]!r}), got {value!r}"
        ) from None
  return out


def base_config(model: str) -> ml_collections.ConfigDict:
  from x2vlm_jax.data.config import get_data_config  # here: keeps tensorflow out until data is built
  from x2vlm_jax.sharding import DEFAULT_RULES
  from x2vlm_jax.training import optimizer

  c = ml_collections.ConfigDict()
  c.model = presets.get_preset(model)
  c.data = get_data_config()
  c.data.source = "tfds"  # "synthetic": contract-shaped random batches (benchmarks, tests)
  # One source of truth for the geometry: the data follows the model.
  c.data.image_res = c.model.get_ref("image_res")
  c.data.patch_size = c.model.get_ref("patch_size")

  c.seed = 42
  c.total_steps = 1000
  c.log_every = 50
  c.checkpoint_every = 5000
  # Ours (not the paper's): also save every 30 minutes of wall clock, so a preempted pod loses at most
  # that much work whatever the step time (x2vlm_jax/training/preemption.py); 0 turns it off.
  c.checkpoint_every_minutes = 30.0
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.init_from = ""  # dir from tools/convert_checkpoint.py (official weights, or BEiT-v2 + BERT init)

  c.optim = optimizer.default_config()
  c.optim.total_steps = c.get_ref("total_steps")

  c.mesh = (-1, 1, 1)  # (data, fsdp, tensor); -1 fills the remaining devices
  c.sharding_rules = [list(r) for r in DEFAULT_RULES]

  c.loss_weights = ml_collections.ConfigDict(dict(image=1.0, region=1.0, video=1.0))  # docs/reference.md §3.5
  # ITM hard negatives are drawn within contiguous groups of the global batch; the official recipe
  # draws them from each GPU's local batch, so the defaults are the per-GPU batch of each stream.
  c.itm_group_size = ml_collections.ConfigDict(dict(image=128, region=128, video=40))
  # Official ITC gradients reach the encoders scaled by 1/W (docs/reference.md §3.1 quirk). We train the clean
  # global loss (1.0) by default; set 1/W_official to reproduce the original dynamics exactly.
  c.itc_grad_scale = 1.0
  c.stop_calc_itm = -1  # step after which L_itm is a constant 0 (1B stage 1: 200k); -1 = never

  c.profile = False
  c.profile_start = 10
  c.profile_steps = 5

  # Evaluators run during training and at the end (built by x2vlm_jax/tasks, run by evaluation/schedule.py), e.g.
  # c.evals.coco = dict(type="retrieval", annotations=..., image_root=..., every=50_000) for zero-shot.
  c.evals = ml_collections.ConfigDict()
  c.best_metric = ""
  c.best_mode = "max"
  return c


def set_stream(c, stream: str, datasets, global_batch: int, **extra):
  s = c.data[stream]
  s.enabled = bool(datasets) and global_batch > 0
  s.datasets = list(datasets)
  s.batch_size = global_batch
  for k, v in extra.items():
    s[k] = v
