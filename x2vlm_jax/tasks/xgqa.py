"""xGQA (official XGQA.py, docs/reference.md §5.7): the VQA task (generative answer decoder initialised
from the fusion / cross-encoder layers, ranking over an answer list; tasks/vqa.py) trained on English GQA
(zero-shot transfer; or the translated training files: translate-train) and evaluated per language (the
`xgqa` evaluator). Training files are the VQA format with `dataset: "gqa"` (`tools/build_tfds.py --kind xgqa`)."""

from x2vlm_jax.evaluation.xgqa import XGQAEvaluator
from x2vlm_jax.tasks.vqa import VQATask


class XGQATask(VQATask):
  name = "xgqa"
  EVALUATORS = {"xgqa": XGQAEvaluator}
  EVALUATION = ("xgqa", {})
