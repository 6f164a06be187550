"""Multilingual image–text retrieval (official XRetrieval.py; xFlickr&CO, Multi30K, multilingual COCO),
docs/reference.md §5.7: the retrieval task (ITC + ITM with hard negatives) on the
training file of one language (zero-shot cross-lingual transfer: English; translate-train: the
machine-translated files, configs/finetune/xretrieval.py), evaluated per language (the `xretrieval`
evaluator: each language's R@k, their mean and the IGLUE mean over the non-English languages).

The model is whatever `config.model` builds: with the multilingual text tower (XLM-R ids from
`data.vocab_file` = a SentencePiece model) this is the official XVLMPlusForRetrieval.
"""

from x2vlm_jax.evaluation.xretrieval import XRetrievalEvaluator
from x2vlm_jax.tasks.retrieval import RetrievalTask


class XRetrievalTask(RetrievalTask):
  name = "xretrieval"
  DATA_MODULE = "x2vlm_jax.data.finetune.xretrieval"  # the retrieval stream; the builder also reads IGLUE files
  EVALUATORS = {"xretrieval": XRetrievalEvaluator}
  EVALUATION = ("xretrieval", {})
