"""Shared helpers of the conversion / parity tests: fabricate official-format checkpoints."""

import numpy as np

from x2vlm_jax.convert import layout as L


def random_official_state_dict(cfg, seed: int = 0, with_buffers: bool = True):
  """A random pre-training checkpoint for `cfg` in the official key layout (docs/reference.md §7.2), including the
  buffers and tied duplicates a released `.th` file stores."""
  rng = np.random.default_rng(seed)
  sd = {}
  for key, shape in L.official_shapes(cfg).items():
    if (
      key.endswith("LayerNorm.weight")
      or key.endswith("norm1.weight")
      or key.endswith("norm2.weight")
      or key.endswith("fc_norm.weight")
      or key.endswith(".1.weight")
    ):
      sd[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    elif key == "temp":
      sd[key] = np.asarray(0.07, np.float32)
    elif key.endswith("gamma_1") or key.endswith("gamma_2"):
      sd[key] = (0.5 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    elif key.endswith("relative_position_bias_table"):
      sd[key] = rng.standard_normal(shape).astype(np.float32)  # large enough to matter
    else:
      sd[key] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
  if with_buffers:
    n_tok = (cfg.image_res // cfg.patch_size) ** 2 + 1
    for i in range(cfg.vision.depth):
      sd[f"vision_encoder.blocks.{i}.attn.relative_position_index"] = np.zeros((n_tok, n_tok), np.int64)
    sd[L.MLM_LAYOUT_PREFIX + "embeddings.position_ids"] = np.arange(cfg.text.max_positions)[None].astype(np.int64)
    sd[L.CLS_PREFIX + "decoder.weight"] = sd[L.MLM_LAYOUT_PREFIX + "embeddings.word_embeddings.weight"].copy()
    sd[L.CLS_PREFIX + "decoder.bias"] = sd[L.CLS_PREFIX + "bias"].copy()
  return sd


def random_beit_checkpoint(cfg, seed=0):
  """A random BEiT-v2-layout file for the tiny vision tower (shared rel-pos table, like some releases)."""
  rng = np.random.default_rng(seed)
  shapes = {
    k[len("vision_encoder.") :]: s for k, s in L.official_shapes(cfg).items() if k.startswith("vision_encoder.")
  }
  sd = {
    k: (0.05 * rng.standard_normal(s)).astype(np.float32)
    for k, s in shapes.items()
    if not k.endswith("relative_position_bias_table")
  }
  rows, heads = shapes["blocks.0.attn.relative_position_bias_table"]
  sd["rel_pos_bias.relative_position_bias_table"] = rng.standard_normal((rows, heads)).astype(np.float32)
  sd["head.weight"] = np.zeros((3, cfg.vision.width), np.float32)
  sd["head.bias"] = np.zeros((3,), np.float32)
  return sd
