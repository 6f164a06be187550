"""Multilingual image–text retrieval (xFlickr&CO, Multi30K, multilingual COCO, WIT): the official
XRetrieval.py / WIT.py protocol, i.e. the two-stage retrieval evaluation (evaluation/retrieval.py) run on
each language's test file, per-language metrics and their averages (evaluation/multilingual.py).

config.evals.<name> = dict(type="xretrieval", annotations="test_en.json,test_de.json", languages="en,de", ...)
Each file is the official retrieval test format ([{"image", "caption": [...]}, ...], docs/reference.md §4.2)
or IGLUE's JSON lines {"sentences", "id", "img_path"} (xFlickr&CO);
images shared between languages are encoded again for each (the sets are small: 1–2K images).
"""

from typing import Dict, Optional, Tuple

from x2vlm_jax.evaluation import multilingual
from x2vlm_jax.evaluation.retrieval import RetrievalEvaluator, RetrievalSet
from x2vlm_jax.evaluation.sharded import EvalBatches

KEYS = ("r_mean", "txt_r1", "img_r1", "txt_r_mean", "img_r_mean")


class XRetrievalEvaluator(RetrievalEvaluator):
  # coco_image_root: xFlickr&CO's COCO images (IGLUE files; the official image_root {flickr30k, coco})
  DEFAULTS = dict(RetrievalEvaluator.DEFAULTS, languages="", coco_image_root="")

  def setup(self):
    ecfg = self.ecfg
    paths = [p.strip() for p in ecfg.annotations.split(",") if p.strip()]
    if not paths:
      raise ValueError(f"evals.{self.name}: annotations: no file given")
    names = multilingual.language_names(paths, ecfg.languages)
    if len(set(names)) != len(names):
      raise ValueError(f"evals.{self.name}: languages {names} repeat (name them with languages=...)")
    tok = self.tokenizer()
    self.sets = {}
    for lang, path in zip(names, paths):
      data = RetrievalSet.from_file(path, ecfg.image_root, ecfg.vision_key, ecfg.coco_image_root)
      ids, mask = tok(data.texts, ecfg.max_tokens, clean=ecfg.max_words)
      self.sets[lang] = (data, ids, mask)
    self.num_frames = self._frames()
    self.batches = EvalBatches(self.mesh, ecfg.batch_size)

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[dict]]:
    per_language, predictions = {}, {}
    for lang, (data, ids, mask) in self.sets.items():
      self.data, self.text_ids, self.text_mask = data, ids, mask
      metrics, preds = super().evaluate(graphdef, params)
      per_language[lang] = {k: v for k, v in metrics.items() if not k.startswith("seconds_")}
      predictions[lang] = preds
    return multilingual.averages(per_language, KEYS), predictions
