"""Image transforms of docs/reference.md §4.3 in the tf graph, driven by stateless seeds (reproducible per example).

Pixels are float32 in [0, 255] and are clipped/rounded after each op, which mirrors the uint8
arithmetic of the reference (PIL / cv2) implementation.
"""

import math

import tensorflow as tf

from x2vlm_jax.models.presets import CLIP_MEAN, CLIP_STD

MAX_LEVEL = 10.0
FILL = 128.0
# PIL's IDCT (libjpeg JDCT_ISLOW); tf's default is the fast one (see streams.decode).
JPEG_DCT = "INTEGER_ACCURATE"


def _seeds(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _u8(x):
  return tf.round(tf.clip_by_value(x, 0.0, 255.0))


def _u8_trunc(x):
  """numpy's `.clip(0, 255).astype(np.uint8)` of dataset/randaugment.py: clipped, then truncated."""
  return tf.floor(tf.clip_by_value(x, 0.0, 255.0))


def resize(image, size):
  """Bicubic resize to size×size (aspect not kept) as PIL does it, back on the uint8 grid.

  The official transforms are torchvision on PIL images, i.e. `PIL.Image.resize(BICUBIC)`: Keys
  cubic (a = −0.5) widened by the scale factor when shrinking (antialiasing), applied as a width pass
  then a height pass with a uint8 result in between. tf's antialiased bicubic is the same kernel, so
  doing the two passes separately with the same rounding reproduces PIL to within 1–2 levels on a
  few pixels (mean |Δ| ≤ 0.01/255, docs/data.md); a single antialiased pass leaves 0.13–0.21/255
  and the old non-antialiased one 1.7–8/255 when shrinking.
  """
  x = tf.cast(image, tf.float32)
  x = _u8(tf.image.resize(x, [tf.shape(x)[0], size], method="bicubic", antialias=True))
  return _u8(tf.image.resize(x, [size, size], method="bicubic", antialias=True))


def normalize(image):
  x = tf.cast(image, tf.float32) / 255.0
  return (x - tf.constant(CLIP_MEAN)) / tf.constant(CLIP_STD)


def _crop_window(image_shape, seed, scale, ratio, attempts: int = 10):
  """torchvision `RandomResizedCrop.get_params` (the official transform) on stateless draws → (begin
  [y, x, 0], extent [h, w, -1]).

  Up to 10 attempts, all drawn at once: area fraction uniform in `scale`, log aspect ratio uniform in
  log(`ratio`), w = round(√(A·r)), h = round(√(A/r)) (round half to even, as Python's `round`); the
  first attempt that fits the image is placed uniformly (`randint(0, H − h + 1)`); when none fits, a
  centre crop of the whole image clamped to `ratio`."""
  height = tf.cast(image_shape[0], tf.float32)
  width = tf.cast(image_shape[1], tf.float32)
  u = tf.random.stateless_uniform([attempts, 4], seed, dtype=tf.float32)
  area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = tf.exp(log_lo + (log_hi - log_lo) * u[:, 1])
  w = tf.round(tf.sqrt(area * aspect))
  h = tf.round(tf.sqrt(area / aspect))
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)  # the first fitting attempt
  y = tf.floor(u[first, 2] * (height - h[first] + 1.0))
  x = tf.floor(u[first, 3] * (width - w[first] + 1.0))
  # Fallback: the whole image, cut to the nearest allowed aspect ratio, centred.
  in_ratio = width / height
  fw = tf.where(in_ratio < ratio[0], width, tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width))
  fh = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
  any_fits = tf.reduce_any(fits)
  hh = tf.where(any_fits, h[first], fh)
  ww = tf.where(any_fits, w[first], fw)
  yy = tf.where(any_fits, y, tf.floor((height - fh) / 2.0))
  xx = tf.where(any_fits, x, tf.floor((width - fw) / 2.0))
  begin = tf.stack([tf.cast(yy, tf.int32), tf.cast(xx, tf.int32), 0])
  extent = tf.stack([tf.cast(hh, tf.int32), tf.cast(ww, tf.int32), -1])
  return begin, extent


