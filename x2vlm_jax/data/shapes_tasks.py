"""Fine-tuning tasks on the embedded `shapes` scenes, written in the OFFICIAL annotation formats
(docs/reference.md §4.2), so the demo and the tests exercise exactly the path a user takes with COCO & co.:
official JSON → tools/build_tfds.py (training) and → tools/evaluate.py / evaluators (evaluation).

    DATA_DIR/shapes_tasks/images/{train,test}_NNNNN.jpg
    DATA_DIR/shapes_tasks/retrieval_train.json   [{"image", "caption", "image_id"}, ...] one row per caption
    DATA_DIR/shapes_tasks/retrieval_test.json    [{"image", "caption": [...]}, ...]
    DATA_DIR/shapes_tasks/grounding_{train,test}.json  [{"image", "text", "ref_id", "bbox", "split"}, ...]
    DATA_DIR/shapes_tasks/nlvr_{train,dev,test}.json   [{"images": [left, right], "sentence", "label"}, ...]
    DATA_DIR/shapes_tasks/vqa_train.json         [{"question_id", "image", "question", "answer", "dataset"}, ...]
    DATA_DIR/shapes_tasks/vqa_test.json          the same with "answer_type" (VQA v2 val style)
    DATA_DIR/shapes_tasks/answer_list.json       the training answers, most frequent first
    DATA_DIR/shapes_tasks/captioning_train.json  Karpathy train [{"image", "caption", "image_id"}, ...]
    DATA_DIR/shapes_tasks/captioning_test.json   Karpathy test [{"image", "caption": [...]}, ...]
    DATA_DIR/shapes_tasks/captioning_test_gt.json  COCO-format ground truth (image id from the file name)
    DATA_DIR/shapes_tasks/videos/{train,test}_NNNNN.json   one clip: a JSON list of base64 JPEG frames
    DATA_DIR/shapes_tasks/video_qa_{train,test}.jsonl       {"video_id", "question", "answer"} (MSRVTT-QA format)
    DATA_DIR/shapes_tasks/video_qa_ans2label.json            the training answer vocabulary
    DATA_DIR/shapes_tasks/video_retrieval_{train,test}.json  the retrieval format with "video" paths

Scenes come from their own seed streams (disjoint from the pre-training `shapes` splits). Every image
has several captions that describe it equally well (object order, relation from either side, with
and without sizes), as COCO images have five.

VQA questions are generated from the scene with determined answers: count ("how many objects in the
image" → "1".."3", digits as in VQA v2), colour of a shape that occurs once, shape of a colour
(colours are unique in a scene), existence ("is there a red circle" → yes/no, half of them false)
and relation ("is the red circle left of the blue square" → yes/no, the false ones asking the
inverse relation). Answers are written like VQA v2's 10 annotators; count questions get 8 × "2" +
2 × "two" (unique answers weighted 0.8 / 0.2, and a word the official normaliser maps to the digit).
Every fifth training scene is written in VG QA style instead (`dataset` "vg", one answer string,
weight 0.5), as the official training mixes vqa_train with vg_qa.
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
from x2vlm_jax.progress import Progress

NAME = "shapes_tasks"
VERSION = 4  # of what build() writes: bumped when a task's files change (embedded.py rebuilds older ones)
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
  return [
    f"{p(objs[0])} {rel} {p(objs[1])}{tail[0]}",
    f"{p(objs[1])} {_INVERSE[rel]} {p(objs[0])}{tail[0]}",
    f"{_short(objs[0])} {rel} {_short(objs[1])}{tail_short[0]}",
    f"{_short(objs[1])} {_INVERSE[rel]} {_short(objs[0])}{tail_short[0]}",
  ]


NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
ANSWER_TYPES = {"count": "number", "color": "other", "shape": "other", "exists": "yes/no", "relation": "yes/no"}


def questions(objs: List[Dict], rs) -> List[Dict]:
  """The scene's questions: [{"kind", "question", "answer"}] (see the module doc)."""
  out = [dict(kind="count", question="how many objects in the image?", answer=str(len(objs)))]
  shapes_here = [o["shape"] for o in objs]
  unique = [o for o in objs if shapes_here.count(o["shape"]) == 1]
  if unique:
    o = unique[rs.randint(len(unique))]
    out.append(dict(kind="color", question=f"What color is the {o['shape']}?", answer=o["color"]))
  o = objs[rs.randint(len(objs))]
  out.append(dict(kind="shape", question=f"What shape is the {o['color']} object?", answer=o["shape"]))
  if rs.rand() < 0.5:
    o = objs[rs.randint(len(objs))]
    color, shape, answer = o["color"], o["shape"], "yes"
  else:
    present = {(x["color"], x["shape"]) for x in objs}
    absent = [(c, sh) for c in shapes.COLORS for sh in shapes.SHAPES if (c, sh) not in present]
    color, shape = absent[rs.randint(len(absent))]
    answer = "no"
  out.append(dict(kind="exists", question=f"Is there a {color} {shape}?", answer=answer))
  if len(objs) >= 2:
    i, j = rs.choice(len(objs), size=2, replace=False)
    a, b = objs[i], objs[j]
    rel = shapes._relation(a, b)  # noqa: SLF001 — the relation the captions use
    asked, answer = (rel, "yes") if rs.rand() < 0.5 else (_INVERSE[rel], "no")
    out.append(
      dict(
        kind="relation",
        question=f"Is the {a['color']} {a['shape']} {asked} the {b['color']} {b['shape']}?",
        answer=answer,
      )
    )
  return out


