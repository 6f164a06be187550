"""Referring-expression grounding by box regression (RefCOCO+), docs/reference.md §5.4.

The expression in text mode → fusion with the FULL image (all-ones mask) → `bbox_head` → sigmoid
(cx, cy, w, h) of the (cropped, resized) image; L = L1 + (1 − GIoU), means over the batch, weights 1:1
(`objectives.box_losses` with no whole-image rows). The model is the pre-training one: no new
parameter (the official `init_params = []`). Evaluation: the `grounding` evaluator.
"""

import jax
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.tasks.base import FinetuneTask, synthetic_text


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
  SPEC = "grounding"
  synthetic = staticmethod(synthetic_batch)

  def loss(self, model, batch, rng, step):
    del step
    r_vis, r_txt, r_box = jax.random.split(rng, 3)
    image_embeds, _ = model.encode_image(batch["images"], r_vis)
    text_embeds, _ = model.encode_text(batch["text_ids"], batch["text_mask"], r_txt)
    box = model.predict_box(image_embeds, text_embeds, batch["text_mask"], r_box)
    l1, giou = objectives.box_losses(box, batch["target_bbox"], None, batch["valid"])
    return l1 + giou, {"train/bbox": l1, "train/giou": giou}
