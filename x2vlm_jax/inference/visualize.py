"""Pictures for the notebook: grounding boxes on images, and images with text under them (the best
captions of each image with their scores, VQA answers, generated captions). matplotlib is imported
only when drawing.

boxes = m.predict_box(image_embeds, text_embeds, text_mask)      # (cx, cy, w, h) in [0, 1]
draw_boxes(images, boxes, phrases)                               # one panel per image
show_with_text(images, ["line 1\nline 2", ...], titles)          # one panel per image, text below
"""

from typing import Optional, Sequence

import numpy as np


def boxes_to_pixels(boxes, width: int, height: int) -> np.ndarray:
  """Normalised (cx, cy, w, h) → pixel (x, y, w, h) of an image of the ORIGINAL size (the official
  grounding evaluation scales by the original width and height, docs/reference.md §5.4)."""
  b = np.asarray(boxes, np.float64).reshape(-1, 4)
  w, h = b[:, 2] * width, b[:, 3] * height
  return np.stack([b[:, 0] * width - w / 2, b[:, 1] * height - h / 2, w, h], axis=1)


def _as_array(image) -> np.ndarray:
  from PIL import Image

  if isinstance(image, str):  # local or gs://
    import io

    from etils import epath

    image = Image.open(io.BytesIO(epath.Path(image).read_bytes()))
  return np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)


def draw_boxes(
  images: Sequence,
  boxes,
  labels: Optional[Sequence[str]] = None,
  *,
  columns: int = 4,
  size: float = 3.0,
  color: str = "lime",
):
  """One panel per image (uint8 arrays, PIL images or paths) with its predicted box and label;
  → the matplotlib figure."""
  import matplotlib.pyplot as plt
  from matplotlib import patches

  n = len(images)
  boxes = np.asarray(boxes).reshape(n, 4)
  cols = min(columns, n)
  rows = (n + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
  for ax in axes.ravel()[n:]:
    ax.axis("off")
  for i, (ax, image) in enumerate(zip(axes.ravel(), images)):
    pixels = _as_array(image)
    x, y, w, h = boxes_to_pixels(boxes[i], pixels.shape[1], pixels.shape[0])[0]
    ax.imshow(pixels)
    ax.add_patch(patches.Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=2))
    if labels is not None:
      ax.set_title(labels[i], fontsize=9)
    ax.axis("off")
  fig.tight_layout()
  return fig


def _grid(n: int, columns: int, width: float, height: float):
  import matplotlib.pyplot as plt

  cols = min(columns, n)
  rows = (n + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
  for ax in axes.ravel()[n:]:
    ax.axis("off")
  return fig, axes.ravel()[:n]


def show_with_text(
  images: Sequence,
  texts: Sequence[str],
  titles: Optional[Sequence[str]] = None,
  *,
  columns: int = 4,
  size: float = 3.0,
  fontsize: int = 8,
):
  """One panel per image (uint8 arrays, PIL images or paths) with an optional title above and a
  (multi-line) text below it, e.g. its best captions with their scores; each line is wrapped to the
  panel's width (a long caption would otherwise push the panels apart). → the matplotlib figure."""
  import textwrap

  if len(texts) != len(images):
    raise ValueError(f"{len(images)} images but {len(texts)} texts")
  width = max(12, int(size * 72 / (0.6 * fontsize)))  # characters per line: ~0.6 em per character
  wrapped = ["\n".join(textwrap.fill(line, width) for line in str(t).split("\n")) for t in texts]
  lines = max(w.count("\n") + 1 for w in wrapped)
  fig, axes = _grid(len(images), columns, size, size + lines * fontsize * 1.4 / 72 + 0.3)
  for i, (ax, image) in enumerate(zip(axes, images)):
    ax.imshow(_as_array(image))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(wrapped[i], fontsize=fontsize, loc="left")
    if titles is not None:
      ax.set_title(titles[i], fontsize=fontsize + 1)
  fig.tight_layout()
  return fig
