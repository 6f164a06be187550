"""X²-VLM base on the 4M set (COCO + VG + SBU + CC3M): x2vlm_base_4m.yaml, docs/reference.md §6.4.

8 GPUs × (128 image–caption pairs + 128 region texts from ≤ 50 images) → global 1024 + 1024 (400 images).
AdamW lr 1e-4 (new params ×2), 2,500 warm-up steps, linear decay over 101 × 4,995 = 504,495 steps.
Start from BEiT-v2 base + bert-base-uncased: `--config.init_from=DIR` written by
`tools/convert_checkpoint.py --beit beitv2_base_patch16_224_pt1k_ft21k.pth --bert bert-base-uncased/ --model base`.
"""

from x2vlm_jax.configs.pretrain import common

# No weights: each dataset is drawn ∝ its record count, as the official loader that pools and shuffles
# all files of a stream.
IMAGE_SETS_4M = [("coco_caption", "train"), ("vg_caption", "train"), ("sbu", "train"), ("cc3m", "train")]
REGION_SETS_4M = [
  ("coco_objects", "train"),
  ("vg_objects", "train"),
  ("vg_regions", "train"),
  ("refcoco_regions", "train"),
  ("gqa_objects", "train"),
  ("flickr_entities", "train"),
]


def get_config(arg=None):
  a = common.parse_arg(arg, model="base", gpus=8, per_gpu=128, per_gpu_regions=128, per_gpu_images=50)
  c = common.base_config(a.model)
  c.data.data_dir = "gs://YOUR_BUCKET/tfds"
  c.data.vocab_file = "gs://YOUR_BUCKET/bert-base-uncased/vocab.txt"
  c.data.max_tokens = 40
  c.data.max_masks = 12
  c.data.mask_prob = 0.5
  common.set_stream(c, "image", IMAGE_SETS_4M, a.gpus * a.per_gpu)
  common.set_stream(
    c,
    "region",
    REGION_SETS_4M,
    a.gpus * a.per_gpu_regions,
    num_images=a.gpus * a.per_gpu_images,
    group_images=a.per_gpu_images,
    group_texts=a.per_gpu_regions,
  )
  common.set_stream(c, "video", [], 0)
  c.itm_group_size.update(image=a.per_gpu, region=a.per_gpu_regions)
  c.loss_weights.update(image=1.0, region=1.0)

  c.total_steps = 504_495
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 2500
  c.optim.clip_norm = 1.0
  c.checkpoint_every = 50_000
  c.log_every = 100
  c.model.dtype = "bfloat16"
  # Our choice, measured (docs/performance.md, "The official batch through libtpu"): at this per-chip batch
  # the scanned step needs 129 GiB per v5p chip without rematerialisation; this policy (weight projections
  # kept, attention and element-wise ops recomputed) needs 39 GiB (`full`: 8 GiB, for ~20x this policy's
  # recompute by XLA's count).
  # The official PyTorch towers do not rematerialise; numerically it changes nothing (tests/test_train_step.py).
  c.model.remat.vision = c.model.remat.text = "dots_with_no_batch_dims_saveable"
  return c
