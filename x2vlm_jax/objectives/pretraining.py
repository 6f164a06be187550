"""The pre-training objective of one stream and of a step (docs/reference.md §3): ITC + ITM on the
stream's vision and text, MLM conditioned on the visual tokens and, for regions, the box L1 + GIoU
losses against the full image; the step's loss is their weighted sum over streams (docs/reference.md §3.5).

A stream's passes run batched: its caption and its masked caption go through the text layers as one
batch, and the ITM pairs, the MLM rows and (regions) the box rows through the fusion layers as one —
the rows, and so the losses and FLOPs, of the official separate calls (`models/model_pretrain.py:
XVLM.forward`), in one program loop per layer group instead of two or three (what makes the scanned
program, and its compile time and memory, smaller: docs/performance.md). Dropout then draws one mask
per batched call instead of one per call: the same distribution. Across streams, the step runs the
vision tower once on every stream's pictures (`vision_passes`)."""

from typing import Dict

import jax
import jax.numpy as jnp

from x2vlm_jax.batch import PICTURE_STREAMS
from x2vlm_jax.objectives import itc, itm
from x2vlm_jax.objectives.alignment import fuse_rows, itm_pairs, matching_loss
from x2vlm_jax.objectives.boxes import box_losses
from x2vlm_jax.objectives.common import concat_blocks, concat_rows, split_blocks, split_rows
from x2vlm_jax.objectives.mlm import mlm_loss


def _mlm(model, fused, batch):
  # Only the masked positions go through the vocabulary projection.
  at_masks = jnp.take_along_axis(fused, batch["masked_pos"][..., None], axis=1)
  return mlm_loss(model.text.mlm_logits(at_masks), batch["mlm_labels"], batch["valid"])


def _check(stream: str):
  if stream not in PICTURE_STREAMS:
    raise ValueError(f"stream: expected one of {'/'.join(PICTURE_STREAMS)}, got {stream!r}")


def pixel_rows(stream: str, batch: Dict[str, jax.Array]) -> jax.Array:
  """What a stream puts through the vision tower, one row per picture: the images (image stream), the
  distinct images (region stream), every frame of every video [B·F, H, W, 3] (video stream)."""
  _check(stream)
  if stream == "video":
    frames = batch["frames"]
    return frames.reshape((-1,) + frames.shape[2:])
  return batch["images"]


def vision_passes(model, batches: Dict[str, Dict[str, jax.Array]], rng) -> Dict[str, jax.Array]:
  """The vision tower's tokens of every stream's pictures, in one call per picture shape: the streams'
  images and frames (equal resolution in every released config) go through the tower as one batch
  (common.concat_blocks), so the step's program holds the tower once — its forward and backward loops
  once instead of once per stream (what makes the scanned program, and its compile time and memory,
  smaller: docs/performance.md). The rows, and so the FLOPs, are the official separate calls'; drop-path
  draws one mask per row of the joint batch: the same distribution. {stream: [rows, 1+N, D]}"""
  groups: Dict[tuple, Dict[str, jax.Array]] = {}
  for stream in sorted(batches):
    pixels = pixel_rows(stream, batches[stream])
    groups.setdefault((pixels.shape[1:], pixels.dtype), {})[stream] = pixels
  tokens = {}
  for i, parts in enumerate(groups.values()):
    key = None if rng is None else jax.random.fold_in(rng, i)
    joint = model.vision(concat_blocks(list(parts.values())), key)
    tokens.update(zip(parts, split_blocks(joint, [p.shape[0] for p in parts.values()])))
  return tokens


def stream_losses(
  model,
  stream: str,
  batch: Dict[str, jax.Array],
  rng,
  *,
  group_size: int,
  itc_grad_scale: float = 1.0,
  itm_on=True,
  vision_tokens=None,
) -> Dict[str, jax.Array]:
  """Losses of one pre-training stream: {"itc", "itm", "mlm", "mlm_acc"} (+ {"bbox", "giou"} for regions).

  `vision_tokens`: the tower's tokens of the stream's `pixel_rows` when the step ran the tower for
  every stream at once (`vision_passes`); None runs it here.
  `itm_on` may be a traced bool (pre-training's `stop_calc_itm`, docs/reference.md §3.6): the ITM pairs
  then keep their own fusion under `lax.cond` (skipped, not computed and zeroed, where it is off)."""
  _check(stream)
  r_vis, r_txt, r_itm, r_fuse = jax.random.split(rng, 4)
  if vision_tokens is None:
    vision_tokens = model.vision(pixel_rows(stream, batch), r_vis)
  valid = batch["valid"]
  full = None
  if stream == "image":
    vis, vis_feat = vision_tokens, model.image_feat(vision_tokens)
    vis_mask = jnp.ones(vis.shape[:2], jnp.int32)
  elif stream == "video":
    vis, vis_feat = model.video_embeds(vision_tokens.reshape(batch["frames"].shape[:2] + vision_tokens.shape[1:]))
    vis_mask = jnp.ones(vis.shape[:2], jnp.int32)
  else:  # region: the tower ran once per distinct image
    vis, vis_feat = model.region_embeds(vision_tokens, batch["patch_mask"], batch["image_index"])
    vis_mask = batch["patch_mask"]
    full = jnp.take(vision_tokens, batch["image_index"], axis=0)

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
