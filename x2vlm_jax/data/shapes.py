"""`shapes`: the embedded, procedurally generated dataset (no download).

Coloured geometric objects on textured backgrounds. Every caption is a function of the pixels
(colour, shape, size class and the spatial relation of object centres), so the tasks are learnable;
train and test are drawn from disjoint seed streams. Two TFDS datasets are written:
  shapes        image–text + region records (per-object boxes, caption "red circle", attribute size)
  shapes_video  clips of one object moving in a straight line ("a small red circle moving left")
Images are 128×128 JPEG (4:4:4, q95); the pipeline resizes to the model's image_res.
"""

import io
import json
import os
from typing import Dict

import numpy as np
from PIL import Image

from x2vlm_jax import fs

SIZE = 128
COLORS = {
  "red": (220, 40, 40),
  "green": (40, 170, 60),
  "blue": (40, 80, 225),
  "yellow": (240, 215, 40),
  "purple": (150, 60, 200),
  "orange": (245, 135, 25),
  "cyan": (40, 205, 215),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": (18, 26), "large": (34, 46)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
RELATIONS = ("left of", "right of", "above", "below")
# Words kept for later QA-style evaluation prompts; they cost nothing in a 200-entry vocab.
EXTRA_WORDS = (
  "the",
  "is",
  "there",
  "what",
  "color",
  "shape",
  "how",
  "many",
  "one",
  "two",
  "three",
  "yes",
  "no",
  "object",
  "objects",
  "image",
  "to",
  "in",
  "picture",
  "moving",
)
# VQA counts are answered with digits (VQA v2's convention; its normaliser maps number words to them).
DIGITS = tuple(str(i) for i in range(10))
# Words of the NLVR2-style two-image statements (x2vlm_jax/data/shapes_tasks.py); appended, so the ids
# of the words above do not change.
TASK_WORDS = ("has", "more", "than", "both", "images", "contain", "are")
VOCAB_SIZE = 200
VOCAB_FILE = os.path.join(os.path.dirname(__file__), "shapes_vocab.txt")
NAME, VIDEO_NAME = "shapes", "shapes_video"


def caption_words():
  words = ["a", "and", "of"] + list(SIZES) + list(COLORS) + list(SHAPES) + list(DIRECTIONS)
  words += [w for r in RELATIONS for w in r.split()] + list(EXTRA_WORDS) + list(DIGITS) + list(TASK_WORDS)
  return list(dict.fromkeys(words))


def vocab_tokens():
  toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + caption_words()
  return toks + [f"[unused{i}]" for i in range(VOCAB_SIZE - len(toks))]


def write_vocab(path: str = VOCAB_FILE) -> str:
  with open(path, "w") as f:
    f.write("\n".join(vocab_tokens()) + "\n")
  return path


# ---------------------------------------------------------------- rendering


def _background(rs):
  yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
  grey = rs.uniform(95, 185)
  base = grey + rs.uniform(-12, 12, size=3)  # low saturation, far from the object colours
  angle, freq = rs.uniform(0, np.pi), rs.uniform(0.05, 0.35)
  stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq) * rs.uniform(4, 14)
  img = base[None, None, :] + stripes[..., None] + rs.normal(0, 5, size=(SIZE, SIZE, 1))
  return img


def _mask(shape, cx, cy, r):
  yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
  dx, dy = xx - cx, yy - cy
  if shape == "circle":
    return dx * dx + dy * dy <= r * r
  if shape == "square":
    return (np.abs(dx) <= r) & (np.abs(dy) <= r)
  if shape == "diamond":
    return np.abs(dx) + np.abs(dy) <= r
  # triangle pointing up: inside the base, below both sloped edges
  return (dy <= r) & (dy >= -r + 2 * np.abs(dx))


def _box(mask):
  ys, xs = np.nonzero(mask)
  return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _relation(a, b):
  dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
  if abs(dx) >= abs(dy):
    return "left of" if dx > 0 else "right of"
  return "above" if dy > 0 else "below"


def _phrase(o):
  return f"a {o['size']} {o['color']} {o['shape']}"


