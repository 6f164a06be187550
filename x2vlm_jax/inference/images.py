"""The official test transform with PIL (spec §4.3): RGB, bicubic resize to R×R (aspect not kept),
CLIP normalisation. torchvision's Resize on a PIL image is PIL's bicubic resize, antialiased when
shrinking, so this is the official evaluation input bit for bit (the uint8 result)."""

import io
from typing import Union

import numpy as np
from etils import epath
from PIL import Image

from x2vlm_jax.models.presets import CLIP_MEAN, CLIP_STD

_MEAN = np.asarray(CLIP_MEAN, np.float32)
_STD = np.asarray(CLIP_STD, np.float32)


class BadImage(ValueError):
  """An image file that is missing or does not decode (the message names the file)."""


def resize_uint8(image: Image.Image, image_res: int) -> np.ndarray:
  return np.asarray(image.convert("RGB").resize((image_res, image_res), Image.BICUBIC), np.uint8)


def normalize(uint8_images: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] → float32 CLIP-normalised."""
  return (np.asarray(uint8_images, np.float32) / 255.0 - _MEAN) / _STD


def read_image(source: Union[str, bytes], image_res: int, return_size: bool = False):
  """A path (local or gs://, through epath) or encoded bytes → uint8 [R, R, 3] (test transform), and
  with `return_size` also the ORIGINAL (width, height) (grounding scales its boxes back to it)."""
  try:
    data = source if isinstance(source, bytes) else epath.Path(source).read_bytes()
  except (OSError, FileNotFoundError) as e:
    raise BadImage(f"image {source!r}: cannot be read ({type(e).__name__}: {e})") from e
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      pixels = resize_uint8(im, image_res)
      return (pixels, im.size) if return_size else pixels
  except Exception as e:  # noqa: BLE001 — PIL raises many types for bad bytes
    name = "<bytes>" if isinstance(source, bytes) else repr(source)
    raise BadImage(f"image {name}: does not decode ({type(e).__name__}: {e})") from e
