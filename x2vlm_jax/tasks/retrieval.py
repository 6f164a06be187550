"""Image–text retrieval fine-tuning (COCO, Flickr30K), docs/reference.md §5.1, and video–text retrieval
(MSRVTT, docs/reference.md §5.6: the same task on frame-pooled video tokens, its own task `video_retrieval`).

L = L_itc + L_itm: ITC over the global batch with id-aware soft targets (the captions of one image are
all positives), ITM with hard negatives that never pick a caption of the same image; τ clamped each
step (the trainer). Evaluation: the `retrieval` evaluator (two-stage ITC → ITM rerank), which runs the
encoders and the ITM head below.
"""

import jax
import jax.numpy as jnp
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.evaluation.retrieval import RetrievalEvaluator
from x2vlm_jax.tasks.base import FinetuneTask, frames_spec, images_spec, synthetic_text, text_spec


# --- the forward passes the loss and the evaluator share ---------------------------------------------
def encode_vision(model, pixels, rng=None):
  """Images [B, R, R, 3] or clips [B, F, R, R, 3] (frames pooled into one token sequence,
  docs/reference.md §1.7) → (tokens, feature)."""
  if pixels.ndim == 5:
    return model.encode_video(pixels, rng)
  return model.encode_image(pixels, rng)


def encode_text(model, ids, mask, rng=None):
  return model.encode_text(ids, mask, rng)


def itm_logits(model, vision, vision_mask, text, text_mask):
  """The ITM head on fused pairs → [n, 2] (class 1 = match)."""
  return model.itm_logits(vision, vision_mask, text, text_mask)


def synthetic_batch(seed: int, b: int, image_res: int, max_tokens: int, vocab_size: int, num_frames: int = 0):
  """A retrieval batch of the contract (images, text_ids, text_mask, image_ids, valid; videos: frames
  [b, F, R, R, 3] instead of images); pairs of rows share an image id, as captions of one image do."""
  rs = np.random.RandomState(seed)
  ids, mask = synthetic_text(rs, b, max_tokens, vocab_size)
  if num_frames:
    vision = {"frames": rs.randn(b, num_frames, image_res, image_res, 3).astype(np.float32)}
  else:
    vision = {"images": rs.randn(b, image_res, image_res, 3).astype(np.float32)}
  return {
    **vision,
    "text_ids": ids,
    "text_mask": mask,
    "image_ids": (np.arange(b) // 2 + seed % 1000 * b).astype(np.int32),
    "valid": np.ones((b,), np.float32),
    "captions_cut": np.zeros((b,), np.int32),
  }


class RetrievalTask(FinetuneTask):
  name = "retrieval"
  DATA_MODULE = "x2vlm_jax.data.finetune.retrieval"
  BUILDER = "build"
  EVALUATORS = {"retrieval": RetrievalEvaluator}
  PREDICT_FNS = {"encode_vision": encode_vision, "encode_text": encode_text, "itm_logits": itm_logits}
  EVALUATION = ("retrieval", {})
  VIDEO = False

  def __init__(self, config):
    super().__init__(config)
    if config.data.get("video", False) and not self.VIDEO:
      raise ValueError("task retrieval: config.data.video is set; video–text retrieval is task 'video_retrieval'")
    self.group_size = int(config.itm_group_size)
    self.itc_grad_scale = float(config.get("itc_grad_scale", 1.0))

  @staticmethod
  def spec(cfg, b):
    """Image–text retrieval (data/finetune/retrieval.py): the caption's dense image id marks positives."""
    return {**images_spec(cfg, b), **text_spec(b, int(cfg.max_tokens)), **_ids_and_valid(b)}

  def loss(self, model, batch, rng, step):
    del step
    r_vis, r_txt, r_match = jax.random.split(rng, 3)
    vis, vis_feat = encode_vision(model, batch["frames"] if self.VIDEO else batch["images"], r_vis)
    txt, txt_feat = encode_text(model, batch["text_ids"], batch["text_mask"], r_txt)
    rows = batch["text_ids"].shape[0]
    out = objectives.contrastive_and_matching(
      model,
      r_match,
      vis,
      jnp.ones(vis.shape[:2], jnp.int32),
      vis_feat,
      txt,
      batch["text_mask"],
      txt_feat,
      batch["valid"],
      group_size=min(self.group_size, rows),
      ids=batch["image_ids"],
      itc_grad_scale=self.itc_grad_scale,
    )
    metrics = {"train/itc": out["itc"], "train/itm": out["itm"]}
    if "captions_cut" in batch:  # captions cut to max_tokens (officially never cut: README deviations)
      metrics["train/captions_cut"] = batch["captions_cut"].sum()
    return out["itc"] + out["itm"], metrics

  def synthetic_batch(self, seed, batch_size):
    data = self.config.data
    return synthetic_batch(
      seed,
      batch_size,
      data.image_res,
      data.max_tokens,
      self.config.model.text.vocab_size,
      num_frames=int(data.num_frames) if self.VIDEO else 0,
    )


class VideoRetrievalTask(RetrievalTask):
  """Video–text retrieval (MSRVTT): the retrieval loss and evaluator on clips of `data.num_frames`
  frames (the official frames files, `x2vlm_jax.data.finetune.video`)."""

  name = "video_retrieval"
  DATA_MODULE = "x2vlm_jax.data.finetune.video"
  BUILDER = "build_retrieval"
  EVALUATION = ("retrieval", {"video": True, "vision_key": "video"})
  VIDEO = True

  @staticmethod
  def spec(cfg, b):
    """Video–text retrieval (data/finetune/video.py, qa=False): retrieval with F frames per row."""
    return {**frames_spec(cfg, b), **text_spec(b, int(cfg.max_tokens)), **_ids_and_valid(b)}

  def create_iterator(self, seed, process_index, process_count):
    return self.data_module().create_iterator(
      self.config.data, spec=self.spec, seed=seed, process_index=process_index, process_count=process_count, qa=False
    )


def _ids_and_valid(b: int):
  """Dense image ids, valid rows, and `captions_cut` (1 where the stream cut the caption to max_tokens)."""
  return {"image_ids": ((b,), np.int32), "valid": ((b,), np.float32), "captions_cut": ((b,), np.int32)}
