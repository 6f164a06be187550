"""X²-VLM large, 1B stage 1: as the base run with 64 image + 32 region texts (≤ 14 images) per GPU and
lr 5e-5 (docs/reference.md §6.4). The GPU count is not recorded in the release ([UNVERIFIED]); 24 is assumed."""

from x2vlm_jax.configs.pretrain import common, x2vlm_base_1b_stage1


def get_config(arg=None):
  a = common.parse_arg(arg, gpus=24)
  c = x2vlm_base_1b_stage1.get_config(f"model=large,gpus={a.gpus},per_gpu=64,per_gpu_regions=32,per_gpu_images=14")
  c.optim.lr = 5e-5
  # remat: the base config's policy.
  return c
