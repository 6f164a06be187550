"""Image–text (and video–text, `video=True`) retrieval evaluation, the official two-stage protocol
(docs/reference.md §5.1, §5.6).

1. Encode every image and every text (sharded over the mesh and the hosts).
2. S = v̂·t̂ᵀ (cosine, no temperature). i2t: each image's top-k texts by S; t2i: each text's top-k images.
3. Rescore every candidate pair with the raw ITM "match" logit of the fusion layers; all other pairs
   are −100 in the official score matrix, i.e. below every candidate.
4. TR (image→text) rank = best rank among the image's captions; IR rank = rank of the text's image;
   R@1/5/10, their means and `r_mean`, under the official metric keys.

The k·(N_img + N_txt) fusion passes are the cost: they run in fixed-size batches of queries (each
with its k candidates) split over the mesh, one compiled program for the whole set. The embeddings
of all images and texts are kept on every device for the candidate gathers, as in the official code
(COCO-5K at 384 px, base, bf16: 4.4 GB of image tokens + 1.5 GB of text tokens per device).
"""

import dataclasses
import time
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from x2vlm_jax.data import annotations as ann
from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.evaluation.sharded import EvalBatches, to_host
from x2vlm_jax.progress import Progress

RECALL_AT = (1, 5, 10)


# ------------------------------------------------------------------------------------------------
# Metrics (host numpy; shared by the evaluator, the notebook API and the tests' references)
# ------------------------------------------------------------------------------------------------
def candidate_ranks(
  cands: np.ndarray,
  scores: np.ndarray,
  positives: Sequence[Sequence[int]],
  n: int,
  fill: float = -100.0,
  valid: Optional[np.ndarray] = None,
) -> np.ndarray:
  """Official ranks (X2-VLM Retrieval.py `itm_eval`) from the candidates alone.

  Each query's row of n scores is `fill` everywhere except its candidates, then sorted with the
  official `np.argsort(row)[::-1]`; the rank is the best position of a positive. Building one row at a
  time reproduces the official result exactly, ties and all: e.g. a candidate whose ITM logit is below
  −100 ranks after every non-candidate, as it does officially. cands, scores [Q, k]; positives[q] =
  the correct items of query q; valid [n]: items left out (unreadable images) rank last.
  """
  out = np.zeros(len(cands))
  row = np.empty(n, np.float32)
  for q, pos in enumerate(positives):
    row.fill(fill)
    if valid is not None:
      row[~valid] = -np.inf
    row[cands[q]] = scores[q]
    inds = np.argsort(row)[::-1]
    out[q] = np.flatnonzero(np.isin(inds, np.asarray(pos, np.int64)))[0]
  return out


def recall_metrics(i2t_ranks: np.ndarray, t2i_ranks: np.ndarray) -> Dict[str, float]:
  """The official metric keys: txt_r1 txt_r5 txt_r10 txt_r_mean img_r1 img_r5 img_r10 img_r_mean r_mean."""
  out = {}
  for prefix, ranks in (("txt", i2t_ranks), ("img", t2i_ranks)):
    for k in RECALL_AT:
      out[f"{prefix}_r{k}"] = 100.0 * float(np.mean(ranks < k)) if len(ranks) else 0.0
    out[f"{prefix}_r_mean"] = float(np.mean([out[f"{prefix}_r{k}"] for k in RECALL_AT]))
  out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2.0
  return out


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RetrievalSet:
  """Official test/val format: [{"image": path, "caption": [..] or str}, ...] (docs/reference.md §4.2)."""

  images: List[str]  # full paths
  texts: List[str]
  txt2img: np.ndarray  # [T]
  img2txt: List[List[int]]

  @classmethod
  def from_file(
    cls, path: str, image_root: str = "", image_key: str = "image", coco_image_root: str = ""
  ) -> "RetrievalSet":
    """Also IGLUE's {"sentences", "id", "img_path"} lines (xFlickr&CO): images whose path contains "COCO"
    are then read from `coco_image_root` when it is set (the official image_root {flickr30k, coco})."""
    records = ann.read_records(path, objects_only=True)
    iglue = bool(records) and "sentences" in records[0]
    records = ann.iglue_retrieval_records(records, train=False)
    if iglue and coco_image_root:
      records = [
        dict(r, image=ann.image_path(coco_image_root, r["image"])) if "COCO" in r["image"] else r for r in records
      ]
    ann.require(path, records, image_key, str, non_empty=True)
    ann.require(path, records, "caption", (str, list), non_empty=True)
    images, texts, txt2img, img2txt = [], [], [], []
    for i, rec in enumerate(records):
      images.append(ann.image_path(image_root, rec[image_key]))
      img2txt.append([])
      for cap in ann.as_list(rec["caption"]):
        img2txt[-1].append(len(texts))
        texts.append(cap)
        txt2img.append(i)
    return cls(images, texts, np.asarray(txt2img, np.int64), img2txt)


