"""Video question answering as classification (MSRVTT-QA 1,500 answers, MSVD-QA 1,000; ClipBERT's
protocol), docs/reference.md §5.6: frame-pooled video tokens (each frame through the vision tower, + frame
embeddings, temporal mean) → multi_modal fusion with the question → `cls_head` MLP(H → 2H → LN → GELU
→ num_labels) on the fused [CLS] → cross-entropy; answers outside the vocabulary (label −100) give no
loss. Evaluation: the `video_qa` evaluator (they count as wrong there), which runs `answer_logits`."""

import jax
import jax.numpy as jnp
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.evaluation.video_qa import VideoQAEvaluator
from x2vlm_jax.tasks.base import FinetuneTask, frames_spec, synthetic_text, text_spec


def answer_logits(model, frames, ids, mask, rng=None):
  """Clips [B, F, R, R, 3] and their questions → logits over the answer vocabulary [B, num_labels]."""
  r_vis, r_txt = (None, None) if rng is None else jax.random.split(rng)
  vis, _ = model.encode_video(frames, r_vis)
  return model.cls_logits(vis, jnp.ones(vis.shape[:2], jnp.int32), ids, mask, r_txt)


class VideoQATask(FinetuneTask):
  name = "video_qa"
  DATA_MODULE = "x2vlm_jax.data.finetune.video"
  BUILDER = "build_qa"
  EVALUATORS = {"video_qa": VideoQAEvaluator}
  PREDICT_FNS = {"answer_logits": answer_logits}
  EVALUATION = ("video_qa", {})

  def __init__(self, config):
    super().__init__(config)
    if not config.model.heads.num_labels:
      raise ValueError("video_qa: set config.model.heads.num_labels (1500 for MSRVTT-QA, 1000 for MSVD-QA)")
    if not config.model.num_frames:
      raise ValueError("video_qa: set config.model.num_frames (frame embeddings, docs/reference.md §1.7)")

  @staticmethod
  def spec(cfg, b):
    """Video QA as classification (data/finetune/video.py, qa=True): the answer's class, −100 if OOV."""
    return {
      **frames_spec(cfg, b),
      **text_spec(b, int(cfg.max_tokens)),
      "labels": ((b,), np.int32),
      "valid": ((b,), np.float32),
    }

  def loss(self, model, batch, rng, step):
    del step
    logits = answer_logits(model, batch["frames"], batch["text_ids"], batch["text_mask"], rng)
    loss, acc = objectives.classification_loss(logits, batch["labels"], batch["valid"])
    return loss, {"train/ce": loss, "train/acc": acc}

  def create_iterator(self, seed, process_index, process_count):
    return self.data_module().create_iterator(
      self.config.data, spec=self.spec, seed=seed, process_index=process_index, process_count=process_count, qa=True
    )

  def synthetic_batch(self, seed, batch_size):
    data, model = self.config.data, self.config.model
    return synthetic_batch(
      seed, batch_size, data.num_frames, data.image_res, data.max_tokens, model.text.vocab_size, model.heads.num_labels
    )


def synthetic_batch(seed, b, num_frames, image_res, max_tokens, vocab_size, num_labels):
  rs = np.random.RandomState(seed)
  ids, mask = synthetic_text(rs, b, max_tokens, vocab_size)
  labels = rs.randint(0, num_labels, size=b).astype(np.int32)
  labels[::4] = -100  # an out-of-vocabulary answer now and then
  return {
    "frames": rs.randn(b, num_frames, image_res, image_res, 3).astype(np.float32),
    "text_ids": ids,
    "text_mask": mask,
    "labels": labels,
    "valid": np.ones((b,), np.float32),
  }
