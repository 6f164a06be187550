"""BEiT's optional absolute position embedding (`vision.abs_pos_emb`, the shapes demo only):

* off in every released preset: no parameter, official layout and parameter counts unchanged;
* on: a [1, 1+N, D] table added to the tokens right after the cls token (a recomputation of the
  tower's input with and without it), sin-cos start values equal to MAE's formula written out;
* init_from resizes it to another grid (cls row kept, patch rows bicubic) and refuses a checkpoint
  that disagrees on having it.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from x2vlm_jax import params_io
from x2vlm_jax.convert import layout
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.models.vision import patchify
from x2vlm_jax.training import init_from, optimizer


@pytest.mark.slow
def test_released_presets_have_no_position_table():
  for name in ("base", "large"):
    cfg = get_preset(name)
    assert not cfg.vision.abs_pos_emb
    assert "vision/pos_embed" not in params_io.param_shapes(cfg)
    assert "vision_encoder.pos_embed" not in {e.key for e in layout.layout(cfg)}


def _mae_sincos(grid, d):
  """The 2-D sin-cos formula (MAE), entry by entry: the row in the first half of the channels, the
  column in the second, each [sin | cos] of frequencies 10000^(−i/(D/4)); the cls row is zero."""
  out = np.zeros((1 + grid * grid, d))
  for t in range(grid * grid):
    r, c = divmod(t, grid)
    for j, pos in enumerate((r, c)):
      for i in range(d // 4):
        w = 1.0 / 10000 ** (i / (d / 4))
        out[1 + t, j * d // 2 + i] = np.sin(pos * w)
        out[1 + t, j * d // 2 + d // 4 + i] = np.cos(pos * w)
  return out


def test_table_is_added_after_the_cls_token():
  cfg = get_preset("tiny", image_res=48)
  cfg.vision.abs_pos_emb, cfg.vision.pos_embed_init = True, "sincos"
  m = X2VLM(cfg, rngs=nnx.Rngs(0))
  table = np.asarray(m.vision.pos_embed[...])
  assert table.shape == (1, 10, 64)
  np.testing.assert_allclose(table[0], _mae_sincos(3, 64), atol=1e-6)
  assert optimizer.official_name("vision/pos_embed") == "vision_encoder.pos_embed"
  assert "vision_encoder.pos_embed" in {e.key for e in layout.layout(cfg)}

  images = jnp.asarray(np.random.RandomState(0).randn(2, 48, 48, 3), jnp.float32)
  seen = []
  block0 = m.vision.blocks[0]
  original = type(block0).__call__

  def spy(self, x, rng=None):
    if self is block0:
      seen.append(np.asarray(x))
    return original(self, x, rng)

  type(block0).__call__ = spy
  try:
    m.vision(images)
  finally:
    type(block0).__call__ = original
  v = m.vision
  tokens = np.asarray(v.patch_embed(patchify(images, 16)))
  cls = np.broadcast_to(np.asarray(v.cls_token[...]), (2, 1, 64))
  np.testing.assert_allclose(seen[0], np.concatenate([cls, tokens], 1) + table, atol=1e-5)


def test_init_from_resizes_the_table_and_refuses_a_mismatch(tmp_path):
  src = get_preset("tiny", image_res=48)  # 3×3 grid
  src.vision.abs_pos_emb = True
  params = nnx.to_pure_dict(nnx.state(X2VLM(src, rngs=nnx.Rngs(1)), nnx.Param))
  params_io.save(str(tmp_path / "ckpt"), src, params)
  dst = get_preset("tiny", image_res=64)  # 4×4 grid
  dst.vision.abs_pos_emb = True
  p = init_from.plan(str(tmp_path / "ckpt"), dst)
  assert p.actions["vision/pos_embed"] == "resize"
  values = init_from.load_values(p, dst, fresh=lambda path: None)
  got, old = values["vision/pos_embed"], params["vision"]["pos_embed"]
  assert got.shape == (1, 17, 64)
  np.testing.assert_array_equal(got[0, 0], old[0, 0])  # the cls row is kept
  # Bicubic upsampling keeps the table's mean per channel close and interpolates between the corners.
  grid = got[0, 1:].reshape(4, 4, 64)
  assert np.abs(grid.mean((0, 1)) - old[0, 1:].mean(0)).max() < 0.5 * np.abs(old[0, 1:]).max()
  assert not np.allclose(grid[0, 0], grid[3, 3])
  plain = get_preset("tiny", image_res=48)
  with pytest.raises(ValueError, match="vision.abs_pos_emb: checkpoint True, model False"):
    init_from.plan(str(tmp_path / "ckpt"), plain)


def test_pos_embed_resize_is_beit_interpolate_pos_embed():
  """BEiT's `interpolate_pos_embed`: the patch rows as a [1, D, G, G] image through
  torch.nn.functional.interpolate(size=(g, g), mode="bicubic", align_corners=False), the cls row kept;
  the value of every resized entry, not only statistics."""
  torch = pytest.importorskip("torch")
  rs = np.random.RandomState(3)
  for old, new in ((3, 4), (4, 6), (6, 4)):
    table = rs.randn(1, 1 + old * old, 8).astype(np.float32)
    got = init_from.resize_pos_embed(table, new)
    patches = torch.from_numpy(table[:, 1:]).reshape(1, old, old, 8).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(patches, size=(new, new), mode="bicubic", align_corners=False)
    want = want.permute(0, 2, 3, 1).reshape(1, new * new, 8).numpy()
    np.testing.assert_array_equal(got[:, :1], table[:, :1])
    np.testing.assert_allclose(got[:, 1:], want, atol=1e-5, err_msg=f"{old} → {new}")
