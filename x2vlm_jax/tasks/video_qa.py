"""Video question answering as classification (MSRVTT-QA 1,500 answers, MSVD-QA 1,000; ClipBERT's
protocol), docs/reference.md §5.6: frame-pooled video tokens (each frame through the vision tower, + frame
embeddings, temporal mean) → multi_modal fusion with the question → `cls_head` MLP(H → 2H → LN → GELU
→ num_labels) on the fused [CLS] → cross-entropy; answers outside the vocabulary (label −100) give no
loss. Evaluation: the `video_qa` evaluator (they count as wrong there)."""

import jax
import jax.numpy as jnp
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.tasks.base import FinetuneTask, synthetic_text


class VideoQATask(FinetuneTask):
  name = "video_qa"
  DATA_MODULE = "x2vlm_jax.data.finetune.video"
  SPEC = "video_qa"

  def __init__(self, config):
    super().__init__(config)
    if not config.model.heads.num_labels:
      raise ValueError("video_qa: set config.model.heads.num_labels (1500 for MSRVTT-QA, 1000 for MSVD-QA)")
    if not config.model.num_frames:
      raise ValueError("video_qa: set config.model.num_frames (frame embeddings, docs/reference.md §1.7)")

  def loss(self, model, batch, rng, step):
    del step
    r_vis, r_txt = jax.random.split(rng)
    vis, _ = model.encode_video(batch["frames"], r_vis)
    logits = model.cls_logits(vis, jnp.ones(vis.shape[:2], jnp.int32), batch["text_ids"], batch["text_mask"], r_txt)
    loss, acc = objectives.classification_loss(logits, batch["labels"], batch["valid"])
    return loss, {"train/ce": loss, "train/acc": acc}

  def synthetic_batch(self, seed, batch_size):
    d, m = self.config.data, self.config.model
    return synthetic_batch(
      seed, batch_size, d.num_frames, d.image_res, d.max_tokens, m.text.vocab_size, m.heads.num_labels
    )


def synthetic_batch(seed, b, f, image_res, max_tokens, vocab_size, num_labels):
  rs = np.random.RandomState(seed)
  ids, mask = synthetic_text(rs, b, max_tokens, vocab_size)
  labels = rs.randint(0, num_labels, size=b).astype(np.int32)
  labels[::4] = -100  # an out-of-vocabulary answer now and then
  return {
    "frames": rs.randn(b, f, image_res, image_res, 3).astype(np.float32),
    "text_ids": ids,
    "text_mask": mask,
    "labels": labels,
    "valid": np.ones((b,), np.float32),
  }
