"""Grounding boxes on images (notebooks). matplotlib is imported only when drawing.

boxes = m.predict_box(image_embeds, text_embeds, text_mask)      # (cx, cy, w, h) in [0, 1]
draw_boxes(images, boxes, phrases)                               # one panel per image
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
