"""COCO captioning evaluation (docs/reference.md §5.5): a caption for every image of the official Karpathy test
file, sharded over the mesh and the hosts, and the COCO caption metrics.

Images use the official test transform; captions come from the MLM beam search of
`decoding.generate_captions` (K = num_beams, [SEP] forbidden for min_length steps, trigram blocking,
length_penalty 0, at most max_length tokens after the prompt: the official length bug, docs/reference.md §10
item 14, is not reproduced) and are decoded like the official `tokenizer.decode(...,
skip_special_tokens=True)`. The image id of a record is parsed from its file name exactly as the
official reader does (`name.strip('.jpg').split('_')[-1]`); predictions.json is [{"image_id",
"caption"}] with one caption per image id (later duplicates dropped, as `collect_result(...,
remove_duplicate='image_id')`). References: the COCO-format ground-truth file (`gt_file`,
{"annotations": [{"image_id", "caption"}, ...]}) or, without one, the records' own `caption` lists.
Metrics (`caption_metrics.caption_scores`): Bleu_1..4, METEOR (when Java is there), ROUGE_L, CIDEr
and `score` = Bleu_4 + CIDEr, the official model selection.
"""

import dataclasses
import json
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from x2vlm_jax.data import annotations as ann
from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.evaluation.caption_metrics import caption_scores, dedupe_predictions
from x2vlm_jax.evaluation.sharded import EvalBatches, to_host
from x2vlm_jax.inference import generation
from x2vlm_jax.text_clean import image_id_from_name


@dataclasses.dataclass
class CaptionSet:
  """Official Karpathy test format: [{"image": path, "caption"?: [...]}, ...]."""

  images: List[str]
  image_ids: List[int]
  captions: List[Optional[List[str]]]

  @classmethod
  def from_file(cls, path: str, image_root: str = "") -> "CaptionSet":
    records = ann.read_records(path, objects_only=True)
    ann.require(path, records, "image", str, non_empty=True)
    out = cls([], [], [])
    for i, rec in enumerate(records):
      try:
        image_id = image_id_from_name(rec["image"])
      except ValueError:
        raise ValueError(
          f"annotations {path!r}: record {i}: no image id in the file name {rec['image']!r} "
          "(the official rule reads the digits after its last '_')"
        ) from None
      out.images.append(ann.image_path(image_root, rec["image"]))
      out.image_ids.append(image_id)
      caps = rec.get("caption")
      out.captions.append(None if caps is None else ann.as_list(caps))
    return out


def read_references(gt_file: str) -> Dict[int, List[str]]:
  """COCO-format ground truth ({"annotations": [{"image_id", "caption"}, ...]}) → {image_id: [captions]}."""
  p = epath.Path(gt_file)
  if not p.exists():
    raise ValueError(f"gt_file {gt_file!r} does not exist")
  data = json.loads(p.read_text())
  if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
    raise ValueError(f'gt_file {gt_file!r}: expected the COCO caption format {{"annotations": [...]}}')
  refs: Dict[int, List[str]] = {}
  for i, a in enumerate(data["annotations"]):
    if not isinstance(a, dict) or "image_id" not in a or not isinstance(a.get("caption"), str):
      raise ValueError(f"gt_file {gt_file!r}: annotation {i} needs an image_id and a caption string")
    refs.setdefault(a["image_id"], []).append(a["caption"])
  return refs


