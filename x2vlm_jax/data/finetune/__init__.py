"""Fine-tuning datasets, one module per task (official annotation JSON → TFDS → tf.data stream).

  common     annotation reading, record checks, the single-stream resumable iterator
  retrieval  COCO / Flickr30K retrieval (spec §4.2, §5.1)
  vqa        VQA v2 + VG QA (spec §4.2, §5.2)
  captioning COCO Karpathy captioning (spec §4.2, §5.5)
"""

import importlib

# tools/build_tfds.py --kind KIND → "module:function"(annotations, image_root, data_dir, name, *, split, strict, max_words)
BUILDERS = {"retrieval": "x2vlm_jax.data.finetune.retrieval:build",
            "vqa": "x2vlm_jax.data.finetune.vqa:build",
            "captioning": "x2vlm_jax.data.finetune.captioning:build"}


def builder(kind: str):
  module, fn = BUILDERS[kind].split(":")
  return getattr(importlib.import_module(module), fn)
