"""Truncated image files are decoded as the official loaders decode them (`ImageFile.LOAD_TRUNCATED_IMAGES
= True` in dataset/*.py), not skipped, and counted: in evaluation (`read_image`, the evaluators'
`truncated_images`) and at build time (`jsonl.check_image` keeps PIL's partial decode as PNG); the same
for the base64 frames of a video file (`read_video` in evaluation, `video.load_frames` at build time)."""

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


# --- video frames (the official video loaders decode base64 frames under the same flag) -----------------------
CLIP_MEAN, CLIP_STD = np.asarray([0.48145466, 0.4578275, 0.40821073]), np.asarray([0.26862954, 0.26130258, 0.27577711])


def _frames_file(tmp_path):
  """A frames file (the official JSON list of base64 frames) of 3 frames whose first one is truncated."""
  import base64
  import json

  whole = []
  for k in range(2):
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 40 + 90 * k, np.uint8)).save(buf, format="JPEG", quality=90)
    whole.append(buf.getvalue())
  frames = [_truncated_jpeg()] + whole
  path = tmp_path / "video_7.json"
  path.write_text(json.dumps([base64.b64encode(f).decode() for f in frames]))
  return str(path), frames


def test_evaluation_decodes_a_truncated_video_frame_as_officially_and_counts_it(tmp_path):
  import base64
  import json

  from x2vlm_jax.evaluation.base import load_images_parallel

  path, frames = _frames_file(tmp_path)
  res, num_frames = 32, 4  # 3 frames for 4 slots: the official evaluation reads frames 0, 0, 1, 2
  seen = []
  pixels, valid, bad = load_images_parallel([path], np.array([0]), res, num_frames=num_frames, truncated=seen)
  assert valid.tolist() == [1.0] and bad == []
  # The truncated frame is counted once, however often the frame choice repeats it.
  assert seen == [f"{path}#0"]
  want = np.asarray(Image.fromarray(_official_decode(frames[0])).resize((res, res), Image.BICUBIC), np.float64)
  want = (want / 255.0 - CLIP_MEAN) / CLIP_STD
  np.testing.assert_allclose(pixels[0, 0], want, atol=1e-5)
  np.testing.assert_allclose(pixels[0, 1], want, atol=1e-5)
  # A video without truncated frames adds nothing.
  clean = tmp_path / "video_8.json"
  clean.write_text(json.dumps([base64.b64encode(f).decode() for f in frames[1:]]))
  seen2 = []
  load_images_parallel([str(clean)], np.array([0]), res, num_frames=num_frames, truncated=seen2)
  assert seen2 == []


def test_video_build_keeps_a_truncated_frame_with_the_official_pixels_and_counts_it(tmp_path):
  pytest.importorskip("tensorflow")
  from x2vlm_jax.data import records
  from x2vlm_jax.data.finetune.video import load_frames

  path, frames = _frames_file(tmp_path)
  report = records.BuildReport()
  stored = load_frames(path)
  assert len(stored) == 3
  kept = np.asarray(Image.open(io.BytesIO(stored[0])).convert("RGB"))
  np.testing.assert_array_equal(kept, _official_decode(frames[0]))
  assert any(line.startswith("truncated_images: 1 ") for line in report.lines("video"))