def random_resized_crop(image, size, seed, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
  begin, extent = _crop_window(tf.shape(image), seed, scale, ratio)
  return resize(tf.slice(image, begin, extent), size)


def decode_random_resized_crop(image_bytes, size, seed, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
  """`random_resized_crop(decode(bytes))` with the same window, but a JPEG is decoded only inside the
  crop (the window is sampled from the header): the crop covers 20–100% of the image, so this skips a
  large part of the decode, the most expensive step of the image stream."""

  def jpeg():
    shape = tf.io.extract_jpeg_shape(image_bytes)
    begin, extent = _crop_window(shape, seed, scale, ratio)
    window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
    return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3, dct_method=JPEG_DCT)

  def other():
    image = tf.ensure_shape(tf.io.decode_image(image_bytes, channels=3, expand_animations=False), [None, None, 3])
    begin, extent = _crop_window(tf.shape(image), seed, scale, ratio)
    return tf.slice(image, begin, extent)

  return resize(tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other), size)


def random_flip(image, seed):
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image), flip


# ---- RandAugment (ALBEF variant: N ops with replacement, each applied with p=0.5, magnitude M) ----


def _autocontrast(x):
  """randaugment.py: autocontrast_func as intended (PIL's autocontrast, the table truncated to uint8).
  The official code negates the uint8 minimum (`-low * scale` wraps to (256 − low)·scale), which
  turns every channel whose minimum is above 0 white; we keep the intended stretch (README deviations)."""
  lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
  hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
  scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1e-6), 1.0)
  off = tf.where(hi > lo, lo, 0.0)
  return _u8_trunc((x - off) * scale)


