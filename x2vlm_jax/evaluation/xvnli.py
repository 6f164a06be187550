"""XVNLI evaluation (official XVNLI.py): 3-way accuracy (contradiction / entailment / neutral) of the
arg-max class on each language's test file, their mean (the official "Test average accuracy") and the
IGLUE mean over the non-English languages. Records as the training data (data/finetune/xvnli.py);
records with another label are left out and counted (`skipped_labels`), as the official reader drops them.

config.evals.<name> = dict(type="xvnli", annotations="test_en.jsonl,test_ar.jsonl,...", languages="en,ar,...")
"""

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from x2vlm_jax.data import annotations as ann
from x2vlm_jax.data.annotations import BadRecord, xvnli_record
from x2vlm_jax.evaluation import multilingual
from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.evaluation.sharded import EvalBatches, to_host


class XVNLIEvaluator(Evaluator):
  """predict_fns: cls_logits(model, images [B, R, R, 3], ids, mask) → [B, 3]."""

  PREDICT_FNS = ("cls_logits",)
  HEADS = ("cls_head",)
  DEFAULTS = dict(annotations="", image_root="", languages="", batch_size=32, max_tokens=40, max_words=40, strict=False)

  def setup(self):
    ecfg = self.ecfg
    paths = [p.strip() for p in ecfg.annotations.split(",") if p.strip()]
    if not paths:
      raise ValueError(f"evals.{self.name}: annotations: no file given")
    tok = self.tokenizer()
    self.sets = {}
    for lang, path in zip(multilingual.language_names(paths, ecfg.languages), paths):
      images, texts, labels, skipped = [], [], [], 0
      for i, rec in enumerate(ann.read_records(path, objects_only=True)):
        try:
          image, text, label = xvnli_record(rec)
        except BadRecord as e:
          if e.reason != "bad_label":
            raise ValueError(f"annotations {path!r}: record {i}: {e}") from None
          skipped += 1
          continue
        images.append(ann.image_path(ecfg.image_root, image)), texts.append(text), labels.append(label)
      ids, mask = tok(texts, int(ecfg.max_tokens), clean=int(ecfg.max_words))
      self.sets[lang] = (images, ids, mask, np.asarray(labels, np.int64), skipped)
    self.batches = EvalBatches(self.mesh, int(ecfg.batch_size))

  def _fn(self, graphdef):
    cls_logits = self.predict_fns["cls_logits"]

    def logits(params, batch):
      return cls_logits(nnx.merge(graphdef, params), batch["images"], batch["ids"], batch["mask"]), batch["valid"]

    return self.jitted(graphdef, lambda: jax.jit(logits))

  def compile_targets(self, graphdef, params, *, num_images: int, num_texts: int):
    del num_images, num_texts
    res, length = int(self.model_cfg.image_res), int(self.ecfg.max_tokens)
    batch = self.sharded_batch(
      EvalBatches(self.mesh, int(self.ecfg.batch_size)),
      {
        "images": ((res, res, 3), jnp.float32),
        "ids": ((length,), jnp.int32),
        "mask": ((length,), jnp.int32),
        "valid": ((), jnp.float32),
      },
    )
    return [(f"{self.name}/cls_logits", self._fn(graphdef), (params, batch))]

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[dict]]:
    fn = self._fn(graphdef)
    per_language, predictions = {}, {}
    for lang, (images, ids, mask, labels, skipped) in self.sets.items():
      self.bad_images = []

      def load(idx, images=images, ids=ids, mask=mask):
        pixels, valid = self.load_images(images, idx)
        safe = np.maximum(idx, 0)
        return {"images": pixels, "ids": ids[safe], "mask": mask[safe], "valid": valid}

      n = len(images)
      outs = self.batches.map(lambda b: fn(params, b), n, load)
      logits, valid = (to_host(x)[:n] for x in self.batches.concat(outs))
      ok = valid > 0
      pred = np.argmax(logits, -1)
      per_language[lang] = {
        "acc": 100.0 * float(np.mean(pred[ok] == labels[ok])) if ok.any() else 0.0,
        "num": float(ok.sum()),
        "skipped_images": float((~ok).sum()),
        "skipped_labels": float(skipped),
      }
      predictions[lang] = [
        {"index": int(i), "prediction": int(pred[i]), "label": int(labels[i])} for i in np.flatnonzero(ok)
      ]
    return multilingual.averages(per_language, ["acc"]), predictions