def _annotators(kind: str, answer: str) -> List[str]:
  if kind == "count":
    return [answer] * 8 + [NUMBER_WORDS[int(answer)]] * 2
  return [answer] * 10


def vqa_records(scenes, seed, *, split: str) -> List[Dict]:
  rs = np.random.RandomState(seed)
  out = []
  for s_idx, (name, objs) in enumerate(scenes):
    vg = split == "train" and s_idx % 5 == 4
    for q_idx, q in enumerate(questions(objs, rs)):
      rec = {
        "question_id": (0 if split == "train" else 1_000_000) + 10 * s_idx + q_idx,
        "image": name,
        "question": q["question"],
      }
      if vg:
        rec.update(answer=q["answer"], dataset="vg")
      else:
        rec.update(answer=_annotators(q["kind"], q["answer"]), dataset="vqa")
      if split != "train":
        rec["answer_type"] = ANSWER_TYPES[q["kind"]]
      out.append(rec)
  return out


def answer_list(train_records) -> List[str]:
  counts: Dict[str, int] = {}
  for r in train_records:
    for a in [r["answer"]] if isinstance(r["answer"], str) else r["answer"]:
      counts[a] = counts.get(a, 0) + 1
  return sorted(counts, key=lambda a: (-counts[a], a))


def write_vqa(out, splits, seed: int) -> None:
  train = vqa_records(splits["train"], [seed, 12], split="train")
  _write(out, "vqa_train.json", train)
  _write(out, "vqa_test.json", vqa_records(splits["test"], [seed, 13], split="test"))
  _write(out, "answer_list.json", answer_list(train))


def write_captioning(out, splits) -> None:
  """Karpathy format: train rows like retrieval's; test images with their captions; the COCO-format
  ground truth keyed by the image id the official reader parses from the file name."""
  from x2vlm_jax.text_clean import image_id_from_name

  _write(
    out,
    "captioning_train.json",
    [
      {"image": name, "caption": cap, "image_id": i}
      for i, (name, objs) in enumerate(splits["train"])
      for cap in captions(objs)
    ],
  )
  _write(out, "captioning_test.json", [{"image": name, "caption": captions(objs)} for name, objs in splits["test"]])
  gt = [(image_id_from_name(name), cap) for name, objs in splits["test"] for cap in captions(objs)]
  _write(
    out,
    "captioning_test_gt.json",
    {
      "images": [{"id": i} for i in sorted({i for i, _ in gt})],
      "annotations": [{"image_id": i, "caption": c, "id": k} for k, (i, c) in enumerate(gt)],
    },
  )


def _scenes(seed, n: int):
  rs = np.random.RandomState(seed)
  for _ in range(n):
    img, objs, _ = shapes.render_scene(rs)
    yield img, objs


