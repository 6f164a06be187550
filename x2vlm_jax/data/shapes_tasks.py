"""Fine-tuning tasks on the embedded `shapes` scenes, written in the OFFICIAL annotation formats
(spec §4.2), so the demo and the tests exercise exactly the path a user takes with COCO & co.:
official JSON → tools/build_tfds.py (training) and → tools/evaluate.py / evaluators (evaluation).

    DATA_DIR/shapes_tasks/images/{train,test}_NNNNN.jpg
    DATA_DIR/shapes_tasks/retrieval_train.json   [{"image", "caption", "image_id"}, ...] one row per caption
    DATA_DIR/shapes_tasks/retrieval_test.json    [{"image", "caption": [...]}, ...]
    DATA_DIR/shapes_tasks/videos/{train,test}_NNNNN.json   one clip: a JSON list of base64 JPEG frames
    DATA_DIR/shapes_tasks/video_qa_{train,test}.jsonl       {"video_id", "question", "answer"} (MSRVTT-QA format)
    DATA_DIR/shapes_tasks/video_qa_ans2label.json            the training answer vocabulary
    DATA_DIR/shapes_tasks/video_retrieval_{train,test}.json  the retrieval format with "video" paths

Scenes come from their own seed streams (disjoint from the pre-training `shapes` splits). Every image
has several captions that describe it equally well (object order, relation from either side, with
and without sizes), as COCO images have five.
"""

import base64
import io
import json
import os
from typing import Dict, List

import numpy as np
from PIL import Image

from x2vlm_jax import fs
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


def build(data_dir: str, num_train: int = 2000, num_test: int = 300, seed: int = 0, num_train_videos: int = 600,
          num_test_videos: int = 150) -> str:
  """Writes the task annotations and images (skipped when already built with these arguments)."""
  root = task_dir(data_dir)
  params = dict(num_train=num_train, num_test=num_test, seed=seed, num_train_videos=num_train_videos,
                num_test_videos=num_test_videos, version=2)
  out = fs.path(root)
  marker = out / "build_params.json"
  if marker.exists() and json.loads(marker.read_text()) == params:
    return root
  (out / "images").mkdir(parents=True, exist_ok=True)
  splits = {}
  for split, stream, n in (("train", 10, num_train), ("test", 11, num_test)):
    scenes = []
    for i, (img, objs) in enumerate(_scenes([seed, stream], n)):
      name = f"images/{split}_{i:05d}.jpg"
      buf = io.BytesIO()
      Image.fromarray(img).save(buf, format="JPEG", quality=95, subsampling=0)
      (out / name).write_bytes(buf.getvalue())
      scenes.append((name, objs))
    splits[split] = scenes
  _write(out, "retrieval_train.json", [{"image": name, "caption": cap, "image_id": i}
                                         for i, (name, objs) in enumerate(splits["train"])
                                         for cap in captions(objs)])
  _write(out, "retrieval_test.json", [{"image": name, "caption": captions(objs)}
                                        for name, objs in splits["test"]])
  _write_video_tasks(out, seed, num_train_videos, num_test_videos)
  marker.write_text(json.dumps(params))
  return root


VIDEO_FRAMES = 6


def video_questions(rs, size: str, color: str, shape: str, direction: str):
  """Questions a clip determines (words of the shapes vocabulary): motion, colour, shape."""
  asked = rs.choice(list(shapes.DIRECTIONS))
  return [(f"is the {color} {shape} moving {asked}", "yes" if asked == direction else "no"),
          (f"what color is the object moving {direction}", color),
          (f"what shape is the {size} {color} object", shape)]


def _write_video_tasks(out, seed: int, num_train: int, num_test: int) -> None:
  (out / "videos").mkdir(parents=True, exist_ok=True)
  answers = set()
  for split, stream, n in (("train", 12, num_train), ("test", 13, num_test)):
    rs = np.random.RandomState([seed, stream])
    qa, ret = [], []
    for i in range(n):
      frames, caption = shapes.render_clip(rs, VIDEO_FRAMES)
      vid = f"{split}_{i:05d}"
      _write(out, f"videos/{vid}.json", [base64.b64encode(f).decode() for f in frames])
      _, size, color, shape, _, direction = caption.split()
      for q, a in video_questions(rs, size, color, shape, direction):
        qa.append({"video_id": vid, "question": q, "answer": a})
        if split == "train":
          answers.add(a)
      caps = [caption, f"a {color} {shape} moving {direction}", f"the {size} {color} {shape} is moving {direction}"]
      if split == "train":
        ret += [{"video": f"videos/{vid}.json", "caption": c, "image_id": vid} for c in caps]
      else:
        ret.append({"video": f"videos/{vid}.json", "caption": caps})
    (out / f"video_qa_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    _write(out, f"video_retrieval_{split}.json", ret)
  _write(out, "video_qa_ans2label.json", {a: i for i, a in enumerate(sorted(answers))})


def _write(out, name: str, obj) -> None:
  (out / name).write_text(json.dumps(obj))
