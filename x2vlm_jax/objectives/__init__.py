"""The task maths of X²-VLM (docs/reference.md §3, §5), tensorflow-free and independent of the training
engine: itc / itm (contrastive learning, matching with hard negatives), mlm (+ the captioner's loss),
boxes (L1 + GIoU), classification (NLVR2, video QA), alignment (ITC + ITM on the model's outputs),
pretraining (a stream's losses, the step's sum);
para_text (CCLM's TTC / TTM / MLM on translations); common: float32, padding masks, guarded means."""

from x2vlm_jax.objectives.alignment import contrastive_and_matching
from x2vlm_jax.objectives.boxes import box_cxcywh_to_xyxy, box_losses, generalized_iou
from x2vlm_jax.objectives.classification import classification_loss
from x2vlm_jax.objectives.itc import TEMP_MAX, TEMP_MIN, clamp_temperature, itc_loss, itc_targets, scale_gradient
from x2vlm_jax.objectives.itm import itm_loss, itm_negative_weights, sample_itm_negatives
from x2vlm_jax.objectives.mlm import caption_mlm_loss, mlm_loss
from x2vlm_jax.objectives.para_text import PARA_TEXT_TERMS, para_text_losses
from x2vlm_jax.objectives.pretraining import LOSS_TERMS, stream_losses, total_loss, vision_passes

__all__ = [
  "LOSS_TERMS",
  "PARA_TEXT_TERMS",
  "TEMP_MAX",
  "TEMP_MIN",
  "box_cxcywh_to_xyxy",
  "box_losses",
  "caption_mlm_loss",
  "clamp_temperature",
  "classification_loss",
  "contrastive_and_matching",
  "generalized_iou",
  "itc_loss",
  "itc_targets",
  "itm_loss",
  "itm_negative_weights",
  "mlm_loss",
  "para_text_losses",
  "sample_itm_negatives",
  "scale_gradient",
  "stream_losses",
  "total_loss",
  "vision_passes",
]
