"""NLVR2: is a statement true of an image pair? docs/reference.md §5.3 ("following VLMo").

Both images through the vision tower (one call on 2B images, as the official `torch.cat([image0,
image1])`), the sentence fused with each image separately in multi_modal mode, the two fused [CLS]
concatenated (image 0 first) → `nlvr_head` MLP(2H → 4H → LN → GELU → 2) → cross-entropy over
{False, True}, mean over the batch. The head is new (config.model.heads.nlvr; lr × lr_mult).
Evaluation: the `nlvr2` evaluator (accuracy on dev and test-P), which runs `nlvr_forward`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.evaluation.nlvr2 import NLVR2Evaluator
from x2vlm_jax.tasks.base import FinetuneTask, synthetic_text, text_spec


def nlvr_forward(model, images, ids, mask, rng=None):
  """images [B, 2, R, R, 3] → logits [B, 2]."""
  r_vis, r_fuse = (None, None) if rng is None else jax.random.split(rng)
  pairs = images.shape[0]
  embeds, _ = model.encode_image(jnp.concatenate([images[:, 0], images[:, 1]]), r_vis)
  return model.nlvr_logits(embeds[:pairs], embeds[pairs:], ids, mask, r_fuse)


def synthetic_batch(seed: int, b: int, image_res: int, max_tokens: int, vocab_size: int):
  """An NLVR2 batch of the contract (images [B,2,R,R,3], text_ids, text_mask, labels, valid)."""
  rs = np.random.RandomState(seed)
  ids, mask = synthetic_text(rs, b, max_tokens, vocab_size)
  return {
    "images": rs.randn(b, 2, image_res, image_res, 3).astype(np.float32),
    "text_ids": ids,
    "text_mask": mask,
    "labels": rs.randint(0, 2, size=b).astype(np.int32),
    "valid": np.ones((b,), np.float32),
  }


class NLVR2Task(FinetuneTask):
  name = "nlvr2"
  DATA_MODULE = "x2vlm_jax.data.finetune.nlvr2"
  BUILDER = "build"
  EVALUATORS = {"nlvr2": NLVR2Evaluator}
  PREDICT_FNS = {"nlvr_logits": nlvr_forward}
  EVALUATION = ("nlvr2", {})

  def __init__(self, config):
    super().__init__(config)
    if not config.model.heads.nlvr:
      raise ValueError("task nlvr2: config.model.heads.nlvr must be True (the NLVR2 head)")

  @staticmethod
  def spec(cfg, b):
    """NLVR2 (data/finetune/nlvr2.py): the image pair [B, 2, R, R, 3] (image 0 = "left"), label 1 = True."""
    res = int(cfg.image_res)
    return {
      "images": ((b, 2, res, res, 3), np.float32),
      **text_spec(b, int(cfg.max_tokens)),
      "labels": ((b,), np.int32),
      "valid": ((b,), np.float32),
    }

  def loss(self, model, batch, rng, step):
    del step
    logits = nlvr_forward(model, batch["images"], batch["text_ids"], batch["text_mask"], rng)
    loss, acc = objectives.classification_loss(logits, batch["labels"], batch["valid"])
    return loss, {"train/ce": loss, "train/acc": acc}

  def synthetic_batch(self, seed, batch_size):
    data = self.config.data
    return synthetic_batch(seed, batch_size, data.image_res, data.max_tokens, self.config.model.text.vocab_size)
