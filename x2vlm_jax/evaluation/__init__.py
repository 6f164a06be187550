"""Evaluation: evaluators (one file per protocol) run by the trainer and by tools/evaluate.py.

  registry     evaluator types, build from `config.evals`, schedule, results on disk
  base         the Evaluator class (config, schedule, tokenizer, image loading)
  sharded      evaluation batches split over the mesh and the hosts
  annotations  reading and checking the official annotation files
  retrieval    the two-stage ITC → ITM-rerank protocol (spec §5.1)
"""
