"""Tiny X²-VLM on contract-shaped synthetic batches: trainer tests (no tensorflow, seconds per step)."""

from x2vlm_jax.configs.pretrain import common


def get_config(arg=None):
  a = common.parse_arg(arg, video=False, steps=6)
  c = common.base_config("tiny")
  c.data.source = "synthetic"
  c.data.max_tokens = 12
  c.data.max_masks = 4
  common.set_stream(c, "image", [("synthetic", "train", 1.0)], 8)
  common.set_stream(c, "region", [("synthetic", "train", 1.0)], 8, num_images=4)
  common.set_stream(c, "video", [("synthetic", "train", 1.0)] if a.video else [], 4 if a.video else 0, num_frames=2)
  if a.video:
    c.model.num_frames = 2
  c.itm_group_size.update(image=4, region=4, video=2)
  c.total_steps = a.steps
  c.log_every = 1
  c.checkpoint_every = 3
  c.optim.warmup_steps = 2
  c.optim.lr = 1e-3
  return c
