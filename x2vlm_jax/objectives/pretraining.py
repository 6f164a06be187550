"""The pre-training objective of one stream and of a step (docs/reference.md §3): ITC + ITM on the
stream's vision and text, MLM conditioned on the visual tokens and, for regions, the box L1 + GIoU
losses against the full image; the step's loss is their weighted sum over streams (docs/reference.md §3.5)."""

from typing import Dict

import jax
import jax.numpy as jnp

from x2vlm_jax.objectives.alignment import contrastive_and_matching
from x2vlm_jax.objectives.boxes import box_losses
from x2vlm_jax.objectives.mlm import mlm_loss


def _mlm(model, rng, batch, vis, vis_mask):
  hidden = model.mlm_hidden(batch["text_ids_masked"], batch["text_mask"], vis, vis_mask, rng)
  # Only the masked positions go through the vocabulary projection.
  at_masks = jnp.take_along_axis(hidden, batch["masked_pos"][..., None], axis=1)
  logits = model.text.mlm_logits(at_masks)
  return mlm_loss(logits, batch["mlm_labels"], batch["valid"])


def stream_losses(
  model, stream: str, batch: Dict[str, jax.Array], rng, *, group_size: int, itc_grad_scale: float = 1.0, itm_on=True
) -> Dict[str, jax.Array]:
  """Losses of one pre-training stream: {"itc", "itm", "mlm", "mlm_acc"} (+ {"bbox", "giou"} for regions)."""
  r_vis, r_txt, r_itm, r_mlm, r_box = jax.random.split(rng, 5)
  valid = batch["valid"]
  full = None
  if stream == "image":
    vis, vis_feat = model.encode_image(batch["images"], r_vis)
    vis_mask = jnp.ones(vis.shape[:2], jnp.int32)
  elif stream == "video":
    vis, vis_feat = model.encode_video(batch["frames"], r_vis)
    vis_mask = jnp.ones(vis.shape[:2], jnp.int32)
  elif stream == "region":
    images, _ = model.encode_image(batch["images"], r_vis)  # once per distinct image
    vis, vis_feat = model.region_embeds(images, batch["patch_mask"], batch["image_index"])
    vis_mask = batch["patch_mask"]
    full = jnp.take(images, batch["image_index"], axis=0)
  else:
    raise ValueError(f"stream: expected image/region/video, got {stream!r}")

  txt, txt_feat = model.encode_text(batch["text_ids"], batch["text_mask"], r_txt)
  out = contrastive_and_matching(
    model,
    r_itm,
    vis,
    vis_mask,
    vis_feat,
    txt,
    batch["text_mask"],
    txt_feat,
    valid,
    group_size=group_size,
    itc_grad_scale=itc_grad_scale,
    itm_on=itm_on,
  )
  out["mlm"], out["mlm_acc"] = _mlm(model, r_mlm, batch, vis, vis_mask)
  if stream == "region":
    box = model.predict_box(full, txt, batch["text_mask"], r_box)
    out["bbox"], out["giou"] = box_losses(box, batch["target_bbox"], batch["is_image"], valid)
  return out


LOSS_TERMS = ("itc", "itm", "mlm", "bbox", "giou")


def total_loss(per_stream: Dict[str, Dict[str, jax.Array]], weights: Dict[str, float]):
  """L = Σ_s w_s · Σ_terms L_s,term (docs/reference.md §3.5); mlm_acc is a metric, not a loss."""
  total = 0.0
  for stream, terms in per_stream.items():
    total = total + weights.get(stream, 1.0) * sum(v for k, v in terms.items() if k in LOSS_TERMS)
  return total
