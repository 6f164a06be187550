"""Fine-tuning tasks on the embedded `shapes` scenes, written in the OFFICIAL annotation formats
(spec §4.2), so the demo and the tests exercise exactly the path a user takes with COCO & co.:
official JSON → tools/build_tfds.py (training) and → tools/evaluate.py / evaluators (evaluation).

    DATA_DIR/shapes_tasks/images/{train,test}_NNNNN.jpg
    DATA_DIR/shapes_tasks/retrieval_train.json   [{"image", "caption", "image_id"}, ...] one row per caption
    DATA_DIR/shapes_tasks/retrieval_test.json    [{"image", "caption": [...]}, ...]
    DATA_DIR/shapes_tasks/grounding_{train,test}.json  [{"image", "text", "ref_id", "bbox", "split"}, ...]
    DATA_DIR/shapes_tasks/nlvr_{train,dev,test}.json   [{"images": [left, right], "sentence", "label"}, ...]

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
  params = dict(num_train=num_train, num_test=num_test, seed=seed, version=2)
  marker = os.path.join(root, "build_params.json")
  if os.path.exists(marker):
    with open(marker) as f:
      if json.load(f) == params:
        return root
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  splits = {}
  for split, stream, n in (("train", 10, num_train), ("test", 11, num_test)):
    scenes = []
    for i, (img, objs) in enumerate(_scenes([seed, stream], n)):
      name = f"images/{split}_{i:05d}.jpg"
      Image.fromarray(img).save(os.path.join(root, name), format="JPEG", quality=95, subsampling=0)
      scenes.append((name, objs))
    splits[split] = scenes
  _write(root, "retrieval_train.json", [{"image": name, "caption": cap, "image_id": i}
                                         for i, (name, objs) in enumerate(splits["train"])
                                         for cap in captions(objs)])
  _write(root, "retrieval_test.json", [{"image": name, "caption": captions(objs)}
                                        for name, objs in splits["test"]])
  _write_grounding(root, splits, seed)
  _write_nlvr(root, splits, seed)
  with open(marker, "w") as f:
    json.dump(params, f)
  return root


def _write(root: str, name: str, obj) -> None:
  with open(os.path.join(root, name), "w") as f:
    json.dump(obj, f)


# ------------------------------------------------------------------------ grounding (RefCOCO+ format)

def _referents(objs: List[Dict], shape=None, color=None, size=None, rel=None, anchor=None) -> List[int]:
  """Indices of the objects an expression's predicates select (the uniqueness check)."""
  out = []
  for i, o in enumerate(objs):
    if (shape and o["shape"] != shape) or (color and o["color"] != color) or (size and o["size"] != size):
      continue
    if rel is not None and (o is anchor or shapes._relation(o, anchor) != rel):  # noqa: SLF001
      continue
    out.append(i)
  return out


def refer_expressions(objs: List[Dict], i: int) -> List[str]:
  """Expressions that pick out object i and no other object of the scene.

  Forms: the pre-training region text ("large red circle"), colour + shape ("the red circle"), size +
  shape and shape alone when that is unique ("the large square", "the triangle"), and a relation to
  another object when it is unique ("the square left of the blue triangle")."""
  o = objs[i]
  out = [f"{o['size']} {o['color']} {o['shape']}", f"the {o['color']} {o['shape']}"]
  if _referents(objs, shape=o["shape"], size=o["size"]) == [i]:
    out.append(f"the {o['size']} {o['shape']}")
  if _referents(objs, shape=o["shape"]) == [i]:
    out.append(f"the {o['shape']}")
  for other in objs:
    if other is o:
      continue
    rel = shapes._relation(o, other)  # noqa: SLF001 — o is `rel` the other object
    if _referents(objs, shape=o["shape"], rel=rel, anchor=other) == [i]:
      out.append(f"the {o['shape']} {rel} the {other['color']} {other['shape']}")
  return out


