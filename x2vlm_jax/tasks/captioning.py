"""COCO captioning with the MLM head, UniLM-style and "FG-free" (docs/reference.md §5.5).

The 18-layer stack reads the rebuilt caption ([CLS] + prompt + caption with a [MASK] inserted before
each chosen token, same position ids, the 3-D attention mask in which nobody but itself sees a [MASK])
cross-attending to the image, and the MLM head predicts each chosen token at its [MASK]: the
label-smoothed (0.1) KL loss of `objectives.caption_mlm_loss`, Σ loss·weight / (Σ weight + 1e-5). No new
parameters: the pre-trained stack and MLM head are fine-tuned. Evaluation: the `captioning` evaluator
(`inference.generation.caption_batch`: beam search with the same [MASK]-at-the-next-position step,
CIDEr & co.).
"""

import jax
import jax.numpy as jnp
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.evaluation.captioning import CaptioningEvaluator
from x2vlm_jax.inference import generation
from x2vlm_jax.tasks.base import FinetuneTask, images_spec


class CaptioningTask(FinetuneTask):
  name = "captioning"
  DATA_MODULE = "x2vlm_jax.data.finetune.captioning"
  BUILDER = "build"
  EVALUATORS = {"captioning": CaptioningEvaluator}
  PREDICT_FNS = {"caption": generation.caption_batch}
  EVALUATION = ("captioning", {})

  def __init__(self, config):
    super().__init__(config)
    from x2vlm_jax.inference.tokenizer import Tokenizer

    tok = Tokenizer(config.data.vocab_file, config.data.max_tokens)
    self.cls_id, self.mask_id = tok.cls_id, tok.mask_id
    self.label_smoothing = float(config.get("label_smoothing", 0.1))

  @staticmethod
  def spec(cfg, b):
    """Captioning (data/finetune/captioning.py): the FG-free input, max_tokens + max_masks long (a [MASK]
    inserted before each chosen token), its 3-D attention mask and the chosen tokens."""
    masks = int(cfg.max_masks)
    length = int(cfg.max_tokens) + masks
    return {
      **images_spec(cfg, b),
      "text_ids": ((b, length), np.int32),
      "positions": ((b, length), np.int32),
      "attention": ((b, length, length), np.int32),
      "masked_pos": ((b, masks), np.int32),
      "masked_ids": ((b, masks), np.int32),
      "masked_weight": ((b, masks), np.float32),
    }

  def loss(self, model, batch, rng, step):
    del step
    r_vis, r_txt = jax.random.split(rng)
    image = model.vision(batch["images"], r_vis)
    hidden = model.text.multi_modal(
      batch["text_ids"], batch["attention"], image, None, r_txt, positions=batch["positions"]
    )
    # The head runs only at the [MASK]s (as the official `masked_pos` gather before the head).
    at_masks = jnp.take_along_axis(hidden, batch["masked_pos"][..., None], axis=1)
    logits = model.text.mlm_logits(at_masks)
    loss = objectives.caption_mlm_loss(
      logits, batch["masked_ids"], batch["masked_weight"], ignore_id=self.cls_id, label_smoothing=self.label_smoothing
    )
    return loss, {"train/caption": loss}

  def synthetic_batch(self, seed, batch_size):
    data = self.config.data
    return synthetic_batch(
      seed,
      batch_size,
      data.image_res,
      data.max_tokens,
      data.max_masks,
      self.config.model.text.vocab_size,
      self.cls_id,
      self.mask_id,
    )

  def create_iterator(self, seed, process_index, process_count):
    return self.data_module().create_iterator(
      self.config.data,
      self.config.prompt,
      spec=self.spec,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
    )


def synthetic_batch(
  seed: int, b: int, image_res: int, max_tokens: int, max_masks: int, vocab_size: int, cls_id: int, mask_id: int
):
  """A captioning batch of the contract: random tokens with every third position of the first
  max_masks real ones preceded by an inserted [MASK] (causal mask, [MASK] columns hidden)."""
  rs = np.random.RandomState(seed)
  length = max_tokens + max_masks
  ids = rs.randint(5, vocab_size, size=(b, length)).astype(np.int32)
  ids[:, 0] = cls_id
  masked_pos = np.tile(np.arange(1, 3 * max_masks, 3)[:max_masks], (b, 1)).astype(np.int32)
  masked_pos = np.minimum(masked_pos, length - 2)
  ids[np.arange(b)[:, None], masked_pos] = mask_id
  attention = np.tile(np.tril(np.ones((length, length), np.int32)), (b, 1, 1))
  for row in range(b):
    attention[row][:, masked_pos[row]] = 0
    attention[row][masked_pos[row], masked_pos[row]] = 1
  return {
    "images": rs.randn(b, image_res, image_res, 3).astype(np.float32),
    "text_ids": ids,
    "positions": np.tile(np.arange(length, dtype=np.int32), (b, 1)),
    "attention": attention,
    "masked_pos": masked_pos,
    "masked_ids": ids[np.arange(b)[:, None], masked_pos + 1],
    "masked_weight": np.ones((b, max_masks), np.float32),
  }
