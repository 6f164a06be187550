"""CCLM X²-VLM base: configs/pretrain/multilingual_cclm_x2vlm_base.yaml (docs/reference.md §5.7).

8 GPUs × (60 image–caption pairs + 60 region texts from ≤ 26 images + 60 parallel sentence pairs).
XLM-R base text encoder + 6-layer cross encoder from X²-VLM base's fusion layers. AdamW lr 4e-5
(vision 2e-5, text 8e-5, cross 4e-5, new params ×2), 1,000 warm-up steps, linear decay over
39 × 10,426 = 406,614 steps, fp32. Start from (stage 1 of the multilingual recipe)
`tools/convert_checkpoint.py --cclm_init x2vlm_base_4m.th --xlmr xlm-roberta-base/ --model cclm_base`.
"""

from x2vlm_jax.configs.pretrain import cclm_common, common

# Multilingual image–text sets (train_file) and code-switched region sets (train_file_regions), in
# TFDS under these names (built from the official-format files); parallel text: WikiMatrix (+ en–bn).
IMAGE_SETS = [("cc3m_mm", "train"), ("sbu_mm", "train"), ("vg_mm", "train"), ("coco_mm", "train")]
REGION_SETS = [("coco_objects_mm", "train"), ("vg_objects_mm", "train"), ("vg_regions_mm", "train")]
MTEXT_SETS = [("wikimatrix", "train"), ("wikimatrix_en_bn", "train")]


def get_config(arg=None):
  a = common.parse_arg(arg, model="cclm_base", gpus=8, per_gpu=60, per_gpu_images=26)
  c = cclm_common.cclm_config(a.model)
  c.data.data_dir = "gs://YOUR_BUCKET/tfds"
  common.set_stream(c, "image", IMAGE_SETS, a.gpus * a.per_gpu)
  common.set_stream(
    c,
    "region",
    REGION_SETS,
    a.gpus * a.per_gpu,
    num_images=a.gpus * a.per_gpu_images,
    group_images=a.per_gpu_images,
    group_texts=a.per_gpu,
    max_regions=5,
    min_perc_in_image=0.5,
  )
  common.set_stream(c, "video", [], 0)
  cclm_common.mtext_stream(c, MTEXT_SETS, a.gpus * a.per_gpu)
  c.itm_group_size.update(image=a.per_gpu, region=a.per_gpu, mtext=a.per_gpu)
  c.loss_weights.update(image=1.0, region=1.0, mtext=1.0)

  c.total_steps = 39 * 10_426
  c.optim.update(lr=4e-5, vision_lr=2e-5, text_lr=8e-5, cross_lr=4e-5)
  c.log_every = 100
  # Our choice, carried over from the English base/large measurements (docs/performance.md, "The official
  # batch through libtpu"): the scanned towers keep the weight projections and recompute attention and
  # the element-wise ops. Not measured for CCLM's own batch; numerically it changes nothing.
  c.model.remat.vision = c.model.remat.text = "dots_with_no_batch_dims_saveable"
  return c
