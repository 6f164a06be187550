"""The X²-VLM objectives on top of the model's recipes (docs/reference.md §3, §2.3, §5.1).

`contrastive_and_matching` is ITC over the global batch + ITM with in-group hard negatives, shared by
pre-training (every stream) and retrieval fine-tuning (with image ids). `stream_losses` adds MLM
conditioned on the visual tokens and, for regions, the box L1 + GIoU losses against the full image.
Padding rows (`valid == 0`) are masked out of every loss.
"""

from typing import Dict

import jax
import jax.numpy as jnp

from x2vlm_jax.training import losses


def _itm(model, rng, vis, vis_mask, txt, txt_mask, vis_feat, txt_feat, temp, valid, group_size, ids):
  r_sample, r_fuse = jax.random.split(rng)
  neg_img, neg_txt, ok_img, ok_txt = losses.sample_itm_negatives(
    r_sample, vis_feat, txt_feat, temp, valid, group_size, ids
  )
  b = vis.shape[0]
  # 3B pairs: positives, (negative image, text b), (image b, negative text). A negative image
  # brings its own tokens AND its own mask (region masks in region batches).
  vis_all = jnp.concatenate([vis, vis[neg_img], vis], axis=0)
  vis_mask_all = jnp.concatenate([vis_mask, vis_mask[neg_img], vis_mask], axis=0)
  txt_all = jnp.concatenate([txt, txt, txt[neg_txt]], axis=0)
  txt_mask_all = jnp.concatenate([txt_mask, txt_mask, txt_mask[neg_txt]], axis=0)
  logits = model.itm_logits(vis_all, vis_mask_all, txt_all, txt_mask_all, r_fuse)
  return losses.itm_loss(logits[:b], logits[b : 2 * b], logits[2 * b :], valid, ok_img, ok_txt)


def contrastive_and_matching(
  model,
  rng,
  vis,
  vis_mask,
  vis_feat,
  txt,
  txt_mask,
  txt_feat,
  valid,
  *,
  group_size: int,
  ids=None,
  itc_grad_scale: float = 1.0,
  itm_on=True,
) -> Dict[str, jax.Array]:
  """{"itc", "itm"} of one batch (docs/reference.md §3.1–§3.2; with `ids`, the retrieval variant of §5.1).

  `itm_on` may be a traced bool (pre-training's `stop_calc_itm`, docs/reference.md §3.6): the ITM fusion of the
  3B pairs then runs under `lax.cond`, so steps where it is off skip it instead of computing it and
  multiplying it by zero (the official loss is a constant 0 there).
  """
  temp = model.temp[...]
  out = {"itc": losses.itc_loss(vis_feat, txt_feat, temp, valid, ids=ids, itc_grad_scale=itc_grad_scale)}
  args = (model, rng, vis, vis_mask, txt, txt_mask, vis_feat, txt_feat, temp, valid, group_size, ids)
  if isinstance(itm_on, bool):
    out["itm"] = _itm(*args) if itm_on else jnp.zeros((), jnp.float32)
  else:
    out["itm"] = jax.lax.cond(itm_on, lambda: _itm(*args), lambda: jnp.zeros((), jnp.float32))
  return out


def _mlm(model, rng, batch, vis, vis_mask):
  hidden = model.mlm_hidden(batch["text_ids_masked"], batch["text_mask"], vis, vis_mask, rng)
  # Only the masked positions go through the vocabulary projection.
  at_masks = jnp.take_along_axis(hidden, batch["masked_pos"][..., None], axis=1)
  logits = model.text.mlm_logits(at_masks)
  return losses.mlm_loss(logits, batch["mlm_labels"], batch["valid"])


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
    out["bbox"], out["giou"] = losses.box_losses(box, batch["target_bbox"], batch["is_image"], valid)
  return out


LOSS_TERMS = ("itc", "itm", "mlm", "bbox", "giou")


def total_loss(per_stream: Dict[str, Dict[str, jax.Array]], weights: Dict[str, float]):
  """L = Σ_s w_s · Σ_terms L_s,term (docs/reference.md §3.5); mlm_acc is a metric, not a loss."""
  total = 0.0
  for stream, terms in per_stream.items():
    total = total + weights.get(stream, 1.0) * sum(v for k, v in terms.items() if k in LOSS_TERMS)
  return total
