"""CCLM X²-VLM large: configs/pretrain/multilingual_cclm_x2vlm_large.yaml (docs/reference.md §5.7).

16 GPUs × (30 image–caption pairs + 30 region texts from ≤ 14 images + 30 parallel sentence pairs).
XLM-R large text encoder + 6-layer cross encoder from X²-VLM large's fusion layers. AdamW lr 3e-5
(vision 1e-5, text 6e-5, cross 3e-5, new params ×2), 1,000 warm-up steps, linear decay over
39 × 10,426 = 406,614 steps, fp32. Start from (stage 1 of the multilingual recipe)
`tools/convert_checkpoint.py --cclm_init x2vlm_large_4m.th --xlmr xlm-roberta-large/ --model cclm_large`.
"""

from x2vlm_jax.configs.pretrain import cclm_x2vlm_base, common


def get_config(arg=None):
  a = common.parse_arg(arg, gpus=16, per_gpu=30, per_gpu_images=14)
  c = cclm_x2vlm_base.get_config(
    f"model=cclm_large,gpus={a.gpus},per_gpu={a.per_gpu},per_gpu_images={a.per_gpu_images}"
  )
  c.optim.update(lr=3e-5, vision_lr=1e-5, text_lr=6e-5, cross_lr=3e-5)
  return c
