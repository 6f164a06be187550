"""Referring-expression grounding by box regression (RefCOCO+), docs/reference.md §5.4.

The expression in text mode → fusion with the FULL image (all-ones mask) → `bbox_head` → sigmoid
(cx, cy, w, h) of the (cropped, resized) image; L = L1 + (1 − GIoU), means over the batch, weights 1:1
(`objectives.box_losses` with no whole-image rows). The model is the pre-training one: no new
parameter (the official `init_params = []`). Evaluation: the `grounding` evaluator, which runs
`predict_box` on the original-size protocol.
"""

import jax
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.evaluation.grounding import GroundingEvaluator
from x2vlm_jax.tasks.base import FinetuneTask, images_spec, synthetic_text, text_spec


def predict_box(model, images, ids, mask, rng=None):
  """images [B, R, R, 3], the expressions → (cx, cy, w, h) [B, 4] in [0, 1] of each image."""
  r_vis, r_txt, r_box = (None, None, None) if rng is None else jax.random.split(rng, 3)
  image_embeds, _ = model.encode_image(images, r_vis)
  text_embeds, _ = model.encode_text(ids, mask, r_txt)
  return model.predict_box(image_embeds, text_embeds, mask, r_box)


def synthetic_batch(seed: int, b: int, image_res: int, max_tokens: int, vocab_size: int):
  """A grounding batch of the contract (images, text_ids, text_mask, target_bbox, valid)."""
  rs = np.random.RandomState(seed)
  ids, mask = synthetic_text(rs, b, max_tokens, vocab_size)
  wh = rs.uniform(0.1, 0.6, size=(b, 2))
  centre = rs.uniform(wh / 2, 1 - wh / 2)
  return {
    "images": rs.randn(b, image_res, image_res, 3).astype(np.float32),
    "text_ids": ids,
    "text_mask": mask,
    "target_bbox": np.concatenate([centre, wh], 1).astype(np.float32),
    "valid": np.ones((b,), np.float32),
  }


class GroundingTask(FinetuneTask):
  name = "grounding"
  DATA_MODULE = "x2vlm_jax.data.finetune.grounding"
  BUILDER = "build"
  EVALUATORS = {"grounding": GroundingEvaluator}
  PREDICT_FNS = {"predict_box": predict_box}
  EVALUATION = ("grounding", {})

  @staticmethod
  def spec(cfg, b):
    """Grounding (data/finetune/grounding.py): the target box (cx, cy, w, h) / R of the augmented image."""
    return {
      **images_spec(cfg, b),
      **text_spec(b, int(cfg.max_tokens)),
      "target_bbox": ((b, 4), np.float32),
      "valid": ((b,), np.float32),
    }

  def loss(self, model, batch, rng, step):
    del step
    box = predict_box(model, batch["images"], batch["text_ids"], batch["text_mask"], rng)
    l1, giou = objectives.box_losses(box, batch["target_bbox"], None, batch["valid"])
    return l1 + giou, {"train/bbox": l1, "train/giou": giou}

  def synthetic_batch(self, seed, batch_size):
    data = self.config.data
    return synthetic_batch(seed, batch_size, data.image_res, data.max_tokens, self.config.model.text.vocab_size)
