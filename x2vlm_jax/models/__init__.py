"""Flax NNX modules of X²-VLM. Nothing here may import tensorflow (GPU hosts do not have it)."""

from x2vlm_jax.models.presets import get_preset
from x2vlm_jax.models.x2vlm import X2VLM, l2_normalize

__all__ = ["X2VLM", "get_preset", "l2_normalize"]
