"""COCO captioning with the MLM head, base model (docs/reference.md §5.5).

X²-VLM released only the large captioning config; this base variant keeps every hyper-parameter of
`coco_captioning_large.py` (released values: 384 px, FG-free masking, lr 5e-6 / vision 1e-5 / text
5e-6, 5 epochs, 5% warm-up, beams 3, min 5, max 50) on the base model — our choice, untuned.
"""

from x2vlm_jax.configs.finetune import coco_captioning_large


def get_config(arg=None):
  return coco_captioning_large.get_config("model=base" + (f",{arg}" if arg else ""))