def render_scene(rs):
  """One image: 1–3 non-overlapping objects with distinct colours → (uint8 image, objects, caption)."""
  img = _background(rs)
  k = rs.choice([1, 2, 2, 3])
  colors = rs.choice(list(COLORS), size=k, replace=False)
  objs, occupied = [], np.zeros((SIZE, SIZE), bool)
  for c in colors:
    for _ in range(50):
      size = rs.choice(list(SIZES))
      r = rs.uniform(*SIZES[size]) / 2
      cx, cy = rs.uniform(r + 2, SIZE - r - 2, size=2)
      shape = rs.choice(SHAPES)
      m = _mask(shape, cx, cy, r)
      grown = _mask("square", cx, cy, r + 4)
      if not (grown & occupied).any():
        break
    else:
      continue
    occupied |= grown
    img[m] = np.asarray(COLORS[c], np.float32)
    objs.append(dict(color=str(c), shape=str(shape), size=str(size), cx=cx, cy=cy, box=_box(m)))
  caption = _phrase(objs[0])
  if len(objs) >= 2:
    caption = f"{_phrase(objs[0])} {_relation(objs[0], objs[1])} {_phrase(objs[1])}"
  if len(objs) == 3:
    caption += f" and {_phrase(objs[2])}"
  return np.clip(img, 0, 255).astype(np.uint8), objs, caption


def render_clip(rs, num_frames):
  img0 = _background(rs)
  size = rs.choice(list(SIZES))
  r = rs.uniform(*SIZES[size]) / 2
  color, shape = rs.choice(list(COLORS)), rs.choice(SHAPES)
  direction = rs.choice(list(DIRECTIONS))
  (ux, uy), travel = DIRECTIONS[direction], rs.uniform(40, 70)
  sx, sy = rs.uniform(r + 2, SIZE - r - 2, size=2)
  # Start so that the whole path stays in the image.
  sx = np.clip(sx, r + 2 + max(0, -ux) * travel, SIZE - r - 2 - max(0, ux) * travel)
  sy = np.clip(sy, r + 2 + max(0, -uy) * travel, SIZE - r - 2 - max(0, uy) * travel)
  frames = []
  for t in range(num_frames):
    f = t / max(1, num_frames - 1)
    img = img0.copy()
    img[_mask(shape, sx + ux * travel * f, sy + uy * travel * f, r)] = COLORS[color]
    frames.append(encode(np.clip(img, 0, 255).astype(np.uint8)))
  return frames, f"a {size} {color} {shape} moving {direction}"


def encode(img: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=95, subsampling=0)
  return buf.getvalue()


def _image_examples(seed, n):
  rs = np.random.RandomState(seed)
  for _ in range(n):
    img, objs, caption = render_scene(rs)
    elems = [(o["box"], [f"{o['color']} {o['shape']}"], [o["size"]]) for o in objs]
    from x2vlm_jax.data import records  # tensorflow-datasets: only when writing

    yield records.image_example(encode(img), SIZE, SIZE, caption=[caption], elems=elems)


def _video_examples(seed, n, num_frames):
  rs = np.random.RandomState(seed)
  for _ in range(n):
    frames, caption = render_clip(rs, num_frames)
    yield {"frames": frames, "caption": caption}


def build(
  data_dir: str,
  num_train: int = 8000,
  num_test: int = 500,
  num_train_videos: int = 800,
  num_test_videos: int = 100,
  num_frames: int = 8,
  seed: int = 0,
) -> Dict[str, str]:
  """Writes `shapes` and `shapes_video` under data_dir (skipped when already built with these args)."""
  params = dict(
    num_train=num_train,
    num_test=num_test,
    num_train_videos=num_train_videos,
    num_test_videos=num_test_videos,
    num_frames=num_frames,
    seed=seed,
  )
  marker = fs.path(data_dir) / NAME / "build_params.json"
  if marker.exists() and json.loads(marker.read_text()) == params:
    return {"image": NAME, "video": VIDEO_NAME, "vocab_file": VOCAB_FILE}
  from x2vlm_jax.data import records  # tensorflow-datasets: only when writing (configs import this module)

  # Train and test use different seed streams, so no test scene is a train scene.
  w = records.DatasetWriter(data_dir, NAME, "image_text")
  w.write_split("train", _image_examples([seed, 0], num_train), num_train, "scenes")
  w.write_split("test", _image_examples([seed, 1], num_test), num_test, "scenes")
  w.finish()
  w = records.DatasetWriter(data_dir, VIDEO_NAME, "video", examples_per_shard=500)
  w.write_split("train", _video_examples([seed, 2], num_train_videos, num_frames), num_train_videos, "clips")
  w.write_split("test", _video_examples([seed, 3], num_test_videos, num_frames), num_test_videos, "clips")
  w.finish()
  marker.write_text(json.dumps(params))
  return {"image": NAME, "video": VIDEO_NAME, "vocab_file": VOCAB_FILE}


if __name__ == "__main__":
  import sys

  print(build(sys.argv[1]))
