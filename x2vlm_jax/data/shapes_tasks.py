"""Fine-tuning tasks on the embedded `shapes` scenes, written in the OFFICIAL annotation formats
(spec §4.2), so the demo and the tests exercise exactly the path a user takes with COCO & co.:
official JSON → tools/build_tfds.py (training) and → tools/evaluate.py / evaluators (evaluation).

    DATA_DIR/shapes_tasks/images/{train,test}_NNNNN.jpg
    DATA_DIR/shapes_tasks/retrieval_train.json   [{"image", "caption", "image_id"}, ...] one row per caption
    DATA_DIR/shapes_tasks/retrieval_test.json    [{"image", "caption": [...]}, ...]

Scenes come from their own seed streams (disjoint from the pre-training `shapes` splits). Every image
has several captions that describe it equally well (object order, relation from either side, with
and without sizes), as COCO images have five.
"""

import json
import os
from typing import Dict, List

import numpy as np
from PIL import Image

from x2vlm_jax.data import shapes
from x2vlm_jax.progress import Progress

NAME = "shapes_tasks"
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def task_dir(data_dir: str) -> str:
  return os.path.join(data_dir, NAME)


def _short(o) -> str:
  return f"a {o['color']} {o['shape']}"


def captions(objs: List[Dict]) -> List[str]:
  """All the captions of a scene (the first is the pre-training caption's form)."""
  p = shapes._phrase  # noqa: SLF001 — the same phrase the pre-training captions use
  if len(objs) == 1:
    return [p(objs[0]), _short(objs[0]), f"there is {p(objs[0])}"]
  rel = shapes._relation(objs[0], objs[1])  # noqa: SLF001
  tail = [f" and {p(objs[2])}"] if len(objs) == 3 else [""]
  tail_short = [f" and {_short(objs[2])}"] if len(objs) == 3 else [""]
  return [f"{p(objs[0])} {rel} {p(objs[1])}{tail[0]}",
          f"{p(objs[1])} {_INVERSE[rel]} {p(objs[0])}{tail[0]}",
          f"{_short(objs[0])} {rel} {_short(objs[1])}{tail_short[0]}",
          f"{_short(objs[1])} {_INVERSE[rel]} {_short(objs[0])}{tail_short[0]}"]


def _scenes(seed, n: int):
  rs = np.random.RandomState(seed)
  for _ in range(n):
    img, objs, _ = shapes.render_scene(rs)
    yield img, objs


def build(data_dir: str, num_train: int = 2000, num_test: int = 300, seed: int = 0) -> str:
  """Writes the task annotations and images (skipped when already built with these arguments)."""
  root = task_dir(data_dir)
  params = dict(num_train=num_train, num_test=num_test, seed=seed, version=1)
  marker = os.path.join(root, "build_params.json")
  if os.path.exists(marker):
    with open(marker) as f:
      if json.load(f) == params:
        return root
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  splits = {}
  for split, stream, n in (("train", 10, num_train), ("test", 11, num_test)):
    scenes = []
    progress = Progress(f"{NAME}/{split}", n, unit="images")
    for i, (img, objs) in enumerate(progress.wrap(_scenes([seed, stream], n))):
      name = f"images/{split}_{i:05d}.jpg"
      Image.fromarray(img).save(os.path.join(root, name), format="JPEG", quality=95, subsampling=0)
      scenes.append((name, objs))
    progress.done()
    splits[split] = scenes
  _write(root, "retrieval_train.json", [{"image": name, "caption": cap, "image_id": i}
                                         for i, (name, objs) in enumerate(splits["train"])
                                         for cap in captions(objs)])
  _write(root, "retrieval_test.json", [{"image": name, "caption": captions(objs)}
                                        for name, objs in splits["test"]])
  with open(marker, "w") as f:
    json.dump(params, f)
  return root


def _write(root: str, name: str, obj) -> None:
  with open(os.path.join(root, name), "w") as f:
    json.dump(obj, f)
