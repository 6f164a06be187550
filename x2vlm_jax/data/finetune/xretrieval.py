"""Multilingual retrieval fine-tuning data (official XRetrieval.py; xFlickr&CO, Multi30K, multilingual COCO).

The training stream is the retrieval one (data/finetune/retrieval.py); the builder also reads IGLUE's
JSON-lines records {"sentences": [...], "id", "img_path"} (official xflickrco_dataset.py: one row per
sentence, the image id from `id`), converted to the official retrieval rows first
(annotations.iglue_retrieval_records). Captions in any language go through the config's tokenizer
(XLM-R SentencePiece for the multilingual model).
"""

import json
import os
import tempfile

from x2vlm_jax.data import records
from x2vlm_jax.data.annotations import iglue_retrieval_records, read_records
from x2vlm_jax.data.finetune import retrieval
from x2vlm_jax.data.finetune.retrieval import create_iterator, train_size  # noqa: F401  (the task's data module)


def build(
  annotations: str,
  image_root: str,
  data_dir: str,
  name: str,
  *,
  split: str = "train",
  strict: bool = False,
  max_words: int = 30,
) -> records.BuildReport:
  rows = read_records(annotations)
  converted = iglue_retrieval_records(rows, train=True)
  if converted is rows:
    return retrieval.build(annotations, image_root, data_dir, name, split=split, strict=strict, max_words=max_words)
  with tempfile.TemporaryDirectory(prefix="x2vlm-iglue-") as tmp:
    path = os.path.join(tmp, os.path.basename(annotations) + ".json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump(converted, f, ensure_ascii=False)
    return retrieval.build(path, image_root, data_dir, name, split=split, strict=strict, max_words=max_words)
