"""X²-VLM base, 1B stage 1 (filtered LAION-400M + LAION-2B, plus a clean aux image set): docs/reference.md §6.4, §3.6.

24 GPUs × (128 image–caption pairs + 64 region texts from ≤ 26 images) → global 3072 + 1536 (624 images).
Regions weighted 0.5; max_tokens 30; lr 1e-4, 2,500 warm-up, 3 × 430,678 = 1,292,034 scheduled steps;
ITM only for the first 200k steps (`stop_calc_itm`).
"""

from x2vlm_jax.configs.pretrain import common

# Official (docs/reference.md §3.6): a whole step's image batch comes from the clean aux set (COCO/VG/SBU/CC3M/CC12M,
# files pooled, so ∝ size) with probability 0.15, else from LAION, and ITM runs only on aux steps.
# Here: every example is LAION with probability 0.85, else aux ∝ size; ITM on every step until
# stop_calc_itm (README, deviations).
IMAGE_SETS_1B = [
  ("laion_filtered", "train", 0.85),
  ("coco_caption", "train"),
  ("vg_caption", "train"),
  ("sbu", "train"),
  ("cc3m", "train"),
  ("cc12m", "train"),
]
REGION_SETS_1B = [
  ("coco_objects", "train"),
  ("vg_objects", "train"),
  ("vg_regions", "train"),
  ("refcoco_regions", "train"),
  ("gqa_objects", "train"),
  ("flickr_entities", "train"),
  ("openimages_v6", "train"),
  ("objects365", "train"),
]  # ∝ record count (official pooling)


def get_config(arg=None):
  a = common.parse_arg(arg, model="base", gpus=24, per_gpu=128, per_gpu_regions=64, per_gpu_images=26)
  c = common.base_config(a.model)
  c.data.data_dir = "gs://YOUR_BUCKET/tfds"
  c.data.vocab_file = "gs://YOUR_BUCKET/bert-base-uncased/vocab.txt"
  c.data.max_tokens = 30
  c.data.max_masks = 12
  common.set_stream(c, "image", IMAGE_SETS_1B, a.gpus * a.per_gpu)
  common.set_stream(
    c,
    "region",
    REGION_SETS_1B,
    a.gpus * a.per_gpu_regions,
    num_images=a.gpus * a.per_gpu_images,
    group_images=a.per_gpu_images,
    group_texts=a.per_gpu_regions,
  )
  common.set_stream(c, "video", [], 0)
  c.itm_group_size.update(image=a.per_gpu, region=a.per_gpu_regions)
  c.loss_weights.update(image=1.0, region=0.5)
  c.stop_calc_itm = 200_000
  c.total_steps = 1_292_034
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 2500
  c.checkpoint_every = 50_000
  c.log_every = 100
  c.model.dtype = "bfloat16"
  # The 4M configs' remat policy (measured there at 128 image texts per chip: 39 GiB instead of 129 GiB per
  # v5p chip); the 1B per-chip image batch is the same. Not compiled at the 1B batch here.
  c.model.remat.vision = c.model.remat.text = "dots_with_no_batch_dims_saveable"
  return c