def build(
  data_dir: str,
  num_train: int = 2000,
  num_test: int = 300,
  seed: int = 0,
  num_train_videos: int = 600,
  num_test_videos: int = 150,
) -> str:
  """Writes the task annotations and images (skipped when already built with these arguments)."""
  root = task_dir(data_dir)
  params = dict(
    num_train=num_train,
    num_test=num_test,
    seed=seed,
    num_train_videos=num_train_videos,
    num_test_videos=num_test_videos,
    version=VERSION,
  )
  out = fs.path(root)
  marker = out / "build_params.json"
  if marker.exists() and json.loads(marker.read_text()) == params:
    return root
  (out / "images").mkdir(parents=True, exist_ok=True)
  splits = {}
  for split, stream, n in (("train", 10, num_train), ("test", 11, num_test)):
    scenes = []
    progress = Progress(f"{NAME}/{split}", n, unit="images")
    for i, (img, objs) in enumerate(progress.wrap(_scenes([seed, stream], n))):
      name = f"images/{split}_{i:05d}.jpg"
      buf = io.BytesIO()
      Image.fromarray(img).save(buf, format="JPEG", quality=95, subsampling=0)
      (out / name).write_bytes(buf.getvalue())
      scenes.append((name, objs))
    progress.done()
    splits[split] = scenes
  _write(
    out,
    "retrieval_train.json",
    [
      {"image": name, "caption": cap, "image_id": i}
      for i, (name, objs) in enumerate(splits["train"])
      for cap in captions(objs)
    ],
  )
  _write(out, "retrieval_test.json", [{"image": name, "caption": captions(objs)} for name, objs in splits["test"]])
  write_vqa(out, splits, seed)
  write_captioning(out, splits)
  _write_video_tasks(out, seed, num_train_videos, num_test_videos)
  _write_grounding(out, splits, seed)
  _write_nlvr(out, splits, seed)
  marker.write_text(json.dumps(params))
  return root


VIDEO_FRAMES = 6


def video_questions(rs, size: str, color: str, shape: str, direction: str):
  """Questions a clip determines (words of the shapes vocabulary): motion, colour, shape."""
  asked = rs.choice(list(shapes.DIRECTIONS))
  return [
    (f"is the {color} {shape} moving {asked}", "yes" if asked == direction else "no"),
    (f"what color is the object moving {direction}", color),
    (f"what shape is the {size} {color} object", shape),
  ]


def _write_video_tasks(out, seed: int, num_train: int, num_test: int) -> None:
  (out / "videos").mkdir(parents=True, exist_ok=True)
  answers = set()
  for split, stream, n in (("train", 20, num_train), ("test", 21, num_test)):
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


def _write_grounding(out, splits, seed: int) -> None:
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
        rows += [{"image": name, "text": e, "ref_id": ref_id, "bbox": list(o["box"]), "split": part} for e in exprs]
        ref_id += 1
    _write(out, f"grounding_{split}.json", rows)


# ------------------------------------------------------------------------ NLVR2-style statements


def _statements(left: List[Dict], right: List[Dict]) -> Dict[str, List]:
  """{template family: [(statement, truth), ...]} about a pair of scenes (left, right)."""
  sides = {"left": left, "right": right}
  count = lambda objs, c: sum(o["color"] == c for o in objs)  # noqa: E731
  fam = {"more objects": [], "more colour": [], "colour in": [], "shape in": [], "how many": [], "both": []}
  for a, b in (("left", "right"), ("right", "left")):
    fam["more objects"].append((f"the {a} image has more objects than the {b} image", len(sides[a]) > len(sides[b])))
    for c in shapes.COLORS:
      fam["more colour"].append(
        (f"the {a} image has more {c} objects than the {b} image", count(sides[a], c) > count(sides[b], c))
      )
  for side, objs in sides.items():
    for c in shapes.COLORS:
      fam["colour in"].append((f"there is a {c} object in the {side} image", count(objs, c) > 0))
    for shp in shapes.SHAPES:
      fam["shape in"].append((f"there is a {shp} in the {side} image", any(o["shape"] == shp for o in objs)))
    for n, words in ((1, "is one object"), (2, "are two objects"), (3, "are three objects")):
      fam["how many"].append((f"there {words} in the {side} image", len(objs) == n))
  for shp in shapes.SHAPES:
    fam["both"].append(
      (f"both images contain a {shp}", all(any(o["shape"] == shp for o in objs) for objs in (left, right)))
    )
  return fam


def _write_nlvr(out, splits, seed: int, pairs_per_image: int = 2) -> None:
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
      rows.append(
        {"images": [scenes[i][0], scenes[j][0]], "sentence": options[rs.randint(len(options))], "label": label}
      )
    if split == "train":
      _write(out, "nlvr_train.json", rows)
    else:
      _write(out, "nlvr_dev.json", rows[: len(rows) // 2])
      _write(out, "nlvr_test.json", rows[len(rows) // 2 :])
