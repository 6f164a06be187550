"""Image transforms against PIL itself (docs/reference.md §4.3: the official transforms are torchvision on PIL)."""

import io

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from x2vlm_jax.data import augment, streams  # noqa: E402


def _textured(h, w, seed=0):
  """Gratings up to near-Nyquist plus noise: detail that aliases visibly unless the resize filters it."""
  rs = np.random.RandomState(seed)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  img = np.zeros((h, w, 3))
  for c in range(3):
    for _ in range(4):
      fx, fy = rs.uniform(0.01, 0.45, size=2)
      img[..., c] += 40 * np.sin(2 * np.pi * (fx * xx + fy * yy) + rs.uniform(0, 6))
  img += 128 + rs.normal(0, 12, size=img.shape)
  return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _pil_resize(a, size):
  """`Image.resize((size, size), BICUBIC)` of Pillow ≤ 12 (checked against 9.5.0), as in the official
  runs: width pass, then height pass. Pillow 13 does the height pass first for some portrait shapes
  (≤ 1 level off on ~20% of pixels), so the two passes are requested one at a time."""
  im = Image.fromarray(a)
  return np.asarray(im.resize((size, im.height), Image.BICUBIC).resize((size, size), Image.BICUBIC), np.float32)


@pytest.mark.parametrize(
  "h,w,size",
  [
    (480, 640, 224),
    (480, 640, 384),
    (128, 128, 64),
    (150, 200, 32),
    (133, 97, 64),
    (80, 40, 64),
    (128, 128, 224),
    (97, 61, 130),
  ],
)
def test_resize_matches_pil_bicubic(h, w, size):
  """Shrinking (antialiased in PIL) and enlarging; the old non-antialiased resize was 1.7–8 levels off
  on average when shrinking and a single antialiased pass ~0.2 (no intermediate uint8 rounding)."""
  a = _textured(h, w, seed=h + w + size)
  got = augment.resize(tf.constant(a), size).numpy()
  ref = _pil_resize(a, size)
  d = np.abs(got - ref)
  assert got.shape == ref.shape == (size, size, 3)
  assert d.mean() < 0.03 and d.max() <= 2, (d.mean(), d.max())


def _jpeg(a, subsampling):
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format="JPEG", quality=85, subsampling=subsampling)
  return buf.getvalue()


@pytest.mark.parametrize("subsampling", [0, 2])  # 4:4:4 and 4:2:0 chroma
def test_decode_matches_pil(subsampling):
  """tf's default JPEG IDCT (fast integer) is 0.5–2 levels off PIL on average; decode must be exact."""
  data = _jpeg(_textured(90, 130, seed=subsampling), subsampling)
  ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
  np.testing.assert_array_equal(streams.decode(tf.constant(data)).numpy(), ref)


@pytest.mark.parametrize("subsampling", [0, 2])
def test_decode_random_resized_crop_matches_pil(subsampling):
  """The image stream's fused decode-and-crop + resize against PIL decode → crop → resize(BICUBIC).
  Only libjpeg's cropped 4:2:0 decode differs, in the crop's last column (chroma upsampling lacks the
  right neighbour), which the mean tolerates."""
  data = _jpeg(_textured(240, 320, seed=3 + subsampling), subsampling)
  pil = Image.open(io.BytesIO(data)).convert("RGB")
  for s in range(4):
    seed = tf.constant([s, 17], tf.int64)
    got = augment.decode_random_resized_crop(tf.constant(data), 64, seed).numpy()
    # The window is drawn from the same seed; only the pixels are under test here.
    (y0, x0, _), (h, w, _) = (
      v.numpy() for v in augment._crop_window(tf.constant([240, 320, 3]), seed, (0.2, 1.0), (3 / 4, 4 / 3))
    )
    ref = _pil_resize(np.asarray(pil.crop((x0, y0, x0 + w, y0 + h))), 64)
    d = np.abs(got - ref)
    assert d.mean() < 0.05 and (subsampling or d.max() <= 2), (s, d.mean(), d.max())