class CaptioningEvaluator(Evaluator):
  """config.evals.<name> = dict(type="captioning", annotations=..., image_root=..., gt_file=...).

  predict_fns: caption(model, images, *, prompt_ids, mask_id, eos_id, pad_id, num_beams, max_len,
  min_length, no_repeat_ngram, length_penalty) → caption tokens [B, max_len]
  (x2vlm_jax.inference.generation)."""

  PREDICT_FNS = ("caption",)
  HEADS = ("text/mlm",)
  DEFAULTS = dict(
    annotations="",
    image_root="",
    gt_file="",
    batch_size=20,
    prompt="a picture of ",
    num_beams=3,
    max_length=50,
    min_length=5,
    length_penalty=0.0,
    no_repeat_ngram=3,
    metrics_tokenizer="auto",
    meteor="auto",
    strict=False,
  )

  def setup(self):
    ecfg = self.ecfg
    self.data = CaptionSet.from_file(ecfg.annotations, ecfg.image_root)
    if ecfg.gt_file:
      self.references = read_references(ecfg.gt_file)
    elif all(c is not None for c in self.data.captions):
      self.references = {}
      for i, caps in zip(self.data.image_ids, self.data.captions):
        self.references.setdefault(i, caps)
    else:
      self.references = None  # a test server split: predictions only
    self._prepare_decoding()
    self.batches = EvalBatches(self.mesh, int(ecfg.batch_size))

  def _prepare_decoding(self):
    """The vocabulary and the prompt's ids: what decides the beam-search program."""
    self.tok = self.tokenizer()
    generation.check_vocab(self.tok, self.model_cfg, f"evals.{self.name}")
    self.prompt = generation.prompt_ids(self.tok, self.ecfg.prompt)

  def _fn(self, graphdef):
    ecfg, tok, caption = self.ecfg, self.tok, self.predict_fns["caption"]

    def run(params, batch):
      tokens = caption(
        nnx.merge(graphdef, params),
        batch["images"],
        prompt_ids=self.prompt,
        mask_id=tok.mask_id,
        eos_id=tok.sep_id,
        pad_id=tok.pad_id,
        num_beams=int(ecfg.num_beams),
        max_len=int(ecfg.max_length),
        min_length=int(ecfg.min_length),
        no_repeat_ngram=int(ecfg.no_repeat_ngram),
        length_penalty=float(ecfg.length_penalty),
      )
      return tokens, batch["valid"]

    return self.jitted(graphdef, lambda: jax.jit(run))

  def compile_targets(self, graphdef, params, *, num_images: int, num_texts: int):
    """The beam search on one evaluation batch of images; the vocabulary is read for the prompt's ids."""
    del num_images, num_texts
    self._prepare_decoding()
    res = int(self.model_cfg.image_res)
    batch = self.sharded_batch(
      EvalBatches(self.mesh, int(self.ecfg.batch_size)),
      {"images": ((res, res, 3), jnp.float32), "valid": ((), jnp.float32)},
    )
    return [(f"{self.name}/caption", self._fn(graphdef), (params, batch))]

  def _load(self, idx: np.ndarray):
    pixels, valid = self.load_images(self.data.images, idx)
    return {"images": pixels, "valid": valid}

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[list]]:
    fn, n = self._fn(graphdef), len(self.data.images)
    self.bad_images = []
    outs = self.batches.map(lambda b: fn(params, b), n, self._load)
    tokens, valid = (to_host(x)[:n] for x in self.batches.concat(outs))
    ok = valid > 0
    captions = generation.decode_all(self.tok, tokens)
    unique = dedupe_predictions(
      {"image_id": self.data.image_ids[i], "caption": captions[i]} for i in np.flatnonzero(ok)
    )
    predictions = [{"image_id": i, "caption": c} for i, c in unique.items()]
    metrics: Dict[str, float] = {"num_images": float(len(predictions)), "skipped_images": float(n - ok.sum())}
    if self.references is not None and predictions:
      scores = caption_scores(
        predictions, self.references, tokenizer=self.ecfg.metrics_tokenizer, meteor=self.ecfg.meteor
      )
      metrics.update(
        {
          k: float(v)
          for k, v in scores.items()
          if k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr") and v is not None
        }
      )
      metrics["score"] = metrics["Bleu_4"] + metrics["CIDEr"]
    if not ok.all():
      logging.warning(
        "captioning %s: %d of %d images could not be read and were left out, e.g. %s",
        self.name,
        n - ok.sum(),
        n,
        self.bad_images[:3],
      )
    return metrics, predictions
