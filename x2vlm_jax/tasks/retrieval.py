"""Image–text retrieval fine-tuning (COCO, Flickr30K), spec §5.1.

L = L_itc + L_itm: ITC over the global batch with id-aware soft targets (the captions of one image are
all positives), ITM with hard negatives that never pick a caption of the same image; τ clamped each
step (the trainer). Evaluation: the `retrieval` evaluator (two-stage ITC → ITM rerank).
"""

import jax
import jax.numpy as jnp
import numpy as np

from x2vlm_jax import batch as batch_lib
from x2vlm_jax.tasks.base import Task
from x2vlm_jax.training import objectives


class RetrievalTask(Task):
  name = "retrieval"

  def __init__(self, config):
    super().__init__(config)
    self.group_size = int(config.itm_group_size)
    self.itc_grad_scale = float(config.get("itc_grad_scale", 1.0))

  def loss(self, model, batch, rng, step):
    del step
    r_vis, r_txt, r_match = jax.random.split(rng, 3)
    vis, vis_feat = model.encode_image(batch["images"], r_vis)
    txt, txt_feat = model.encode_text(batch["text_ids"], batch["text_mask"], r_txt)
    rows = batch["text_ids"].shape[0]
    out = objectives.contrastive_and_matching(
        model, r_match, vis, jnp.ones(vis.shape[:2], jnp.int32), vis_feat, txt, batch["text_mask"], txt_feat,
        batch["valid"], group_size=min(self.group_size, rows), ids=batch["image_ids"],
        itc_grad_scale=self.itc_grad_scale)
    return out["itc"] + out["itm"], {"train/itc": out["itc"], "train/itm": out["itm"]}

  def train_iterator(self, seed, process_index, process_count):
    d = self.config.data
    if d.get("source", "tfds") == "synthetic":
      from x2vlm_jax.training.synthetic import SyntheticBatches
      per_host = int(d.batch_size) // process_count
      vocab = self.config.model.text.vocab_size
      return SyntheticBatches(lambda s: synthetic_batch(s, per_host, d.image_res, d.max_tokens, vocab),
                              seed=seed, process_index=process_index)
    from x2vlm_jax.data.finetune import retrieval  # tensorflow lives behind this import
    return retrieval.create_iterator(d, seed=seed, process_index=process_index, process_count=process_count)

  def batch_spec(self):
    d = self.config.data
    return batch_lib.retrieval_spec(int(d.batch_size), int(d.image_res), int(d.max_tokens))

  def examples_per_step(self) -> int:
    return int(self.config.data.batch_size)

  def train_size(self):
    if self.config.data.get("source", "tfds") == "synthetic":
      return None
    from x2vlm_jax.data.finetune import retrieval
    return retrieval.train_size(self.config.data)


def synthetic_batch(seed: int, b: int, image_res: int, max_tokens: int, vocab_size: int):
  """A retrieval batch of the contract (images, text_ids, text_mask, image_ids, valid); pairs of rows
  share an image id, as captions of one image do."""
  rs = np.random.RandomState(seed)
  lengths = rs.randint(3, max_tokens + 1, size=b)
  mask = (np.arange(max_tokens)[None] < lengths[:, None]).astype(np.int32)
  ids = rs.randint(5, vocab_size, size=(b, max_tokens)).astype(np.int32) * mask
  return {"images": rs.randn(b, image_res, image_res, 3).astype(np.float32), "text_ids": ids,
          "text_mask": mask, "image_ids": (np.arange(b) // 2 + seed % 1000 * b).astype(np.int32),
          "valid": np.ones((b,), np.float32)}
