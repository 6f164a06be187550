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
import jax.numpy as jnp
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
  """config.evals.<name> = dict(type="nlvr2", annotations="dev.json,test.json", splits="dev,test", ...).

  predict_fns: nlvr_logits(model, image pairs [B, 2, R, R, 3], ids, mask) → [B, 2] (class 1 = True)."""

  PREDICT_FNS = ("nlvr_logits",)
  HEADS = ("nlvr_head",)

  DEFAULTS = dict(annotations="", image_root="", splits="", batch_size=32, max_tokens=0, max_words=30, strict=False)

  def setup(self):
    ecfg = self.ecfg
    self.data = NLVR2Set.from_files(ecfg.annotations, ecfg.image_root, ecfg.splits)
    if not self.data.sentences:
      raise ValueError(f"nlvr2 evaluation {self.name!r}: {ecfg.annotations} holds no record")
    self.text_ids, self.text_mask = self.tokenize_texts(self.data.sentences, ecfg.max_tokens, ecfg.max_words)
    self.paths = [p for pair in self.data.pairs for p in pair]  # record i → rows 2i, 2i+1
    self.batches = EvalBatches(self.mesh, ecfg.batch_size)

  def _fn(self, graphdef):
    nlvr_logits = self.predict_fns["nlvr_logits"]

    def logits(params, batch):
      model = nnx.merge(graphdef, params)
      return nlvr_logits(model, batch["images"], batch["ids"], batch["mask"]), batch["valid"]

    return self.jitted(graphdef, lambda: jax.jit(logits))

  def compile_targets(self, graphdef, params, *, num_images: int, num_texts: int):
    """The pair classifier on one evaluation batch (records run batch by batch)."""
    del num_images, num_texts
    res, length = int(self.model_cfg.image_res), self.compile_text_tokens()
    batch = self.sharded_batch(
      EvalBatches(self.mesh, int(self.ecfg.batch_size)),
      {
        "images": ((2, res, res, 3), jnp.float32),
        "ids": ((length,), jnp.int32),
        "mask": ((length,), jnp.int32),
        "valid": ((), jnp.float32),
      },
    )
    return [(f"{self.name}/nlvr_logits", self._fn(graphdef), (params, batch))]

  def _load(self, idx: np.ndarray):
    rows = np.stack([np.where(idx >= 0, 2 * idx, -1), np.where(idx >= 0, 2 * idx + 1, -1)], 1).reshape(-1)
    pixels, valid = self.load_images(self.paths, rows)
    res = self.model_cfg.image_res
    safe = np.maximum(idx, 0)
    return {
      "images": pixels.reshape(len(idx), 2, res, res, 3),
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
    data = self.data
    logits, ok = self.predict(graphdef, params)
    if not ok.any():
      raise ValueError(f"nlvr2 evaluation {self.name!r}: no image pair of {self.ecfg.annotations} could be read")
    pred = np.argmax(logits, axis=-1)
    splits = np.asarray(data.splits)
    metrics = {}
    for split in dict.fromkeys(data.splits):
      sel = (splits == split) & ok
      metrics[f"{split}_acc"] = float(np.mean(pred[sel] == data.labels[sel])) if sel.any() else 0.0
      metrics[f"{split}_majority_acc"] = (
        float(max(np.mean(data.labels[sel]), 1 - np.mean(data.labels[sel]))) if sel.any() else 0.0
      )
      metrics[f"num_{split}"] = float(sel.sum())
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
    shifted = logits - logits.max(-1, keepdims=True)
    p_true = np.exp(shifted[:, 1]) / np.exp(shifted).sum(-1)
    predictions = [
      {
        "images": list(data.pairs[i]),
        "sentence": data.sentences[i],
        "split": data.splits[i],
        "label": bool(data.labels[i]),
        "prediction": bool(pred[i]),
        "p_true": round(float(p_true[i]), 4),
      }
      for i in np.flatnonzero(ok)
    ]
    return metrics, predictions
