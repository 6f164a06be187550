"""The official test transform with PIL (docs/reference.md §4.3): RGB, bicubic resize to R×R (aspect not kept),
CLIP normalisation. torchvision's Resize on a PIL image is PIL's bicubic resize, antialiased when
shrinking, so this is the official evaluation input bit for bit (the uint8 result)."""

import io
import threading
from typing import Tuple, Union

import numpy as np
from etils import epath
from PIL import Image, ImageFile

from x2vlm_jax.models.presets import CLIP_MEAN, CLIP_STD

_MEAN = np.asarray(CLIP_MEAN, np.float32)
_STD = np.asarray(CLIP_STD, np.float32)


class BadImage(ValueError):
  """An image file that is missing or does not decode (the message names the file)."""


_TRUNCATED_LOCK = threading.Lock()


def open_image(data: bytes) -> Tuple[Image.Image, bool]:
  """Encoded bytes → (loaded PIL image, whether the file was truncated).

  The official loaders set `ImageFile.LOAD_TRUNCATED_IMAGES = True` (dataset/*.py), so a truncated
  file decodes (the missing part as PIL leaves it) instead of failing. We decode strictly first and
  only a file that fails as truncated is decoded again with that flag, so it can be counted. (The flag
  is PIL-global: while one truncated file is re-decoded, another thread's truncated file may also pass
  uncounted; its pixels are the official ones either way.)"""
  try:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im, False
  except OSError as e:
    if "truncated" not in str(e):
      raise
  with _TRUNCATED_LOCK:
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
      im = Image.open(io.BytesIO(data))
      im.load()
    finally:
      ImageFile.LOAD_TRUNCATED_IMAGES = before
  return im, True


def resize_uint8(image: Image.Image, image_res: int) -> np.ndarray:
  return np.asarray(image.convert("RGB").resize((image_res, image_res), Image.BICUBIC), np.uint8)


def normalize(uint8_images: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] → float32 CLIP-normalised."""
  return (np.asarray(uint8_images, np.float32) / 255.0 - _MEAN) / _STD


def read_image(source: Union[str, bytes], image_res: int, return_size: bool = False, truncated: list = None):
  """A path (local or gs://, through epath) or encoded bytes → uint8 [R, R, 3] (test transform), and
  with `return_size` also the ORIGINAL (width, height) (grounding scales its boxes back to it).
  A truncated file is decoded as officially (`open_image`) and, when `truncated` is given, appended to it."""
  try:
    data = source if isinstance(source, bytes) else epath.Path(source).read_bytes()
  except (OSError, FileNotFoundError) as e:
    raise BadImage(f"image {source!r}: cannot be read ({type(e).__name__}: {e})") from e
  try:
    im, was_truncated = open_image(data)
    with im:
      if was_truncated and truncated is not None:
        truncated.append("<bytes>" if isinstance(source, bytes) else str(source))
      pixels = resize_uint8(im, image_res)
      return (pixels, im.size) if return_size else pixels
  except Exception as e:  # noqa: BLE001 — PIL raises many types for bad bytes
    name = "<bytes>" if isinstance(source, bytes) else repr(source)
    raise BadImage(f"image {name}: does not decode ({type(e).__name__}: {e})") from e


def eval_frame_ids(n: int, num_frames: int):
  """The official evaluation frame choice (`sample_frame_ids(n, F, training=False)`, docs/reference.md §2.4):
  n ≤ F: i mod n, sorted; n > F: the first frame of each of F contiguous segments, the first
  n − F·⌊n/F⌋ segments one frame longer."""
  if n <= 0:
    raise ValueError("video: no frames")
  if n <= num_frames:
    return sorted(i % n for i in range(num_frames))
  stride, extra = n // num_frames, n - num_frames * (n // num_frames)
  return [j * stride + min(j, extra) for j in range(num_frames)]


def read_video(source, num_frames: int, image_res: int, truncated: list = None) -> np.ndarray:
  """A video's frames file (the official JSON list of base64-encoded frames, local or gs://) or the
  list itself → uint8 [F, R, R, 3]: the official evaluation frames, each with the test transform.
  A truncated frame is decoded as the official video loaders do (dataset/__init__.py imports
  pretrain_dataset.py and retrieval_dataset.py, which set `ImageFile.LOAD_TRUNCATED_IMAGES = True` for the
  whole process, video QA included) and, when `truncated` is given, appended to it as
  "<video>#<frame index>" (once per distinct frame)."""
  import base64
  import json

  frames = source
  if isinstance(source, str):
    try:
      frames = json.loads(epath.Path(source).read_text())
    except (OSError, FileNotFoundError, ValueError) as e:
      raise BadImage(f"video {source!r}: cannot be read as a JSON list of frames ({type(e).__name__}: {e})") from e
  if not isinstance(frames, list) or not frames:
    raise BadImage(f"video {source if isinstance(source, str) else '<frames>'}: expected a non-empty list of frames")
  name = source if isinstance(source, str) else "<frames>"
  try:
    decoded = {}  # a short video repeats frames (i mod n): each is decoded, and counted, once
    for i in eval_frame_ids(len(frames), num_frames):
      if i not in decoded:
        seen = []
        decoded[i] = read_image(base64.b64decode(frames[i]), image_res, truncated=seen)
        if seen and truncated is not None:
          truncated.append(f"{name}#{i}")
    return np.stack([decoded[i] for i in eval_frame_ids(len(frames), num_frames)])
  except (ValueError, TypeError) as e:
    raise BadImage(f"video {source if isinstance(source, str) else '<frames>'}: {e}") from e
