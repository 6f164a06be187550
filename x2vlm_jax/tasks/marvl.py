"""MaRVL (official MARVL.py, docs/reference.md §5.7): the NLVR2 task (two images, one statement, true/false;
tasks/nlvr2.py) whose evaluation is per language (the `marvl` evaluator). Zero-shot cross-lingual
transfer trains on English NLVR2 (`data.train` = an NLVR2 TFDS set) and tests on MaRVL's languages;
the few-shot / translate-train files are NLVR2-format too (`tools/build_tfds.py --kind marvl`)."""

from x2vlm_jax.evaluation.marvl import MarvlEvaluator
from x2vlm_jax.tasks.nlvr2 import NLVR2Task


class MarvlTask(NLVR2Task):
  name = "marvl"
  EVALUATORS = {"marvl": MarvlEvaluator}
  EVALUATION = ("marvl", {})
