"""Inference for notebooks, tools and evaluators (tensorflow-free).

    from x2vlm_jax import inference
    m = inference.load("ckpt/base_384")          # a converted official checkpoint or a run's export
    ids, mask = m.tokenize(["a dog on a couch"])  # the checkpoint's own vocabulary

Modules: `api` (the validated, jitted model entry points), `tokenizer` (BERT WordPiece, the data
pipeline's ids without tensorflow), `decoding` (VQA answer ranking / generation and MLM captioning over
a model: `rank_answers_jit`, `generate_answers`, `generate_captions`), `retrieval` (`rank`: image–text
retrieval over your own images and captions with ITM rerank scores), `visualize` (grounding boxes drawn
on images).
"""

from x2vlm_jax.inference import retrieval, visualize
from x2vlm_jax.inference.api import X2VLMInference, from_params, load, preprocess_images, save_random

__all__ = ["X2VLMInference", "from_params", "load", "preprocess_images", "save_random", "retrieval", "visualize"]
