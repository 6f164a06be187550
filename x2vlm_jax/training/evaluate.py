"""Zero-shot evaluation of a (pre-)trained model on held-out data: image–text retrieval and grounding.

Retrieval (spec §5.1 protocol, first stage): S = v̂·t̂ᵀ over whole-image captions; i2t rank of an image
= best rank among its captions, t2i rank = rank of the caption's image; R@1/5/10 and their mean.
Grounding (spec §5.4): predicted box vs the region text's box, accuracy at IoU ≥ 0.5.
"""

import json
import os
from typing import Dict

import numpy as np

from x2vlm_jax.inference import X2VLMInference


def _batched(fn, n: int, batch: int, *arrays):
  outs = [fn(*(a[i:i + batch] for a in arrays)) for i in range(0, n, batch)]
  return [np.concatenate([np.asarray(o[k]) for o in outs]) for k in range(len(outs[0]))]


def retrieval_metrics(sim: np.ndarray, text_image: np.ndarray) -> Dict[str, float]:
  """sim [N_img, N_txt]; text_image[t] = index of the image that caption t describes."""
  n_img = sim.shape[0]
  order_t2i = np.argsort(-sim.T, axis=1, kind="stable")
  t2i_rank = np.argmax(order_t2i == text_image[:, None], axis=1)
  order_i2t = np.argsort(-sim, axis=1, kind="stable")
  i2t_rank = np.full(n_img, sim.shape[1])
  pos = np.argsort(order_i2t, axis=1)  # pos[i, t] = rank of text t for image i
  for i in range(n_img):
    gt = np.flatnonzero(text_image == i)
    if gt.size:
      i2t_rank[i] = pos[i, gt].min()
  has_text = np.isin(np.arange(n_img), text_image)
  out = {}
  for k in (1, 5, 10):
    out[f"txt_r{k}"] = 100.0 * float(np.mean(i2t_rank[has_text] < k))
    out[f"img_r{k}"] = 100.0 * float(np.mean(t2i_rank < k))
  out["r_mean"] = float(np.mean([out[f"{m}_r{k}"] for m in ("txt", "img") for k in (1, 5, 10)]))
  out["chance_r1"] = 100.0 / has_text.sum()
  return out


def box_iou_cxcywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  def corners(x):
    return x[:, 0] - x[:, 2] / 2, x[:, 1] - x[:, 3] / 2, x[:, 0] + x[:, 2] / 2, x[:, 1] + x[:, 3] / 2
  ax0, ay0, ax1, ay1 = corners(a)
  bx0, by0, bx1, by1 = corners(b)
  iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
  ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
  inter = iw * ih
  return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)


def evaluate(api: X2VLMInference, data: Dict[str, np.ndarray], batch: int = 64) -> Dict[str, float]:
  images = data["images"]
  image_embeds, image_feat = _batched(api.encode_image, len(images), batch, images)
  text_embeds, text_feat = _batched(api.encode_text, len(data["text_ids"]), batch, data["text_ids"],
                                    data["text_mask"])
  captions = data["is_image"] == 1
  sim = image_feat @ text_feat[captions].T
  out = {f"retrieval/{k}": v for k, v in retrieval_metrics(sim, data["text_image"][captions]).items()}
  regions = np.flatnonzero(~captions)
  if regions.size and "text_bbox" in data:
    idx = data["text_image"][regions]
    boxes = _batched(lambda v, t, m: (api.predict_box(v, t, m),), regions.size, batch,
                     image_embeds[idx], text_embeds[regions], data["text_mask"][regions])[0]
    iou = box_iou_cxcywh(boxes, data["text_bbox"][regions])
    out["grounding/acc@0.5"] = 100.0 * float(np.mean(iou >= 0.5))
    out["grounding/mean_iou"] = float(np.mean(iou))
  return out


def run(config, params) -> Dict[str, float]:
  """Evaluates params (pure dict, possibly sharded) on every `config.eval.datasets` entry."""
  from x2vlm_jax.data import pipeline
  from x2vlm_jax.inference import from_params
  from jax.experimental import multihost_utils
  # Every process joins the gather (a collective); evaluation itself runs on each host's copy.
  api = from_params(config.model, multihost_utils.process_allgather(params, tiled=True))
  results = {}
  for name, split in config.eval.datasets:
    data = pipeline.load_eval_split(config.data, name, split, config.eval.max_examples)
    for k, v in evaluate(api, data, config.eval.batch_size).items():
      results[f"{name}_{split}/{k}"] = v
  return results


def write(results: Dict[str, float], workdir: str) -> None:
  """Prints the results and writes WORKDIR/eval.json."""
  for k, v in sorted(results.items()):
    print(f"{k:<40s} {v:8.2f}")
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
