"""ITC over the global batch + ITM with in-group hard negatives on the model's outputs
(docs/reference.md §3.1–§3.2), shared by pre-training (every stream) and retrieval fine-tuning (with image
ids, docs/reference.md §5.1). Padding rows (`valid == 0`) are masked out of both losses."""

from typing import Dict

import jax
import jax.numpy as jnp

from x2vlm_jax.objectives import itc, itm
from x2vlm_jax.objectives.common import concat_rows, split_rows


def itm_pairs(rng, vis, vis_mask, txt, txt_mask, vis_feat, txt_feat, temp, valid, group_size, ids=None):
  """The ITM pairs as three row groups of B rows, each (vision, vision mask, text, text mask): the
  positives, (negative image, text b), (image b, negative text); and the negatives' validity (ok_img,
  ok_txt). A negative image brings its own tokens AND its own mask (region masks in region batches)."""
  neg_img, neg_txt, ok_img, ok_txt = itm.sample_itm_negatives(rng, vis_feat, txt_feat, temp, valid, group_size, ids)
  groups = [
    (vis, vis_mask, txt, txt_mask),
    (vis[neg_img], vis_mask[neg_img], txt, txt_mask),
    (vis, vis_mask, txt[neg_txt], txt_mask[neg_txt]),
  ]
  return groups, ok_img, ok_txt


def fuse_rows(model, groups, rng):
  """Fuses row groups [(vision, vision mask, text, text mask), ...] of equal size in one call (rows
  interleaved, common.concat_rows) → the fused states of each group."""
  fused = model.fuse(*(concat_rows([g[i] for g in groups]) for i in range(4)), rng)
  return split_rows(fused, len(groups))


def matching_loss(model, rng, vis, vis_mask, txt, txt_mask, vis_feat, txt_feat, temp, valid, group_size, ids=None):
  """L_itm of one batch: hard negatives sampled, the three pair groups fused in one call."""
  r_sample, r_fuse = jax.random.split(rng)
  args = (vis, vis_mask, txt, txt_mask, vis_feat, txt_feat, temp, valid, group_size, ids)
  groups, ok_img, ok_txt = itm_pairs(r_sample, *args)
  rows = (concat_rows([g[i] for g in groups]) for i in range(4))
  return itm.itm_loss(*split_rows(model.itm_logits(*rows, r_fuse), 3), valid, ok_img, ok_txt)


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
  out = {"itc": itc.itc_loss(vis_feat, txt_feat, temp, valid, ids=ids, itc_grad_scale=itc_grad_scale)}
  args = (model, rng, vis, vis_mask, txt, txt_mask, vis_feat, txt_feat, temp, valid, group_size, ids)
  if isinstance(itm_on, bool):
    out["itm"] = matching_loss(*args) if itm_on else jnp.zeros((), jnp.float32)
  else:
    out["itm"] = jax.lax.cond(itm_on, lambda: matching_loss(*args), lambda: jnp.zeros((), jnp.float32))
  return out
