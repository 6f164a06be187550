"""Checkpoint conversion: official PyTorch X²-VLM / BEiT-v2 / BERT weights → our Flax NNX params.

No torch import at module level: torch is only needed to unpickle `.th/.pth/.bin` files and is
imported inside `state_dict.read_state_dict`.
"""

from x2vlm_jax.convert.layout import official_shapes
from x2vlm_jax.convert.relpos import resize_rel_pos_table
from x2vlm_jax.convert.state_dict import read_state_dict
from x2vlm_jax.convert.x2vlm import ConversionError, convert_official, to_official

__all__ = [
  "ConversionError",
  "convert_official",
  "official_shapes",
  "read_state_dict",
  "resize_rel_pos_table",
  "to_official",
]