def _equalize_channel(ch):
  ch_i = tf.cast(ch, tf.int32)
  hist = tf.math.bincount(tf.reshape(ch_i, [-1]), minlength=256, maxlength=256)
  nonzero = tf.boolean_mask(hist, hist > 0)
  step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
  n = tf.concat([[step // 2], hist[:-1]], 0)
  table = tf.clip_by_value(tf.cumsum(n) // tf.maximum(step, 1), 0, 255)
  return tf.cond(step > 0, lambda: tf.cast(tf.gather(table, ch_i), tf.float32), lambda: ch)


def _equalize(x):
  return tf.stack([_equalize_channel(x[..., c]) for c in range(3)], axis=-1)


def _brightness(x, factor):
  return _u8_trunc(x * factor)  # randaugment.py: brightness_func's table, truncated


def _sharpness(x, factor):
  k = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  k = tf.tile(k[:, :, None, None], [1, 1, 3, 1])
  blur = _u8(tf.nn.depthwise_conv2d(x[None], k, [1, 1, 1, 1], "VALID")[0])  # cv2.filter2D rounds
  # sharpness_func: `.astype(np.uint8)` truncates; it does not clip first (values outside 0..255 wrap
  # around), we clip them (README deviations).
  inner = _u8_trunc(blur + factor * (x[1:-1, 1:-1] - blur))
  # Border pixels are left untouched, as in the reference.
  return tf.pad(inner - x[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + x


def _warp(x, transform):
  """transform: 8 coefficients mapping output (x, y) → input coordinates."""
  out = tf.raw_ops.ImageProjectiveTransformV3(
    images=x[None],
    transforms=tf.cast(tf.reshape(transform, [1, 8]), tf.float32),
    output_shape=tf.shape(x)[:2],
    fill_value=FILL,
    interpolation="BILINEAR",
    fill_mode="CONSTANT",
  )
  return _u8(out[0])


def _shear(x, s, axis):
  t = [1.0, s, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0] if axis == 0 else [1.0, 0.0, 0.0, s, 1.0, 0.0, 0.0, 0.0]
  return _warp(x, tf.stack([tf.cast(v, tf.float32) for v in t]))


def _translate(x, d, axis):
  t = [1.0, 0.0, d, 0.0, 1.0, 0.0, 0.0, 0.0] if axis == 0 else [1.0, 0.0, 0.0, 0.0, 1.0, d, 0.0, 0.0]
  return _warp(x, tf.stack([tf.cast(v, tf.float32) for v in t]))


def _rotate(x, degrees):
  a = degrees * math.pi / 180.0
  h, w = tf.cast(tf.shape(x)[0], tf.float32), tf.cast(tf.shape(x)[1], tf.float32)
  cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
  c, s = tf.cos(a), tf.sin(a)
  # input = R(-a)·(out − centre) + centre
  t = tf.stack([c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy, 0.0, 0.0])
  return _warp(x, t)


PHOTOMETRIC_OPS = ("Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness")
ALL_OPS = PHOTOMETRIC_OPS + ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def _op(name, x, sign, magnitude):
  level = magnitude / MAX_LEVEL
  enhance = 0.1 + 1.8 * level  # 1.36 at M=7, always the same sign
  return {
    "Identity": lambda: x,
    "AutoContrast": lambda: _autocontrast(x),
    "Equalize": lambda: _equalize(x),
    "Brightness": lambda: _brightness(x, enhance),
    "Sharpness": lambda: _sharpness(x, enhance),
    "ShearX": lambda: _shear(x, sign * 0.3 * level, 0),
    "ShearY": lambda: _shear(x, sign * 0.3 * level, 1),
    "TranslateX": lambda: _translate(x, sign * magnitude, 0),  # absolute pixels (±7 at M=7)
    "TranslateY": lambda: _translate(x, sign * magnitude, 1),
    "Rotate": lambda: _rotate(x, sign * 30.0 * level),
  }[name]()


def rand_augment(image, seed, num_ops=2, magnitude=7.0, ops=ALL_OPS):
  assert ops[0] == "Identity"
  x = tf.cast(image, tf.float32)
  for s in _seeds(seed, num_ops):
    s_op, s_apply, s_sign = _seeds(s, 3)
    idx = tf.random.stateless_uniform([], s_op, 0, len(ops), dtype=tf.int32)
    apply = tf.random.stateless_uniform([], s_apply) < 0.5
    sign = tf.where(tf.random.stateless_uniform([], s_sign) < 0.5, -1.0, 1.0)
    idx = tf.where(apply, idx, 0)  # a skipped op is the Identity branch (ops[0]), nothing computed
    branches = [lambda name=name, x=x: _op(name, x, sign, magnitude) for name in ops]
    x = tf.ensure_shape(tf.switch_case(idx, branches), image.shape)
  return x


def _flip_randaug_normalize(x, size, s_flip, s_ra, randaug):
  x, _ = random_flip(x, s_flip)
  x = tf.ensure_shape(x, [size, size, 3])
  if randaug:
    x = rand_augment(x, s_ra)
  return normalize(x)


def pretrain_transform(image, size, seed, randaug=True):
  """Image stream / video frames: RandomResizedCrop(0.2–1) → flip → RandAugment(2, 7) → normalise."""
  s_crop, s_flip, s_ra = _seeds(seed, 3)
  return _flip_randaug_normalize(random_resized_crop(image, size, s_crop), size, s_flip, s_ra, randaug)


def pretrain_transform_bytes(image_bytes, size, seed, randaug=True, scale=(0.2, 1.0)):
  """`pretrain_transform(decode(bytes))` with the crop fused into the JPEG decode (same seeds).
  scale=(0.5, 1.0) is the fine-tuning "train" transform of retrieval, NLVR2 and captioning
  (docs/reference.md §4.3)."""
  s_crop, s_flip, s_ra = _seeds(seed, 3)
  return _flip_randaug_normalize(
    decode_random_resized_crop(image_bytes, size, s_crop, scale=scale), size, s_flip, s_ra, randaug
  )


def test_transform(image, size):
  return normalize(resize(image, size))