# ------------------------------------------------------------------------------------------------
# The evaluator
# ------------------------------------------------------------------------------------------------
class RetrievalEvaluator(Evaluator):
  """config.evals.<name> = dict(type="retrieval", annotations=..., image_root=..., k_test=..., every=N).

  predict_fns: encode_vision(model, pixels) and encode_text(model, ids, mask) → (tokens, feature),
  itm_logits(model, vision, vision_mask, text, text_mask) → [n, 2]."""

  PREDICT_FNS = ("encode_vision", "encode_text", "itm_logits")
  HEADS = ("vision_proj", "text_proj", "temp", "itm_head")

  DEFAULTS = dict(
    annotations="",
    image_root="",
    k_test=256,
    batch_size=32,
    rerank_pairs=256,
    max_tokens=40,
    max_words=30,
    strict=False,
    predictions_top=10,
    video=False,
    vision_key="image",
    num_frames=0,
  )

  def setup(self):
    ecfg = self.ecfg
    self.data = RetrievalSet.from_file(ecfg.annotations, ecfg.image_root, ecfg.vision_key)
    self.num_frames = self._frames()
    if self.num_frames:
      self.require_some_files(self.data.images)
    self.text_ids, self.text_mask = self.tokenizer()(self.data.texts, ecfg.max_tokens, clean=ecfg.max_words)
    self.batches = EvalBatches(self.mesh, ecfg.batch_size)

  def _frames(self) -> int:
    """Videos (MSRVTT): the items are frames files, encoded with the model's frame embeddings
    (docs/reference.md §1.7)."""
    video = bool(self.ecfg.video)
    frames = int(self.ecfg.num_frames or self.model_cfg.num_frames) if video else 0
    if video and not frames:
      raise ValueError(f"evals.{self.name}: video retrieval needs num_frames (or config.model.num_frames)")
    return frames

  # --- jitted pieces (compiled once per graphdef) --------------------------------------------------
  def _fns(self, graphdef):
    predict = self.predict_fns

    def encode_image(params, batch):
      return predict["encode_vision"](nnx.merge(graphdef, params), batch["images"])

    def encode_text(params, batch):
      return predict["encode_text"](nnx.merge(graphdef, params), batch["ids"], batch["mask"])

    def topk(q_feat, c_feat, c_valid, k):
      sims = q_feat.astype(jnp.float32) @ c_feat.astype(jnp.float32).T
      sims = jnp.where(c_valid[None, :] > 0, sims, -jnp.inf)
      return jax.lax.top_k(sims, k)

    def rerank(params, q_embeds, c_embeds, c_mask, q_mask, q, cand, image_is_query):
      model = nnx.merge(graphdef, params)
      n, k = cand.shape
      flat = cand.reshape(-1)
      if image_is_query:  # i2t: one image against its k candidate texts, its keys/values shared
        vis, txt, txt_mask = q_embeds[q], c_embeds[flat], c_mask[flat]
      else:  # t2i: one text against its k candidate images
        vis, txt, txt_mask = c_embeds[flat], jnp.repeat(q_embeds[q], k, axis=0), jnp.repeat(q_mask[q], k, axis=0)
      logits = predict["itm_logits"](model, vis, jnp.ones(vis.shape[:2], jnp.int32), txt, txt_mask)
      return logits[:, 1].reshape(n, k)

    return self.jitted(
      graphdef,
      lambda: dict(
        encode_image=jax.jit(encode_image),
        encode_text=jax.jit(encode_text),
        topk=jax.jit(topk, static_argnums=3),
        rerank=jax.jit(rerank, static_argnums=7),
      ),
    )

  def compile_targets(self, graphdef, params, *, num_images: int, num_texts: int):
    """Encoders on one evaluation batch, the ITC top-k and both rerank programs over a whole set of
    num_images / num_texts (the embeddings of the set replicated on every device, as in `evaluate`);
    with `video`, the images are clips of num_frames frames."""
    fns = self._fns(graphdef)
    encoder_batches = EvalBatches(self.mesh, int(self.ecfg.batch_size))
    res, length, frames = int(self.model_cfg.image_res), int(self.ecfg.max_tokens), self._frames()

    def replicated(shape, dtype):
      return jax.ShapeDtypeStruct(shape, dtype, sharding=encoder_batches.replicated())

    pixels = ((frames,) if frames else ()) + (res, res, 3)
    images = self.sharded_batch(encoder_batches, {"images": (pixels, jnp.float32)})
    texts = self.sharded_batch(encoder_batches, {"ids": ((length,), jnp.int32), "mask": ((length,), jnp.int32)})
    img_out = jax.eval_shape(fns["encode_image"], params, images)
    txt_out = jax.eval_shape(fns["encode_text"], params, texts)
    n_img, n_txt = encoder_batches.padded(num_images), encoder_batches.padded(num_texts)
    img_embeds, img_feat = (replicated((n_img,) + x.shape[1:], x.dtype) for x in img_out)
    txt_embeds, txt_feat = (replicated((n_txt,) + x.shape[1:], x.dtype) for x in txt_out)
    txt_mask = replicated((n_txt, length), jnp.int32)
    k = min(int(self.ecfg.k_test), num_images, num_texts)
    calls = EvalBatches(self.mesh, max(1, int(self.ecfg.rerank_pairs) // k))
    queries = self.sharded_batch(calls, {"q": ((), jnp.int32), "cand": ((k,), jnp.int32)})
    q, cand = queries["q"], queries["cand"]
    return [
      (f"{self.name}/encode_image", fns["encode_image"], (params, images)),
      (f"{self.name}/encode_text", fns["encode_text"], (params, texts)),
      (f"{self.name}/itc_topk_i2t", fns["topk"], (img_feat, txt_feat, replicated((n_txt,), jnp.float32), k)),
      (f"{self.name}/rerank_i2t", fns["rerank"], (params, img_embeds, txt_embeds, txt_mask, txt_mask, q, cand, True)),
      (f"{self.name}/rerank_t2i", fns["rerank"], (params, txt_embeds, img_embeds, None, txt_mask, q, cand, False)),
    ]

  # --- the protocol --------------------------------------------------------------------------------
  def _load_images(self, idx: np.ndarray):
    pixels, valid = self.load_images(self.data.images, idx, self.num_frames)
    return {"images": pixels, "valid": valid}

  def _load_texts(self, idx: np.ndarray):
    safe = np.maximum(idx, 0)
    return {"ids": self.text_ids[safe], "mask": self.text_mask[safe], "valid": (idx >= 0).astype(np.float32)}

  def _encode(self, fn, params, n, load, unit):
    outs = self.batches.map(
      lambda batch: (*fn(params, {k: v for k, v in batch.items() if k != "valid"}), batch["valid"]),
      n,
      load,
      what=f"{self.name}: encode",
      unit=unit,
    )
    return self.batches.concat(outs, replicate=True)

  def _rerank(self, fn, params, q_embeds, c_embeds, c_mask, q_mask, cands, image_is_query):
    """Fused ITM logits of every (query, candidate) pair, in calls of Qg queries split over the mesh."""
    n, k = cands.shape
    q_per_device = max(1, int(self.ecfg.rerank_pairs) // k)
    calls = EvalBatches(self.mesh, q_per_device)
    outs = []
    progress = Progress(
      f"{self.name}: ITM rerank {'image' if image_is_query else 'text'} queries",
      n,
      unit="queries",
      enabled=jax.process_index() == 0,
    )
    for c in range(calls.num_batches(n)):
      local = calls.local_indices(c, n)
      q = np.maximum(local, 0)
      batch = {"q": calls.to_global(q.astype(np.int32)), "cand": calls.to_global(cands[q].astype(np.int32))}
      out = fn(params, q_embeds, c_embeds, c_mask, q_mask, batch["q"], batch["cand"], image_is_query)
      if jax.default_backend() == "cpu":
        jax.block_until_ready(out)
      outs.append(out)
      progress.update(min(calls.global_batch, n - c * calls.global_batch))
    progress.done()
    return to_host(calls.concat(outs))[:n]

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[dict]]:
    fns, data = self._fns(graphdef), self.data
    n_img, n_txt = len(data.images), len(data.texts)
    self.bad_images = []
    clock = [time.perf_counter()]

    def lap():
      clock.append(time.perf_counter())
      return clock[-1] - clock[-2]

    img_embeds, img_feat, img_valid = self._encode(fns["encode_image"], params, n_img, self._load_images, "images")
    txt_embeds, txt_feat, txt_valid = self._encode(fns["encode_text"], params, n_txt, self._load_texts, "texts")
    jax.block_until_ready(txt_embeds)
    t_encode = lap()
    txt_mask = jax.device_put(
      np.concatenate([self.text_mask, np.zeros((len(txt_valid) - n_txt, self.text_mask.shape[1]), np.int32)]),
      self.batches.replicated(),
    )
    img_ok = to_host(img_valid)[:n_img] > 0
    # A text whose image was skipped has no correct answer: it leaves the evaluation too.
    txt_ok = img_ok[data.txt2img]
    txt_valid = jax.device_put(
      np.concatenate([txt_ok, np.zeros(len(to_host(txt_valid)) - n_txt, bool)]).astype(np.float32),
      self.batches.replicated(),
    )
    n_img_ok, n_txt_ok = int(img_ok.sum()), int(txt_ok.sum())
    if n_img_ok == 0:
      raise ValueError(f"retrieval evaluation {self.name!r}: no image of {self.ecfg.annotations} could be read")

    k_i2t, k_t2i = min(int(self.ecfg.k_test), n_txt_ok), min(int(self.ecfg.k_test), n_img_ok)
    sim_i2t, cand_i2t = (to_host(x)[:n_img] for x in fns["topk"](img_feat, txt_feat, txt_valid, k_i2t))
    sim_t2i, cand_t2i = (to_host(x)[:n_txt] for x in fns["topk"](txt_feat, img_feat, img_valid, k_t2i))
    t_topk = lap()
    score_i2t = self._rerank(fns["rerank"], params, img_embeds, txt_embeds, txt_mask, txt_mask, cand_i2t, True)
    t_i2t = lap()
    score_t2i = self._rerank(fns["rerank"], params, txt_embeds, img_embeds, None, txt_mask, cand_t2i, False)
    t_t2i = lap()

    i2t_pos = [data.img2txt[i] for i in range(n_img)]
    t2i_pos = [[int(data.txt2img[t])] for t in range(n_txt)]
    metrics = recall_metrics(
      candidate_ranks(cand_i2t, score_i2t, i2t_pos, n_txt, valid=txt_ok)[img_ok],
      candidate_ranks(cand_t2i, score_t2i, t2i_pos, n_img, valid=img_ok)[txt_ok],
    )
    # First stage alone (ITC similarity), for reference: non-candidates rank last.
    itc = recall_metrics(
      candidate_ranks(cand_i2t, sim_i2t, i2t_pos, n_txt, -np.inf)[img_ok],
      candidate_ranks(cand_t2i, sim_t2i, t2i_pos, n_img, -np.inf)[txt_ok],
    )
    metrics.update({f"itc_{k}": v for k, v in itc.items()})
    metrics.update(
      num_images=float(n_img_ok),
      num_texts=float(n_txt_ok),
      skipped_images=float(n_img - n_img_ok),
      chance_r1=100.0 / max(n_img_ok, 1),
      pairs_fused=float(cand_i2t.size + cand_t2i.size),
      seconds_encode=t_encode,
      seconds_topk=t_topk,
      seconds_rerank_i2t=t_i2t,
      seconds_rerank_t2i=t_t2i,
      seconds_ranks=lap(),
    )
    if n_img_ok < n_img:
      logging.warning(
        "retrieval %s: %d of %d images could not be read and were left out with their captions, e.g. %s",
        self.name,
        n_img - n_img_ok,
        n_img,
        self.bad_images[:3],
      )
    return metrics, self._predictions(cand_i2t, score_i2t, cand_t2i, score_t2i, img_ok, txt_ok)

  def _predictions(self, cand_i2t, score_i2t, cand_t2i, score_t2i, img_ok, txt_ok):
    top = int(self.ecfg.predictions_top)

    def best(cands, scores, q):
      order = np.argsort(-scores[q], kind="stable")[:top]
      return [int(x) for x in cands[q][order]], [float(x) for x in scores[q][order]]

    i2t = [
      dict(zip(("texts", "scores"), best(cand_i2t, score_i2t, i)), image=self.data.images[i])
      for i in np.flatnonzero(img_ok)
    ]
    t2i = [
      dict(zip(("images", "scores"), best(cand_t2i, score_t2i, t)), text=self.data.texts[t])
      for t in np.flatnonzero(txt_ok)
    ]
    return {"i2t": i2t, "t2i": t2i}
