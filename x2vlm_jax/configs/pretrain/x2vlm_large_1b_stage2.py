"""X²-VLM large, stage 2 with video: 32 GPUs × (32 + 32 region texts (≤ 14 images) + 20 videos × 3 frames)
→ global 1024 + 1024 (448 images) + 640 videos, lr 3e-5, 1,000 warm-up, 404,595 steps (docs/reference.md §6.4)."""

from x2vlm_jax.configs.pretrain import common, x2vlm_base_1b_stage2


def get_config(arg=None):
  a = common.parse_arg(arg, gpus=32)
  c = x2vlm_base_1b_stage2.get_config(
    f"model=large,gpus={a.gpus},per_gpu=32,per_gpu_regions=32,per_gpu_images=14,per_gpu_videos=20"
  )
  c.init_from = "gs://YOUR_BUCKET/x2vlm_large_1b_stage1_export"
  c.optim.lr = 3e-5
  # remat: the base config's policy.
  return c
