"""The parallel-text objectives of CCLM (docs/reference.md §3.7; official `models/model_pretrain.py:
CrossViewLM.forward_para_text`) on one `mtext` batch: a sentence (`text_*`) and its translation (`para_*`).

  TTC  the ITC formula between the two sentences' [CLS] features (the same `text_proj` on both sides)
  TTM  the ITM procedure with in-group hard negatives, sentence 1's text-encoder states playing the
       vision role: the cross encoder runs on sentence 2 and cross-attends to sentence 1
  MLM  the masked sentence 1 through the text encoder and the cross encoder, which attends to
       sentence 2's text-encoder states (MLM conditioned on the translation)
"""

from typing import Dict

import jax
import jax.numpy as jnp

from x2vlm_jax.objectives.alignment import contrastive_and_matching
from x2vlm_jax.objectives.mlm import mlm_loss

# The loss terms a para-text stream adds to the step's total (mlm_acc is a metric).
PARA_TEXT_TERMS = ("ttc", "ttm", "mlm")


def para_text_losses(
  model, batch: Dict[str, jax.Array], rng, *, group_size: int, itc_grad_scale: float = 1.0, itm_on=True
) -> Dict[str, jax.Array]:
  """{"ttc", "ttm", "mlm", "mlm_acc"} of one parallel-text batch (fields: x2vlm_jax/tasks/cclm_pretrain.py)."""
  r_text, r_para, r_ttm, r_mlm = jax.random.split(rng, 4)
  valid = batch["valid"]
  text, text_feat = model.encode_text(batch["text_ids"], batch["text_mask"], r_text)
  para, para_feat = model.encode_text(batch["para_ids"], batch["para_mask"], r_para)
  # get_matching_loss(image_embeds=text_embeds, ..., text_embeds=text_embeds_2): sentence 1 is the memory.
  pair = contrastive_and_matching(
    model,
    r_ttm,
    text,
    batch["text_mask"],
    text_feat,
    para,
    batch["para_mask"],
    para_feat,
    valid,
    group_size=group_size,
    itc_grad_scale=itc_grad_scale,
    itm_on=itm_on,
  )
  hidden = model.mlm_hidden(batch["text_ids_masked"], batch["text_mask"], para, batch["para_mask"], r_mlm)
  at_masks = jnp.take_along_axis(hidden, batch["masked_pos"][..., None], axis=1)
  mlm, mlm_acc = mlm_loss(model.text.mlm_logits(at_masks).astype(jnp.float32), batch["mlm_labels"], valid)
  return {"ttc": pair["itc"], "ttm": pair["itm"], "mlm": mlm, "mlm_acc": mlm_acc}
