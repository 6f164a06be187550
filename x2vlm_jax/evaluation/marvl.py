"""MaRVL (official MARVL.py; IGLUE): the NLVR2 protocol (evaluation/nlvr2.py) on one file per language
(the NLVR2-format files of the official `utils/marvl_preproc.py`, our tools/marvl_preproc.py), each
language's accuracy, their mean (the official "Test average accuracy") and the IGLUE mean over the
non-English languages (MaRVL has no English test set: both means agree).

config.evals.<name> = dict(type="marvl", annotations="marvl-id.json,marvl-sw.json,...", languages="id,sw,...")
Without `languages`, a file's language is its stem's last `_`/`-` part (marvl-id.json → id).
"""

import os
from typing import Dict, Optional, Tuple

from x2vlm_jax.evaluation import multilingual
from x2vlm_jax.evaluation.nlvr2 import NLVR2Evaluator


def marvl_languages(annotations: str, languages: str = "") -> str:
  paths = [p.strip() for p in annotations.split(",") if p.strip()]
  if languages:
    return ",".join(multilingual.language_names(paths, languages))
  return ",".join(os.path.splitext(os.path.basename(p))[0].replace("-", "_").split("_")[-1] for p in paths)


class MarvlEvaluator(NLVR2Evaluator):
  DEFAULTS = dict(NLVR2Evaluator.DEFAULTS, languages="")

  def setup(self):
    self.ecfg.splits = marvl_languages(self.ecfg.annotations, self.ecfg.languages or self.ecfg.splits)
    super().setup()

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[list]]:
    metrics, predictions = super().evaluate(graphdef, params)
    langs = list(dict.fromkeys(self.data.splits))
    per_language = {lang: {"acc": metrics[f"{lang}_acc"], "num": metrics[f"num_{lang}"]} for lang in langs}
    out = multilingual.averages(per_language, ["acc"])
    out.update({f"{lang}_majority_acc": metrics[f"{lang}_majority_acc"] for lang in langs})
    out["skipped_records"] = metrics["skipped_records"]
    return out, predictions
