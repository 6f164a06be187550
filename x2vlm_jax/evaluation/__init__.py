"""Evaluation: evaluators (one file per protocol) run by the trainer and by tools/evaluate.py, and
the host-side, framework-free metrics of the benchmarks. The official annotation files are read by
`x2vlm_jax.data.annotations` (tensorflow-free; the dataset builders read them there too).

  schedule         running the evaluators when due, results on disk (built by x2vlm_jax.tasks)
  base             the Evaluator class (config, schedule, tokenizer, image loading)
  sharded          evaluation batches split over the mesh and the hosts
  retrieval        the two-stage ITC → ITM-rerank protocol (docs/reference.md §5.1)
  caption_metrics  COCO captioning: BLEU-1..4, METEOR (when Java is present), ROUGE-L, CIDEr-D (docs/reference.md §5.5)
  vqa_metrics      VQA v2 accuracy with the official answer normalisation (docs/reference.md §5.2)
"""
