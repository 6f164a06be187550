"""xGQA (official XGQA.py, docs/reference.md §5.7): the VQA task (generative answer decoder initialised
from the fusion / cross-encoder layers, ranking over an answer list; tasks/vqa.py) trained on English GQA
(zero-shot transfer; or the translated training files: translate-train) and evaluated per language (the
`xgqa` evaluator). Training files: GQA's IGLUE/LXMERT or original format, or the VQA format
(`tools/build_tfds.py --kind xgqa`, data/finetune/xgqa.py)."""

from x2vlm_jax.evaluation.xgqa import XGQAEvaluator
from x2vlm_jax.tasks.vqa import VQATask


class XGQATask(VQATask):
  name = "xgqa"
  DATA_MODULE = "x2vlm_jax.data.finetune.xgqa"  # the VQA stream; the builder also reads GQA's formats
  EVALUATORS = {"xgqa": XGQAEvaluator}
  EVALUATION = ("xgqa", {})
