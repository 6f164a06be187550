"""The pre-training objective of one stream and of a step (docs/reference.md §3): ITC + ITM on the
stream's vision and text, MLM conditioned on the visual tokens and, for regions, the box L1 + GIoU
losses against the full image; the step's loss is their weighted sum over streams (docs/reference.md §3.5).

A stream's passes run batched: its caption and its masked caption go through the text layers as one
batch, and the ITM pairs, the MLM rows and (regions) the box rows through the fusion layers as one —
the rows, and so the losses and FLOPs, of the official separate calls (`models/model_pretrain.py:
XVLM.forward`), in one program loop per layer group instead of two or three (what makes the scanned
program, and its compile time and memory, smaller: docs/performance.md). Dropout then draws one mask
per batched call instead of one per call: the same distribution."""

from typing import Dict

import jax
import jax.numpy as jnp

from x2vlm_jax.objectives import itc, itm
from x2vlm_jax.objectives.alignment import fuse_rows, itm_pairs, matching_loss
from x2vlm_jax.objectives.boxes import box_losses
from x2vlm_jax.objectives.common import concat_rows, split_rows
from x2vlm_jax.objectives.mlm import mlm_loss


def _mlm(model, fused, batch):
  # Only the masked positions go through the vocabulary projection.
  at_masks = jnp.take_along_axis(fused, batch["masked_pos"][..., None], axis=1)
  return mlm_loss(model.text.mlm_logits(at_masks), batch["mlm_labels"], batch["valid"])


def stream_losses(
  model, stream: str, batch: Dict[str, jax.Array], rng, *, group_size: int, itc_grad_scale: float = 1.0, itm_on=True
) -> Dict[str, jax.Array]:
  """Losses of one pre-training stream: {"itc", "itm", "mlm", "mlm_acc"} (+ {"bbox", "giou"} for regions).

  `itm_on` may be a traced bool (pre-training's `stop_calc_itm`, docs/reference.md §3.6): the ITM pairs
  then keep their own fusion under `lax.cond` (skipped, not computed and zeroed, where it is off)."""
  r_vis, r_txt, r_itm, r_fuse = jax.random.split(rng, 4)
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

  mask = batch["text_mask"]
  both = model.text.text(concat_rows([batch["text_ids"], batch["text_ids_masked"]]), concat_rows([mask, mask]), r_txt)
  txt, masked_txt = split_rows(both, 2)
  txt_feat = model.text_feat(txt)
  temp = model.temp[...]
  out = {"itc": itc.itc_loss(vis_feat, txt_feat, temp, valid, itc_grad_scale=itc_grad_scale)}

  rows = [(vis, vis_mask, masked_txt, mask)]
  if full is not None:
    rows.append((full, jnp.ones_like(vis_mask), txt, mask))
  itm_args = (vis, vis_mask, txt, mask, vis_feat, txt_feat, temp, valid, group_size)
  if isinstance(itm_on, bool) and itm_on:
    # The usual case: the ITM pairs join the MLM (and box) rows in one fusion call.
    pairs, ok_img, ok_txt = itm_pairs(r_itm, *itm_args)
    fused = fuse_rows(model, pairs + rows, r_fuse)
    out["itm"] = itm.itm_loss(*(model.itm_from_fused(f) for f in fused[:3]), valid, ok_img, ok_txt)
    fused = fused[3:]
  else:
    fused = fuse_rows(model, rows, r_fuse)
    if isinstance(itm_on, bool):
      out["itm"] = jnp.zeros((), jnp.float32)
    else:
      out["itm"] = jax.lax.cond(
        itm_on, lambda: matching_loss(model, r_itm, *itm_args), lambda: jnp.zeros((), jnp.float32)
      )
  out["mlm"], out["mlm_acc"] = _mlm(model, fused[0], batch)
  if full is not None:
    box = model.box_from_fused(fused[1])
    out["bbox"], out["giou"] = box_losses(box, batch["target_bbox"], batch["is_image"], valid)
  return out


LOSS_TERMS = ("itc", "itm", "mlm", "bbox", "giou")


def total_loss(per_stream: Dict[str, Dict[str, jax.Array]], weights: Dict[str, float]):
  """L = Σ_s w_s · Σ_terms L_s,term (docs/reference.md §3.5); mlm_acc is a metric, not a loss."""
  total = 0.0
  for stream, terms in per_stream.items():
    total = total + weights.get(stream, 1.0) * sum(v for k, v in terms.items() if k in LOSS_TERMS)
  return total
