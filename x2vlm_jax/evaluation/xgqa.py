"""xGQA (official XGQA.py; IGLUE): the VQA evaluation (evaluation/vqa.py: answer-list ranking or
generation) on one test file per language; each language's accuracy is the official `get_acc` (exact
match of the predicted answer with the gold one, in %), their mean and the IGLUE mean over the
non-English languages (the official script's model-selection score, "following iglue").

config.evals.<name> = dict(type="xgqa", annotations="test_en.json,test_de.json,...", languages="en,de,...",
                           image_root=GQA images, answer_list=...)
A test file is any of the formats the official `get_acc` reads: IGLUE/LXMERT records
[{"question_id", "img_id", "sent", "label": {answer: score}}], the GQA original {qid: {"imageId",
"question", "answer"}}, or our VQA format [{"question_id", "image", "question", "answer"}]. Images:
`image_root/<img_id>.jpg` for the first two.
"""

import json
from typing import Dict, List, Optional, Tuple

from etils import epath

from x2vlm_jax.data import annotations as ann
from x2vlm_jax.evaluation import multilingual
from x2vlm_jax.evaluation.sharded import EvalBatches
from x2vlm_jax.evaluation.vqa import VQAEvaluator, VQASet
from x2vlm_jax.text_clean import pre_question


def xgqa_records(path: str) -> List[Dict]:
  """The records of one xGQA test file as VQA-format records (answer: the gold string, image: file name)."""
  data = json.loads(epath.Path(path).read_text())
  out = []
  if isinstance(data, dict):  # GQA original
    for qid, v in data.items():
      out.append({"question_id": qid, "image": f"{v['imageId']}.jpg", "question": v["question"], "answer": v["answer"]})
    return out
  for i, r in enumerate(data):
    if not isinstance(r, dict):
      raise ValueError(f"annotations {path!r}: record {i} is {type(r).__name__}, expected an object")
    if "sent" in r:  # IGLUE / LXMERT
      label = r.get("label") or {}
      rec = {"question_id": r["question_id"], "image": f"{r['img_id']}.jpg", "question": r["sent"]}
      if label:
        rec["answer"] = list(label)[0]  # the official get_acc: the first key of `label`
      out.append(rec)
    else:
      out.append(r)
  return out


def xgqa_set(path: str, image_root: str) -> VQASet:
  records = xgqa_records(path)
  ann.require(path, records, "question", str)
  ann.require(path, records, "question_id", (int, str))
  out = VQASet([], [], [], [], [])
  for rec in records:
    out.images.append(ann.image_path(image_root, rec["image"]))
    out.questions.append(rec["question"])
    out.question_ids.append(rec["question_id"])
    answer = rec.get("answer")
    out.answers.append(answer if isinstance(answer, str) else None)
    out.answer_types.append(None)
  return out


class XGQAEvaluator(VQAEvaluator):
  ANSWER_LABEL_FILE = True  # GQA's trainval_ans2label.json: its keys are the answer list
  DEFAULTS = dict(VQAEvaluator.DEFAULTS, languages="")

  def setup(self):
    ecfg = self.ecfg
    self._prepare_decoding()
    paths = [p.strip() for p in ecfg.annotations.split(",") if p.strip()]
    if not paths:
      raise ValueError(f"evals.{self.name}: annotations: no file given")
    self.sets = {}
    for lang, path in zip(multilingual.language_names(paths, ecfg.languages), paths):
      data = xgqa_set(path, ecfg.image_root)
      questions = [pre_question(q, int(ecfg.max_words)) for q in data.questions]
      # padded to each file's longest question unless max_tokens is set, as VQAEvaluator (official test)
      self.sets[lang] = (data, *self.tokenize_questions(questions, int(ecfg.max_tokens)))
    self.batches = EvalBatches(self.mesh, int(ecfg.batch_size))

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[dict]]:
    per_language, predictions = {}, {}
    for lang, (data, ids, mask, truncated, long) in self.sets.items():
      self.data, self.q_ids, self.q_mask, self.truncated, self.long = data, ids, mask, truncated, long
      metrics, preds = super().evaluate(graphdef, params)
      metrics["acc"] = metrics.pop("exact_match", 0.0)  # official get_acc (in %)
      per_language[lang] = metrics
      predictions[lang] = preds
    return multilingual.averages(per_language, ["acc"]), predictions