def _write_grounding(root: str, splits, seed: int) -> None:
  """One record per (object, expression), as RefCOCO+ has one per sentence; the GT box [x, y, w, h]
  (pixels of the 128-px image) sits in the record (our REFER-free format, docs/grounding.md). Held-out
  scenes: the first half is split "val", the second "test"."""
  rs = np.random.RandomState([seed, 12])
  ref_id = 0
  for split, scenes in (("train", splits["train"]), ("test", splits["test"])):
    rows = []
    for k, (name, objs) in enumerate(scenes):
      part = split if split == "train" else ("val" if k < len(scenes) // 2 else "test")
      for i, o in enumerate(objs):
        exprs = refer_expressions(objs, i)
        if split == "test" and len(exprs) > 3:  # a bounded evaluation set: 3 expressions per object
          exprs = [exprs[j] for j in sorted(rs.choice(len(exprs), 3, replace=False))]
        rows += [{"image": name, "text": e, "ref_id": ref_id, "bbox": list(o["box"]), "split": part}
                 for e in exprs]
        ref_id += 1
    _write(root, f"grounding_{split}.json", rows)


# ------------------------------------------------------------------------ NLVR2-style statements

def _statements(left: List[Dict], right: List[Dict]) -> Dict[str, List]:
  """{template family: [(statement, truth), ...]} about a pair of scenes (left, right)."""
  sides = {"left": left, "right": right}
  count = lambda objs, c: sum(o["color"] == c for o in objs)  # noqa: E731
  fam = {"more objects": [], "more colour": [], "colour in": [], "shape in": [], "how many": [], "both": []}
  for a, b in (("left", "right"), ("right", "left")):
    fam["more objects"].append((f"the {a} image has more objects than the {b} image",
                                len(sides[a]) > len(sides[b])))
    for c in shapes.COLORS:
      fam["more colour"].append((f"the {a} image has more {c} objects than the {b} image",
                                 count(sides[a], c) > count(sides[b], c)))
  for side, objs in sides.items():
    for c in shapes.COLORS:
      fam["colour in"].append((f"there is a {c} object in the {side} image", count(objs, c) > 0))
    for shp in shapes.SHAPES:
      fam["shape in"].append((f"there is a {shp} in the {side} image", any(o["shape"] == shp for o in objs)))
    for n, words in ((1, "is one object"), (2, "are two objects"), (3, "are three objects")):
      fam["how many"].append((f"there {words} in the {side} image", len(objs) == n))
  for shp in shapes.SHAPES:
    fam["both"].append((f"both images contain a {shp}",
                        all(any(o["shape"] == shp for o in objs) for objs in (left, right))))
  return fam


def _write_nlvr(root: str, splits, seed: int, pairs_per_image: int = 2) -> None:
  """Pairs of distinct scenes with one statement each. The label and the template family are drawn
  first (balanced classes; a family says nothing about the label), then pairs of scenes until one
  has a statement of that family with that truth value. Held-out pairs: the first half "dev", the
  second "test"."""
  rs = np.random.RandomState([seed, 13])
  for split, scenes in (("train", splits["train"]), ("test", splits["test"])):
    rows = []
    n = len(scenes)
    while len(rows) < pairs_per_image * n:
      label = bool(rs.randint(2))
      family = sorted(_statements([], []))[rs.randint(6)]
      for _ in range(1000):
        i, j = rs.choice(n, 2, replace=False)
        options = [s for s, truth in _statements(scenes[i][1], scenes[j][1])[family] if truth == label]
        if options:
          break
      else:
        continue
      rows.append({"images": [scenes[i][0], scenes[j][0]], "sentence": options[rs.randint(len(options))],
                   "label": label})
    if split == "train":
      _write(root, "nlvr_train.json", rows)
    else:
      _write(root, "nlvr_dev.json", rows[:len(rows) // 2])
      _write(root, "nlvr_test.json", rows[len(rows) // 2:])
