"""X²-VLM base, 1B stage 1 (filtered LAION-400M + LAION-2B, plus a clean aux image set): spec §6.4, §3.6.

24 GPUs × (128 image–caption pairs + 64 region texts from ≤ 26 images) → global 3072 + 1536 (624 images).
Regions weighted 0.5; max_tokens 30; lr 1e-4, 2,500 warm-up, 3 × 430,678 = 1,292,034 scheduled steps;
ITM only for the first 200k steps (`stop_calc_itm`). Deviation: the official run computes ITM only on
the 15% "aux" (COCO/VG/SBU/CC) steps; here the aux set is mixed into the image stream by weight and ITM
runs on every step until stop_calc_itm (documented in README).
"""

from configs.pretrain import common

IMAGE_SETS_1B = [("laion_filtered", "train", 0.85), ("coco_caption", "train", 0.15 * 0.1),
                 ("vg_caption", "train", 0.15 * 0.15), ("sbu", "train", 0.15 * 0.15),
                 ("cc3m", "train", 0.15 * 0.3), ("cc12m", "train", 0.15 * 0.3)]
REGION_SETS_1B = [("coco_objects", "train", 1.0), ("vg_objects", "train", 1.0), ("vg_regions", "train", 1.0),
                  ("refcoco_regions", "train", 1.0), ("gqa_objects", "train", 1.0),
                  ("flickr_entities", "train", 1.0), ("openimages_v6", "train", 2.0), ("objects365", "train", 2.0)]


def get_config(arg=None):
  a = common.parse_arg(arg, model="base", gpus=24, per_gpu=128, per_gpu_regions=64, per_gpu_images=26)
  c = common.base_config(a.model)
  c.data.data_dir = "gs://YOUR_BUCKET/tfds"
  c.data.vocab_file = "gs://YOUR_BUCKET/bert-base-uncased/vocab.txt"
  c.data.max_tokens = 30
  c.data.max_masks = 12
  common.set_stream(c, "image", IMAGE_SETS_1B, a.gpus * a.per_gpu)
  common.set_stream(c, "region", REGION_SETS_1B, a.gpus * a.per_gpu_regions, num_images=a.gpus * a.per_gpu_images)
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
  return c
