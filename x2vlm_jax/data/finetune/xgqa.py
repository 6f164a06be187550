"""xGQA / GQA fine-tuning data (official vqa_dataset.xgqa_dataset, XGQA.py): the VQA stream
(data/finetune/vqa.py); the builder also reads GQA's IGLUE/LXMERT records [{"question_id", "img_id",
"sent", "label": {answer: score}}] and the GQA-original object {qid: {"imageId", "question", "answer"}}
(few-shot train files), converted to VQA records first: image `<img_id>.jpg` under --image_root, the
answers `label`'s keys, each weighing 1 / #keys (the official answer_weight).
"""

import json
import os
import tempfile

from etils import epath

from x2vlm_jax.data import records
from x2vlm_jax.data.finetune import vqa
from x2vlm_jax.data.finetune.vqa import create_iterator, train_size  # noqa: F401  (the task's data module)


def gqa_to_vqa_records(data):
  """GQA records (either format) → VQA-format training records; other records pass unchanged."""
  if isinstance(data, dict):
    return [
      {"question_id": qid, "image": f"{v['imageId']}.jpg", "question": v["question"], "answer": [v["answer"]]}
      for qid, v in data.items()
    ]
  return [
    {"question_id": r["question_id"], "image": f"{r['img_id']}.jpg", "question": r["sent"], "answer": list(r["label"])}
    if isinstance(r, dict) and "sent" in r and r.get("label")
    else r
    for r in data
  ]


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
  text = epath.Path(annotations).read_text()
  try:
    data = json.loads(text)
  except json.JSONDecodeError:
    return vqa.build(annotations, image_root, data_dir, name, split=split, strict=strict, max_words=max_words)
  with tempfile.TemporaryDirectory(prefix="x2vlm-gqa-") as tmp:
    path = os.path.join(tmp, "gqa.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump(gqa_to_vqa_records(data), f, ensure_ascii=False)
    return vqa.build(path, image_root, data_dir, name, split=split, strict=strict, max_words=max_words)
