"""Image–text retrieval fine-tuning (COCO, Flickr30K), docs/reference.md §5.1, and video–text retrieval (MSRVTT,
§5.6: the same task on frame-pooled video tokens, `config.data.video`).

L = L_itc + L_itm: ITC over the global batch with id-aware soft targets (the captions of one image are
all positives), ITM with hard negatives that never pick a caption of the same image; τ clamped each
step (the trainer). Evaluation: the `retrieval` evaluator (two-stage ITC → ITM rerank).
"""

import jax
import jax.numpy as jnp
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.tasks.base import FinetuneTask, synthetic_text


def synthetic_batch(seed: int, b: int, image_res: int, max_tokens: int, vocab_size: int, num_frames: int = 0):
  """A retrieval batch of the contract (images, text_ids, text_mask, image_ids, valid; videos: frames
  [b, F, R, R, 3] instead of images); pairs of rows share an image id, as captions of one image do."""
  rs = np.random.RandomState(seed)
  ids, mask = synthetic_text(rs, b, max_tokens, vocab_size)
  vision = ("frames", (b, num_frames)) if num_frames else ("images", (b,))
  return {
    vision[0]: rs.randn(*vision[1], image_res, image_res, 3).astype(np.float32),
    "text_ids": ids,
    "text_mask": mask,
    "image_ids": (np.arange(b) // 2 + seed % 1000 * b).astype(np.int32),
    "valid": np.ones((b,), np.float32),
  }


class RetrievalTask(FinetuneTask):
  name = "retrieval"
  DATA_MODULE = "x2vlm_jax.data.finetune.retrieval"
  SPEC = "retrieval"

  def __init__(self, config):
    super().__init__(config)
    if config.data.get("video", False):
      self.DATA_MODULE, self.SPEC = "x2vlm_jax.data.finetune.video", "video_retrieval"
    self.group_size = int(config.itm_group_size)
    self.itc_grad_scale = float(config.get("itc_grad_scale", 1.0))

  def loss(self, model, batch, rng, step):
    del step
    r_vis, r_txt, r_match = jax.random.split(rng, 3)
    if "frames" in batch:  # video–text retrieval (MSRVTT): frames pooled into one token sequence (§1.7)
      vis, vis_feat = model.encode_video(batch["frames"], r_vis)
    else:
      vis, vis_feat = model.encode_image(batch["images"], r_vis)
    txt, txt_feat = model.encode_text(batch["text_ids"], batch["text_mask"], r_txt)
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
    return out["itc"] + out["itm"], {"train/itc": out["itc"], "train/itm": out["itm"]}

  def create_iterator(self, module, seed, process_index, process_count):
    if self.config.data.get("video", False):
      return module.create_iterator(
        self.config.data, seed=seed, process_index=process_index, process_count=process_count, qa=False
      )
    return super().create_iterator(module, seed, process_index, process_count)

  def synthetic_batch(self, seed, batch_size):
    d = self.config.data
    return synthetic_batch(
      seed,
      batch_size,
      d.image_res,
      d.max_tokens,
      self.config.model.text.vocab_size,
      num_frames=int(d.num_frames) if d.get("video", False) else 0,
    )
