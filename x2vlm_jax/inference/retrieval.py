"""Retrieval over your own images and captions (notebooks; the official repo never had it, X-VLM #27).

    m = inference.load("ckpt/coco_384")
    r = inference.retrieval.rank(m, ["dog.jpg", "cat.jpg"], ["a dog on a couch", "a cat"], k=5)
    r.i2t[0]        # the best captions of image 0: Match(index, itm, cosine), best first
    r.cosine        # [N_img, N_txt] cosine similarities of the ITC features (not ÷ temperature:
                    # `X2VLMInference.itc_logits` gives those; `similarity`/`Match.itc` are the old names)

The protocol of the paper's evaluation (docs/reference.md §5.1): ITC similarity picks each query's top-k
candidates, the ITM head of the fusion layers rescores them (raw "match" logit), and candidates are
ordered by that score. Single host; `tools/evaluate.py` is the sharded version for benchmarks.
"""

import dataclasses
from typing import List, Sequence

import numpy as np

from x2vlm_jax.inference.api import X2VLMInference, preprocess_images


@dataclasses.dataclass
class Match:
  index: int  # the candidate (caption for i2t, image for t2i)
  itm: float  # rerank score: the ITM "match" logit (higher = better)
  cosine: float  # first-stage score: the cosine similarity of the ITC features (not ÷ temperature)

  @property
  def itc(self) -> float:
    """The former name of `cosine` (a cosine, not the ITC logit)."""
    return self.cosine


@dataclasses.dataclass
class Ranking:
  cosine: np.ndarray  # [N_img, N_txt] cosine similarities of the ITC features
  i2t: List[List[Match]]  # per image, its top-k captions by ITM
  t2i: List[List[Match]]  # per caption, its top-k images by ITM
  image_embeds: np.ndarray
  text_embeds: np.ndarray
  text_mask: np.ndarray

  @property
  def similarity(self) -> np.ndarray:
    """The former name of `cosine` (cosines; `X2VLMInference.itc_logits` divides by the temperature)."""
    return self.cosine


def _batched(fn, n: int, batch: int, *arrays):
  """fn over fixed-size batches (the last one padded, so one compiled shape serves every call)."""
  outs = []
  for i in range(0, n, batch):
    chunk = [a[i : i + batch] for a in arrays]
    pad = batch - len(chunk[0])
    if pad:
      chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
    res = fn(*chunk)
    res = res if isinstance(res, tuple) else (res,)
    outs.append([np.asarray(r)[: batch - pad] for r in res])
  return [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]


def rank(
  model: X2VLMInference, images, texts: Sequence[str], *, k: int = 10, batch: int = 16, max_tokens: int = 40
) -> Ranking:
  """images: as `preprocess_images` takes them (uint8 arrays of any size, PIL images or paths)."""
  if not len(texts):
    raise ValueError("texts: expected at least one caption")
  pixels = preprocess_images(images, model.config.image_res)
  ids, mask = model.tokenize(texts, max_tokens)
  img_embeds, img_feat = _batched(model.encode_image, len(pixels), batch, pixels)
  txt_embeds, txt_feat = _batched(model.encode_text, len(ids), batch, ids, mask)
  sims = img_feat @ txt_feat.T

  def rerank(scores, image_is_query):
    kk = min(k, scores.shape[1])
    out = []
    for q in range(scores.shape[0]):
      top = np.argsort(-scores[q], kind="stable")[:kk]
      if image_is_query:  # image q against its top captions
        args = (np.repeat(img_embeds[q : q + 1], kk, 0), txt_embeds[top], mask[top])
      else:  # caption q against its top images
        args = (img_embeds[top], np.repeat(txt_embeds[q : q + 1], kk, 0), np.repeat(mask[q : q + 1], kk, 0))
      itm = _batched(lambda v, t, m: model.itm_logits(v, None, t, m)[:, 1], kk, kk, *args)[0]
      order = np.argsort(-itm, kind="stable")
      out.append([Match(int(top[j]), float(itm[j]), float(scores[q, top[j]])) for j in order])
    return out

  return Ranking(
    cosine=sims,
    i2t=rerank(sims, True),
    t2i=rerank(sims.T, False),
    image_embeds=img_embeds,
    text_embeds=txt_embeds,
    text_mask=mask,
  )
