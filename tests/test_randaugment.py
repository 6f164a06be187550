"""RandAugment's photometric ops against a numpy transcription of the official dataset/randaugment.py
(cv2.calcHist → np.bincount, cv2.filter2D's interior → an explicit 3×3 correlation rounded as cv2's
saturate_cast does), and RandAugment itself run end to end: each output is a composition of two
reference ops.

Known, documented deviations (README): the official autocontrast negates a uint8 minimum (`-low`
wraps), which whitens any channel whose minimum is above 0; the official sharpness casts to uint8
without clipping (out-of-range values wrap around). The reference below is verbatim otherwise; the
images keep a 0 pixel on the border of every channel (every photometric op keeps it at 0), where the
official autocontrast is the intended one.
"""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from x2vlm_jax.data import augment  # noqa: E402

ENHANCE = 0.1 + 1.8 * 7 / 10  # enhance_level_to_args at magnitude 7


def official_autocontrast(img):
  out = np.empty_like(img)
  for c in range(3):
    ch = img[..., c]
    high, low = ch.max(), ch.min()
    if high <= low:
      table = np.arange(256)
    else:
      scale = 255 / (high - low)
      with np.errstate(over="ignore"):
        offset = -low * scale  # uint8 negation, as officially
      table = np.arange(256) * scale + offset
      table[table < 0] = 0
      table[table > 255] = 255
    out[..., c] = table.clip(0, 255).astype(np.uint8)[ch]
  return out


def official_equalize(img):
  out = np.empty_like(img)
  for c in range(3):
    ch = img[..., c]
    hist = np.bincount(ch.reshape(-1), minlength=256).astype(np.float32)
    non_zero = hist[hist != 0]
    step = np.sum(non_zero[:-1]) // 255
    if step == 0:
      out[..., c] = ch
      continue
    n = np.empty_like(hist)
    n[0] = step // 2
    n[1:] = hist[:-1]
    out[..., c] = (np.cumsum(n) // step).clip(0, 255).astype(np.uint8)[ch]
  return out


def official_brightness(img, factor):
  return (np.arange(256, dtype=np.float32) * factor).clip(0, 255).astype(np.uint8)[img]


def official_sharpness(img, factor, wrap=True, rounding=False):
  k = np.ones((3, 3), np.float32)
  k[1, 1] = 5
  k /= 13
  h, w = img.shape[:2]
  x = img.astype(np.float32)
  blur = sum(k[a, b] * x[a : h - 2 + a, b : w - 2 + b] for a in range(3) for b in range(3))
  degenerate = np.rint(blur).clip(0, 255).astype(np.float32)  # cv2 saturate_cast: round half to even
  out = img.astype(np.float32)
  out[1:-1, 1:-1] = degenerate + np.float32(factor) * (out[1:-1, 1:-1] - degenerate)
  if not wrap:  # our documented deviation: clip instead of the wrap-around cast
    out = out.clip(0, 255)
  return (np.rint(out) if rounding else np.trunc(out)).astype(np.uint8)


REFERENCE = {
  "Identity": lambda x: x,
  "AutoContrast": official_autocontrast,
  "Equalize": official_equalize,
  "Brightness": lambda x: official_brightness(x, ENHANCE),
  "Sharpness": lambda x: official_sharpness(x, ENHANCE, wrap=False),
}


def _image(seed, h=24, w=20):
  rs = np.random.RandomState(seed)
  img = rs.randint(10, 200, (h, w, 3)).astype(np.uint8)
  img[0, 0] = 0  # a border pixel at 0 in every channel
  return img


def _ours(name, img):
  return augment._op(name, tf.constant(img, tf.float32), 1.0, 7.0).numpy().astype(np.uint8)


@pytest.mark.parametrize("name", ["AutoContrast", "Equalize", "Brightness"])
def test_photometric_op_equals_the_official_function(name):
  for seed in range(4):
    img = _image(seed)
    np.testing.assert_array_equal(_ours(name, img), REFERENCE[name](img), err_msg=f"{name} seed {seed}")


def test_sharpness_equals_the_official_function_where_it_does_not_wrap():
  for seed in range(4):
    img = _image(seed)
    ours, official = _ours("Sharpness", img), official_sharpness(img, ENHANCE, wrap=False)
    np.testing.assert_array_equal(ours, official)
    # Truncation, not rounding: some pixel of the sharpened interior lands on a fraction ≥ .5.
    assert (ours != official_sharpness(img, ENHANCE, wrap=False, rounding=True)).any()


def test_autocontrast_wrap_of_the_official_code_is_the_documented_deviation():
  img = _image(0)
  img[0, 0] = 5  # every channel's minimum is now 5 > 0
  assert (official_autocontrast(img) == 255).all()  # the official op turns the image white
  ours = _ours("AutoContrast", img)
  assert ours.min() == 0 and ours.max() == 255  # ours stretches, as PIL's autocontrast does


def test_rand_augment_outputs_are_compositions_of_official_ops():
  img = _image(7)
  names = list(augment.PHOTOMETRIC_OPS)
  candidates = {(a, b): REFERENCE[b](REFERENCE[a](img)) for a in names for b in names}
  seen = set()
  for s in range(40):
    out = augment.rand_augment(tf.constant(img), tf.constant([s, 3], tf.int64), ops=augment.PHOTOMETRIC_OPS)
    out = out.numpy().astype(np.uint8)
    match = [pair for pair, want in candidates.items() if np.array_equal(out, want)]
    assert match, f"seed {s}: not a composition of two official ops"
    seen.update(match)
  assert {a for pair in seen for a in pair} >= set(names) - {"Identity"}  # every op was drawn
