"""VQA v2 fine-tuning with the generative answer decoder (docs/reference.md §5.2).

The 18-layer stack reads the question in multi_modal mode against the image; its output is the
memory of a `heads.decoder_layers`-layer BERT LM decoder (6 released, or 3) trained teacher-forced on
the question's answers: L = Σ_answers weight · (summed token CE of the answer) / #questions, with a
fixed A answers per question (padding answers weigh 0) sharing the question's memory.

Initialisation (`init_additions`): a checkpoint without a decoder (pre-training) gives the decoder
the official copy of its fusion layers, embeddings and MLM head (`decoder_from_fusion`); with
`config.large_lr_for_dec` (default False as in XVLMForVQA; the released configs: True) every decoder
parameter is in the lr × lr_mult group (the official `init_params`), whether derived or loaded.
Evaluation: the `vqa` evaluator (answer-list ranking or free-form generation).
"""

import jax
import numpy as np

from x2vlm_jax.evaluation.vqa import VQAEvaluator
from x2vlm_jax.inference import generation
from x2vlm_jax.models.decoder import decoder_from_fusion
from x2vlm_jax.tasks.base import FinetuneTask, images_spec, text_spec

DECODER = "decoder/"


class VQATask(FinetuneTask):
  name = "vqa"
  DATA_MODULE = "x2vlm_jax.data.finetune.vqa"
  BUILDER = "build"
  EVALUATORS = {"vqa": VQAEvaluator}
  PREDICT_FNS = {"rank": generation.rank_batch, "generate": generation.answer_batch}
  EVALUATION = ("vqa", {})

  def __init__(self, config):
    super().__init__(config)
    if not config.model.heads.decoder_layers:
      raise ValueError(
        "task vqa: the model has no answer decoder; set config.model.heads.decoder_layers "
        "(6 in the released configs, or 3)"
      )
    self.large_lr_for_dec = bool(config.get("large_lr_for_dec", False))  # XVLMForVQA: config.get(..., False)

  @staticmethod
  def spec(cfg, b):
    """VQA (data/finetune/vqa.py): A = max_answers answers of max_answer_tokens per question."""
    answers, answer_tokens = int(cfg.max_answers), int(cfg.max_answer_tokens)
    return {
      **images_spec(cfg, b),
      **text_spec(b, int(cfg.max_tokens)),
      "answer_ids": ((b, answers, answer_tokens), np.int32),
      "answer_mask": ((b, answers, answer_tokens), np.int32),
      "answer_weights": ((b, answers), np.float32),
      "answers_cut": ((b,), np.int32),
    }

  def loss(self, model, batch, rng, step):
    del step
    r_vis, r_enc, r_dec = jax.random.split(rng, 3)
    image = model.vision(batch["images"], r_vis)
    memory = model.vqa_memory(batch["text_ids"], batch["text_mask"], image, None, r_enc)
    loss = model.vqa_loss(
      batch["answer_ids"], batch["answer_mask"], batch["answer_weights"], memory, batch["text_mask"], r_dec
    )
    metrics = {"train/vqa": loss}
    if "answers_cut" in batch:
      metrics["train/answers_cut"] = batch["answers_cut"].sum()
    return loss, metrics

  def synthetic_batch(self, seed, batch_size):
    data = self.config.data
    return synthetic_batch(
      seed,
      batch_size,
      data.image_res,
      data.max_tokens,
      data.max_answers,
      data.max_answer_tokens,
      self.config.model.text.vocab_size,
    )

  # --- the decoder from the checkpoint (docs/reference.md §5.2) -------------------------------------------------
  def init_additions_plan(self, model_cfg, actions):
    decoder = sorted(p for p in actions if p.startswith(DECODER))
    fresh = {p for p in decoder if actions[p] == "fresh"}
    derived = []
    if decoder and len(fresh) == len(decoder):  # the checkpoint has no decoder at all
      # Which decoder params the official copy provides, from the model's own text/* paths (shapes
      # only): all but the cross-attention keys/values when the vision width differs from H.
      stack = {p: np.zeros(()) for p in actions if p.startswith("text/")}
      derived = sorted(set(decoder_from_fusion(stack, model_cfg)) & fresh)
    return derived, (decoder if self.large_lr_for_dec else [])

  def init_additions(self, flat, model_cfg):
    if any(p.startswith(DECODER) for p in flat):  # a VQA checkpoint: its decoder is loaded as is
      return {}
    return decoder_from_fusion(flat, model_cfg)


def synthetic_batch(
  seed: int, b: int, image_res: int, max_tokens: int, max_answers: int, answer_tokens: int, vocab_size: int
):
  """A VQA batch of the contract: questions of random length, 1..A answers per question with weights
  summing to 1 (padding answers weigh 0)."""
  rs = np.random.RandomState(seed)
  cls, sep = (101, 102) if vocab_size > 103 else (2, 3)

  def seqs(n, length):
    lengths = rs.randint(3, length + 1, size=n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = rs.randint(5, vocab_size, size=(n, length)).astype(np.int32) * mask
    ids[:, 0], ids[np.arange(n), lengths - 1] = cls, sep
    return ids, mask

  q_ids, q_mask = seqs(b, max_tokens)
  a_ids, a_mask = seqs(b * max_answers, answer_tokens)
  n = rs.randint(1, max_answers + 1, size=b)
  weights = rs.rand(b, max_answers).astype(np.float32) * (np.arange(max_answers)[None] < n[:, None])
  weights /= weights.sum(1, keepdims=True)
  return {
    "images": rs.randn(b, image_res, image_res, 3).astype(np.float32),
    "text_ids": q_ids,
    "text_mask": q_mask,
    "answer_ids": a_ids.reshape(b, max_answers, -1),
    "answer_mask": a_mask.reshape(b, max_answers, -1),
    "answer_weights": weights,
    "answers_cut": np.zeros((b,), np.int32),
  }
