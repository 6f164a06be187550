"""NLVR2 evaluation (docs/reference.md §5.3): accuracy of the True/False prediction on dev and test-P.

Per record: both images through the test transform, the sentence (`pre_caption` 30 words, padded to
the longest, no truncation, as the official evaluation), `nlvr_logits` → argmax. One evaluator can
read several files (`annotations="dev.json,test.json"`, `splits="dev,test"`) and reports `<split>_acc`
(fractions, as the official log) for each, plus `dev_test_mean_acc` when both exist: the official
NLVR.py keeps the epoch with the best MEAN of dev and test accuracy. Selecting on test leaks the test
set into model selection, so configs select on `dev_acc`; `best_metric="<name>/dev_test_mean_acc"`
reproduces the official choice.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import jax
import numpy as np
from absl import logging
from flax import nnx

from x2vlm_jax.data import annotations as ann
from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.evaluation.sharded import EvalBatches, to_host


@dataclasses.dataclass
class NLVR2Set:
  pairs: List[Tuple[str, str]]  # full paths (left, right) per record
  sentences: List[str]
  labels: np.ndarray  # [n] int 0/1
  splits: List[str]

  @classmethod
  def from_files(cls, annotations: str, image_root: str = "", splits: str = "") -> "NLVR2Set":
    out = cls([], [], np.zeros((0,), np.int64), [])
    labels = []
    for split, path, records in ann.read_split_files(annotations, splits):
      for i, rec in enumerate(records):
        try:
          pair, sentence, label = ann.nlvr2_record(rec)
        except ann.BadRecord as e:
          raise e.located(path, i) from None
        labels.append(label)
        out.pairs.append(tuple(ann.image_path(image_root, p) for p in pair))
        out.sentences.append(sentence)
        out.splits.append(split)
    out.labels = np.asarray(labels, np.int64)
    return out


class NLVR2Evaluator(Evaluator):
  """config.evals.<name> = dict(type="nlvr2", annotations="dev.json,test.json", splits="dev,test", ...)."""

  DEFAULTS = dict(annotations="", image_root="", splits="", batch_size=32, max_tokens=0, max_words=30, strict=False)

  def setup(self):
    e = self.ecfg
    self.data = NLVR2Set.from_files(e.annotations, e.image_root, e.splits)
    if not self.data.sentences:
      raise ValueError(f"nlvr2 evaluation {self.name!r}: {e.annotations} holds no record")
    self.text_ids, self.text_mask = self.tokenize_texts(self.data.sentences, e.max_tokens, e.max_words)
    self.paths = [p for pair in self.data.pairs for p in pair]  # record i → rows 2i, 2i+1
    self.batches = EvalBatches(self.mesh, e.batch_size)

  def _fn(self, graphdef):
    from x2vlm_jax.tasks.nlvr2 import nlvr_forward

    def logits(params, b):
      return nlvr_forward(nnx.merge(graphdef, params), b["images"], b["ids"], b["mask"]), b["valid"]

    return self.jitted(graphdef, lambda: jax.jit(logits))

  def _load(self, idx: np.ndarray):
    rows = np.stack([np.where(idx >= 0, 2 * idx, -1), np.where(idx >= 0, 2 * idx + 1, -1)], 1).reshape(-1)
    pixels, valid = self.load_images(self.paths, rows)
    r = self.model_cfg.image_res
    safe = np.maximum(idx, 0)
    return {
      "images": pixels.reshape(len(idx), 2, r, r, 3),
      "ids": self.text_ids[safe],
      "mask": self.text_mask[safe],
      "valid": valid.reshape(len(idx), 2).min(1),
    }

  def predict(self, graphdef, params) -> Tuple[np.ndarray, np.ndarray]:
    """(logits [n, 2], readable [n]) for every record."""
    n = len(self.data.sentences)
    self.bad_images = []
    fn = self._fn(graphdef)
    outs = self.batches.map(lambda b: fn(params, b), n, self._load)
    logits, valid = (to_host(x)[:n] for x in self.batches.concat(outs))
    return logits, valid > 0

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[list]]:
    d = self.data
    logits, ok = self.predict(graphdef, params)
    if not ok.any():
      raise ValueError(f"nlvr2 evaluation {self.name!r}: no image pair of {self.ecfg.annotations} could be read")
    pred = np.argmax(logits, axis=-1)
    splits = np.asarray(d.splits)
    metrics = {}
    for s in dict.fromkeys(d.splits):
      sel = (splits == s) & ok
      metrics[f"{s}_acc"] = float(np.mean(pred[sel] == d.labels[sel])) if sel.any() else 0.0
      metrics[f"{s}_majority_acc"] = (
        float(max(np.mean(d.labels[sel]), 1 - np.mean(d.labels[sel]))) if sel.any() else 0.0
      )
      metrics[f"num_{s}"] = float(sel.sum())
    if "dev_acc" in metrics and "test_acc" in metrics:
      metrics["dev_test_mean_acc"] = (metrics["dev_acc"] + metrics["test_acc"]) / 2
    metrics["skipped_records"] = float((~ok).sum())
    if not ok.all():
      logging.warning(
        "nlvr2 %s: %d of %d records left out (unreadable images, e.g. %s)",
        self.name,
        int((~ok).sum()),
        len(ok),
        self.bad_images[:3],
      )
    z = logits - logits.max(-1, keepdims=True)
    p_true = np.exp(z[:, 1]) / np.exp(z).sum(-1)
    predictions = [
      {
        "images": list(d.pairs[i]),
        "sentence": d.sentences[i],
        "split": d.splits[i],
        "label": bool(d.labels[i]),
        "prediction": bool(pred[i]),
        "p_true": round(float(p_true[i]), 4),
      }
      for i in np.flatnonzero(ok)
    ]
    return metrics, predictions
