"""XVNLI (official XVNLI.py, docs/reference.md §5.7): visual NLI as 3-way classification: the image and the
hypothesis fused (multi_modal mode), `cls_head` MLP(H → 2H → LN → GELU → 3) on the fused [CLS],
cross-entropy. Trained on English (zero-shot transfer) or the translated files (translate-train), evaluated
per language (the `xvnli` evaluator). Set config.model.heads.num_labels = 3."""

import jax
import jax.numpy as jnp
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.evaluation.xvnli import XVNLIEvaluator
from x2vlm_jax.tasks.base import FinetuneTask, images_spec, synthetic_text, text_spec


def cls_logits(model, images, ids, mask, rng=None):
  """images [B, R, R, 3] and hypotheses → logits [B, num_labels]."""
  r_vis, r_txt = (None, None) if rng is None else jax.random.split(rng)
  vis, _ = model.encode_image(images, r_vis)
  return model.cls_logits(vis, jnp.ones(vis.shape[:2], jnp.int32), ids, mask, r_txt)


class XVNLITask(FinetuneTask):
  name = "xvnli"
  DATA_MODULE = "x2vlm_jax.data.finetune.xvnli"
  BUILDER = "build"
  EVALUATORS = {"xvnli": XVNLIEvaluator}
  PREDICT_FNS = {"cls_logits": cls_logits}
  EVALUATION = ("xvnli", {})

  def __init__(self, config):
    super().__init__(config)
    if int(config.model.heads.num_labels) != 3:
      raise ValueError("task xvnli: set config.model.heads.num_labels = 3 (contradiction, entailment, neutral)")

  @staticmethod
  def spec(cfg, b):
    """XVNLI (data/finetune/xvnli.py): one image, the hypothesis, label 0/1/2."""
    return {
      **images_spec(cfg, b),
      **text_spec(b, int(cfg.max_tokens)),
      "labels": ((b,), np.int32),
      "valid": ((b,), np.float32),
    }

  def loss(self, model, batch, rng, step):
    del step
    logits = cls_logits(model, batch["images"], batch["text_ids"], batch["text_mask"], rng)
    loss, acc = objectives.classification_loss(logits, batch["labels"], batch["valid"])
    return loss, {"train/ce": loss, "train/acc": acc}

  def synthetic_batch(self, seed, batch_size):
    data = self.config.data
    rs = np.random.RandomState(seed)
    ids, mask = synthetic_text(rs, batch_size, int(data.max_tokens), self.config.model.text.vocab_size)
    return {
      "images": rs.randn(batch_size, data.image_res, data.image_res, 3).astype(np.float32),
      "text_ids": ids,
      "text_mask": mask,
      "labels": rs.randint(0, 3, size=batch_size).astype(np.int32),
      "valid": np.ones((batch_size,), np.float32),
    }
