"""BEiT-v2 ViT vision tower with the official X²-VLM output convention (docs/reference.md §1.2).

Differences from a textbook ViT that matter for parity:
  * per-block relative position bias in BEiT's index layout (3 extra rows for the cls slot);
  * one bias-free qkv projection plus learned q/v biases (k bias is a constant zero);
  * the cls output is discarded: slot 0 is the mean of the `fc_norm`-ed patch tokens.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from x2vlm_jax.models import layers, scan
from x2vlm_jax.models.attention import dot_product_attention


@functools.lru_cache(maxsize=None)
def relative_position_index(grid: int) -> np.ndarray:
  """BEiT relative position index [1+N, 1+N] for a G×G patch grid (docs/reference.md §1.2 step 5)."""
  rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
  rows, cols = rows.reshape(-1), cols.reshape(-1)  # token order = row·G + col
  rel_r = rows[:, None] - rows[None, :] + grid - 1  # query minus key
  rel_c = cols[:, None] - cols[None, :] + grid - 1
  num_grid = (2 * grid - 1) ** 2
  index = np.zeros((grid * grid + 1,) * 2, dtype=np.int32)
  index[1:, 1:] = rel_r * (2 * grid - 1) + rel_c
  index[0, :] = num_grid  # cls → token
  index[:, 0] = num_grid + 1  # token → cls
  index[0, 0] = num_grid + 2  # cls → cls
  return index


def relative_position_table_rows(grid: int) -> int:
  return (2 * grid - 1) ** 2 + 3


def sincos_2d(grid: int, width: int) -> np.ndarray:
  """[1, 1+G·G, D] 2-D sine-cosine position table (MAE's get_2d_sincos_pos_embed): half of the
  channels encode the row, half the column, each as sin/cos of geometric frequencies; the cls row is
  zero. Every token starts with a distinct, smooth position code of the scale of a patch embedding."""
  if width % 4:
    raise ValueError(f"vision.width={width}: the sin-cos position table needs a multiple of 4")
  omega = 1.0 / 10000 ** (np.arange(width // 4, dtype=np.float64) / (width / 4))
  rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
  parts = []
  for pos in (rows.reshape(-1), cols.reshape(-1)):
    angle = pos[:, None] * omega[None]
    parts += [np.sin(angle), np.cos(angle)]
  table = np.concatenate([np.zeros((1, width))] + [np.concatenate(parts, axis=1)], axis=0)
  return table[None].astype(np.float32)


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """NHWC images → [B, N, P·P·C] in row-major patch order, each patch flattened as (h, w, c)."""
  b, h, w, c = images.shape
  g_h, g_w = h // patch, w // patch
  x = images.reshape(b, g_h, patch, g_w, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, g_h * g_w, patch * patch * c)


class VisionAttention(nnx.Module):
  def __init__(self, width: int, num_heads: int, grid: int, *, rngs: nnx.Rngs, dtype, implementation: str):
    self.num_heads = num_heads
    self.implementation = implementation
    self.qkv = layers.dense(
      width, 3 * width, ("embed", "heads"), use_bias=False, rngs=rngs, dtype=dtype, kernel_init=layers.trunc_normal
    )
    self.q_bias = nnx.Param(jnp.zeros((width,)), out_sharding=("heads",), eager_sharding=False)
    self.v_bias = nnx.Param(jnp.zeros((width,)), out_sharding=("heads",), eager_sharding=False)
    self.rel_pos_table = nnx.Param(
      jnp.zeros((relative_position_table_rows(grid), num_heads)), out_sharding=(None, None), eager_sharding=False
    )
    self.proj = layers.dense(width, width, ("heads", "embed"), rngs=rngs, dtype=dtype, kernel_init=layers.trunc_normal)
    self.grid = grid

  def __call__(self, x):
    b, length, d = x.shape
    bias = jnp.concatenate([self.q_bias[...], jnp.zeros_like(self.v_bias[...]), self.v_bias[...]])
    qkv = self.qkv(x) + bias.astype(x.dtype)
    qkv = qkv.reshape(b, length, 3, self.num_heads, d // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    index = relative_position_index(self.grid)
    if index.shape[0] != length:
      raise ValueError(f"vision tokens: expected {index.shape[0]} (grid {self.grid}), got {length}")
    rel = self.rel_pos_table[...][index]  # [L, L, heads]
    rel = jnp.transpose(rel, (2, 0, 1))[None]
    out = dot_product_attention(q, k, v, rel, implementation=self.implementation)
    return self.proj(out.reshape(b, length, d))


class VisionBlock(nnx.Module):
  def __init__(self, cfg, drop_path: float, *, rngs: nnx.Rngs, dtype):
    v = cfg.vision
    grid = cfg.image_res // cfg.patch_size
    self.drop_path = drop_path
    self.norm1 = layers.layer_norm(v.width, v.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.attn = VisionAttention(v.width, v.num_heads, grid, rngs=rngs, dtype=dtype, implementation=cfg.attention_impl)
    self.gamma_1 = nnx.Param(
      jnp.full((v.width,), v.layer_scale_init, jnp.float32), out_sharding=("norm",), eager_sharding=False
    )
    self.norm2 = layers.layer_norm(v.width, v.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.fc1 = layers.dense(
      v.width, v.mlp_dim, ("embed", "mlp"), rngs=rngs, dtype=dtype, kernel_init=layers.trunc_normal
    )
    self.fc2 = layers.dense(
      v.mlp_dim, v.width, ("mlp", "embed"), rngs=rngs, dtype=dtype, kernel_init=layers.trunc_normal
    )
    self.gamma_2 = nnx.Param(
      jnp.full((v.width,), v.layer_scale_init, jnp.float32), out_sharding=("norm",), eager_sharding=False
    )

  def __call__(self, x, rng=None, drop_path=None):
    """drop_path: this call's rate instead of the constructor's (a scanned block's, traced)."""
    rate = self.drop_path if drop_path is None else drop_path
    r1, r2 = layers.split_rng(rng, 2)
    sample_mask = (x.shape[0],) + (1,) * (x.ndim - 1)  # timm DropPath: whole samples
    y = self.attn(self.norm1(x)) * self.gamma_1[...].astype(x.dtype)
    x = x + layers.drop_path(y, rate, r1, sample_mask)
    y = self.fc2(layers.gelu(self.fc1(self.norm2(x)))) * self.gamma_2[...].astype(x.dtype)
    return x + layers.drop_path(y, rate, r2, sample_mask)


class VisionTower(nnx.Module):
  """images NHWC (CLIP-normalised) → [B, 1+N, D] = [mean(fc_norm(patches)), fc_norm(patches)]."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    v = cfg.vision
    dtype = jnp.dtype(cfg.dtype)
    self.patch_size = cfg.patch_size
    self.image_res = cfg.image_res
    self.remat = scan.remat_policy(cfg, "vision")
    self.constrain = bool(cfg.get("constrain_activations", True))
    self.patch_embed = layers.dense(
      cfg.patch_size**2 * 3, v.width, (None, "embed"), rngs=rngs, dtype=dtype, kernel_init=layers.trunc_normal
    )
    self.cls_token = nnx.Param(
      layers.trunc_normal(rngs.params(), (1, 1, v.width)), out_sharding=(None, None, "embed"), eager_sharding=False
    )
    # BEiT's optional absolute position embedding (`use_abs_pos_emb`): a learned [1, 1+N, D] table,
    # trunc-normal 0.02, added right after the cls token is prepended. Every released X²-VLM model has
    # it off (docs/reference.md §1.2); a tower trained from scratch on a small budget needs it to know where things
    # are (the rel-pos tables start at zero), see docs/grounding.md.
    if v.abs_pos_emb:
      grid = cfg.image_res // cfg.patch_size
      if v.pos_embed_init == "sincos":
        value = jnp.asarray(sincos_2d(grid, v.width))
      elif v.pos_embed_init == "trunc_normal":
        value = layers.trunc_normal(rngs.params(), (1, 1 + grid * grid, v.width))
      else:
        raise ValueError(f"vision.pos_embed_init: expected 'trunc_normal' or 'sincos', got {v.pos_embed_init!r}")
      self.pos_embed = nnx.Param(value, out_sharding=(None, None, "embed"), eager_sharding=False)
    else:
      self.pos_embed = None
    rates = np.linspace(0.0, v.drop_path_rate, v.depth) if v.depth > 1 else [0.0]
    self.drop_path_rates = tuple(float(r) for r in rates)
    if cfg.get("scan_layers", False):
      # One stacked block; the rates (and the RNG keys) enter the scan as per-block data.
      self.blocks = None
      self.block_stack = scan.stacked(lambda r: VisionBlock(cfg, 0.0, rngs=r, dtype=dtype), v.depth, rngs)
    else:
      self.blocks = nnx.List([VisionBlock(cfg, r, rngs=rngs, dtype=dtype) for r in self.drop_path_rates])
      self.block_stack = None
    self.fc_norm = layers.layer_norm(v.width, v.layer_norm_eps, rngs=rngs, dtype=dtype)

  def __call__(self, images, rng=None):
    x = self.patch_embed(patchify(images.astype(self.patch_embed.dtype), self.patch_size))
    cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1)
    if self.pos_embed is not None:
      x = x + self.pos_embed[...].astype(x.dtype)
    x = self._blocks(x, rng)
    patches = self.fc_norm(x[:, 1:])  # the cls-slot output is discarded (docs/reference.md §1.2 step 6)
    return jnp.concatenate([patches.mean(axis=1, keepdims=True), patches], axis=1)

  def _constrain(self, x):
    return scan.constrain_batch(x) if self.constrain else x

  def _blocks(self, x, rng):
    depth = len(self.drop_path_rates)
    if self.block_stack is None:
      call = scan.remat_layer(lambda blk, h, k: blk(h, k), self.remat)
      for block, r in zip(self.blocks, layers.split_rng(rng, depth)):
        x = self._constrain(call(block, x, r))
      return x
    keys = scan.layer_keys(rng, depth, 0, depth)
    rates = scan.rates_input(self.drop_path_rates) if keys is not None else None

    def body(block, h, inp):
      k, rate = inp
      return self._constrain(block(h, k, 0.0 if rate is None else rate)), None

    x, _ = scan.run(self.block_stack, x, body, xs=(keys, rates), policy=self.remat)
    return x
