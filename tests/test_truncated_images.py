"""Truncated image files are decoded as the official loaders decode them (`ImageFile.LOAD_TRUNCATED_IMAGES
= True` in dataset/*.py), not skipped, and counted: in evaluation (`read_image`, the evaluators'
`truncated_images`) and at build time (`jsonl.check_image` keeps PIL's partial decode as PNG)."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from x2vlm_jax.inference.images import open_image, read_image


def _truncated_jpeg():
  rs = np.random.RandomState(0)
  buf = io.BytesIO()
  Image.fromarray(rs.randint(0, 255, (48, 64, 3), np.uint8)).save(buf, format="JPEG", quality=90)
  data = buf.getvalue()
  return data[: len(data) * 2 // 3]


def _official_decode(data):
  before = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = True  # what the official dataset modules set at import
  try:
    im = Image.open(io.BytesIO(data))
    im.load()
    return np.asarray(im.convert("RGB"))
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = before


def test_strict_pil_refuses_the_file_the_official_loader_decodes():
  data = _truncated_jpeg()
  with pytest.raises(OSError, match="truncated"):
    Image.open(io.BytesIO(data)).load()
  assert _official_decode(data).shape == (48, 64, 3)


def test_open_image_decodes_a_truncated_file_as_officially_and_says_so():
  data = _truncated_jpeg()
  flag = ImageFile.LOAD_TRUNCATED_IMAGES
  im, truncated = open_image(data)
  assert truncated and ImageFile.LOAD_TRUNCATED_IMAGES == flag  # the global flag is restored
  np.testing.assert_array_equal(np.asarray(im.convert("RGB")), _official_decode(data))
  seen = []
  pixels = read_image(data, 32, truncated=seen)
  assert pixels.shape == (32, 32, 3) and seen == ["<bytes>"]
  whole = io.BytesIO()
  Image.new("RGB", (8, 8)).save(whole, format="PNG")
  assert open_image(whole.getvalue())[1] is False


def test_build_keeps_a_truncated_image_with_the_official_pixels_and_counts_it():
  pytest.importorskip("tensorflow")
  from x2vlm_jax.data import records
  from x2vlm_jax.data.annotations import BadRecord
  from x2vlm_jax.data.jsonl import check_image

  data = _truncated_jpeg()
  report = records.BuildReport()
  stored, w, h = check_image(data)
  assert (w, h) == (64, 48)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(stored)).convert("RGB")), _official_decode(data))
  assert any(line.startswith("truncated_images: 1") for line in report.lines("image"))
  with pytest.raises(BadRecord, match="corrupt_image"):
    check_image(b"not an image at all")
