"""The training crop window against torchvision's `RandomResizedCrop.get_params` (the official
transform, dataset/__init__.py: `transforms.RandomResizedCrop(image_res, scale=(0.5, 1.0) / (0.2, 1.0))`),
re-written here in numpy from torchvision's source: 10 tries of (area uniform in scale, log-uniform
aspect ratio, Python `round`), the first that fits placed by `randint`, else a centre crop clamped to the
ratio range. The tf sampler draws from its own stateless seeds, so the comparison is of distributions."""

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from x2vlm_jax.data import augment  # noqa: E402

N = 3000
RATIO = (3 / 4, 4 / 3)


def torchvision_get_params(rng, height, width, scale, ratio):
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      i = int(rng.integers(0, height - h + 1))
      j = int(rng.integers(0, width - w + 1))
      return i, j, h, w
  in_ratio = float(width) / float(height)
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def _ours(height, width, scale, n=N):
  shape = tf.constant([height, width, 3])

  def one(i):
    begin, extent = augment._crop_window(shape, tf.stack([i, tf.constant(11, tf.int64)]), scale, RATIO)
    return tf.concat([begin[:2], extent[:2]], 0)

  ds = tf.data.Dataset.range(n).map(one).batch(n)
  return next(iter(ds)).numpy()


def _reference(height, width, scale, n=N):
  rng = np.random.default_rng(0)
  return np.array([torchvision_get_params(rng, height, width, scale, RATIO) for _ in range(n)])


def _ks(a, b):
  """Two-sample Kolmogorov–Smirnov statistic."""
  grid = np.union1d(a, b)
  cdf = lambda x: np.searchsorted(np.sort(x), grid, "right") / len(x)  # noqa: E731
  return np.abs(cdf(a) - cdf(b)).max()


@pytest.mark.parametrize("height,width,scale", [(120, 160, (0.2, 1.0)), (96, 96, (0.5, 1.0)), (60, 240, (0.2, 1.0))])
def test_crop_window_distribution_is_torchvision_random_resized_crop(height, width, scale):
  ours, ref = _ours(height, width, scale), _reference(height, width, scale)
  assert (ours[:, 2] >= 1).all() and (ours[:, 0] + ours[:, 2] <= height).all()
  assert (ours[:, 3] >= 1).all() and (ours[:, 1] + ours[:, 3] <= width).all()
  crit = 1.63 * math.sqrt(2 / N)  # KS critical value at α = 0.01
  area = lambda c: c[:, 2] * c[:, 3] / (height * width)  # noqa: E731
  log_aspect = lambda c: np.log(c[:, 3] / c[:, 2])  # noqa: E731
  centre_y = lambda c: (c[:, 0] + c[:, 2] / 2) / height  # noqa: E731
  for name, f in (("area", area), ("log aspect", log_aspect), ("centre y", centre_y)):
    assert _ks(f(ours), f(ref)) < crit, name
  # The fallback (no try fits): as often as torchvision, and the same window.
  full = lambda c: np.mean((c[:, 2] == c[:, 2].max()) & (c[:, 3] == c[:, 3].max()))  # noqa: E731
  assert abs(full(ours) - full(ref)) < 0.03


def test_fallback_is_the_centre_crop_clamped_to_the_ratio():
  # A 10 × 1000 strip: no try can fit (h ≥ √(0.2·10·1000·3/4) > 10), so every window is the fallback.
  rng = np.random.default_rng(0)
  want = torchvision_get_params(rng, 10, 1000, (0.2, 1.0), RATIO)
  assert want == (0, 493, 10, 13)
  ours = _ours(10, 1000, (0.2, 1.0), n=5)
  assert (ours == np.array(want)).all()
