"""Fine-tuning datasets, one module per task (official annotation JSON → TFDS → tf.data stream).

common     annotation reading, record checks, the single-stream resumable iterator
retrieval  COCO / Flickr30K retrieval (docs/reference.md §4.2, §5.1)
nlvr2      NLVR2 image-pair statements (docs/reference.md §4.2, §5.3)
grounding  RefCOCO+ referring expressions with their boxes (docs/reference.md §4.2, §5.4)
vqa        VQA v2 + VG QA (docs/reference.md §4.2, §5.2)
captioning COCO Karpathy captioning (docs/reference.md §4.2, §5.5)
video      MSRVTT-QA / MSVD-QA and MSRVTT video–text retrieval (docs/reference.md §5.6, §2.4)
"""

import importlib

# tools/build_tfds.py --kind KIND → "module:function"(annotations, image_root, data_dir, name, *, split, strict,
# max_words).
# Task-specific options come from `--option key=value` (e.g. video_qa: ans2label, video_pattern).
BUILDERS = {
  "retrieval": "x2vlm_jax.data.finetune.retrieval:build",
  "vqa": "x2vlm_jax.data.finetune.vqa:build",
  "captioning": "x2vlm_jax.data.finetune.captioning:build",
  "video_qa": "x2vlm_jax.data.finetune.video:build_qa",
  "video_retrieval": "x2vlm_jax.data.finetune.video:build_retrieval",
  "nlvr2": "x2vlm_jax.data.finetune.nlvr2:build",
  "grounding": "x2vlm_jax.data.finetune.grounding:build",
}


def builder(kind: str):
  module, fn = BUILDERS[kind].split(":")
  return getattr(importlib.import_module(module), fn)
