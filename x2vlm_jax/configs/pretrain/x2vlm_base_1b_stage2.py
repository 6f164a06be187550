"""X²-VLM base, stage 2 with video (docs/reference.md §6.4, §2.4): continues from the stage-1 checkpoint.

16 GPUs × (64 image–caption pairs + 64 region texts from ≤ 26 images + 40 videos × 3 frames) →
global 1024 + 1024 (416 images) + 640 videos. All streams weighted 1.0; lr 6e-5 (new params such as the
frame embedding ×2), 1,000 warm-up, 81 × 4,995 = 404,595 scheduled steps; max_tokens 40.
Video: HowTo100M + YT-Temporal-180M (pooled, ∝ size), plus WebVid-2.5M as aux with probability 0.35;
officially a whole step's video batch is aux or not, here each example is (same proportion).
"""

from x2vlm_jax.configs.pretrain import common, x2vlm_base_1b_stage1, x2vlm_base_4m

VIDEO_SETS = [("webvid", "train", 0.35), ("howto100m", "train"), ("yt_temporal", "train")]


def get_config(arg=None):
  a = common.parse_arg(arg, model="base", gpus=16, per_gpu=64, per_gpu_regions=64, per_gpu_images=26, per_gpu_videos=40)
  c = common.base_config(a.model)
  c.model.num_frames = 3
  c.data.data_dir = "gs://YOUR_BUCKET/tfds"
  c.data.vocab_file = "gs://YOUR_BUCKET/bert-base-uncased/vocab.txt"
  c.data.max_tokens = 40
  common.set_stream(c, "image", x2vlm_base_4m.IMAGE_SETS_4M, a.gpus * a.per_gpu)
  common.set_stream(
    c,
    "region",
    x2vlm_base_1b_stage1.REGION_SETS_1B,
    a.gpus * a.per_gpu_regions,
    num_images=a.gpus * a.per_gpu_images,
    group_images=a.per_gpu_images,
    group_texts=a.per_gpu_regions,
  )
  common.set_stream(c, "video", VIDEO_SETS, a.gpus * a.per_gpu_videos, num_frames=3)
  c.itm_group_size.update(image=a.per_gpu, region=a.per_gpu_regions, video=a.per_gpu_videos)
  c.loss_weights.update(image=1.0, region=1.0, video=1.0)
  c.init_from = "gs://YOUR_BUCKET/x2vlm_base_1b_stage1_export"
  c.total_steps = 404_595
  c.optim.lr = 6e-5
  c.optim.warmup_steps = 1000
  c.checkpoint_every = 50_000
  c.log_every = 100
  c.model.dtype = "bfloat16"
  # The 4M configs' remat policy (measured there at 128 image texts per chip: 39 GiB instead of 129 GiB per
  # v5p chip); the 1B per-chip image batch is the same. Not compiled at the 1B batch here.
  c.model.remat.vision = c.model.remat.text = "dots_with_no_batch_dims_saveable"
  return c
