"""x2vlm-jax: X²-VLM (Zeng et al., 2022) pre-training, fine-tuning and evaluation in JAX/Flax NNX."""

__version__ = "0.1.0"
