"""The embedded datasets are built on first use: a config that names them just runs on a fresh clone.

    needed(config)                → {data_dir: {names}} the config reads (streams, data.train, evals)
    ensure(data_dir, names)       → builds what is missing, once (a finished build leaves a marker)
    ensure_for_config(config)     → both (experiment.train calls it before the input and evaluators)

Names: `shapes` / `shapes_video` (pre-training TFDS, x2vlm_jax/data/shapes.py), `shapes_tasks` (the
fine-tuning annotations + images in the official formats, shapes_tasks.py; evaluators read them by
path) and the fine-tuning TFDS datasets built from those files like a user's COCO & co. (`FINETUNE`:
shapes_retrieval, shapes_vqa, shapes_captioning, shapes_video_qa, shapes_video_retrieval, shapes_grounding,
shapes_nlvr2; each by its task's builder, `tools/build_tfds.py --kind <task>`, found through
x2vlm_jax.tasks). A build that was interrupted left no marker and starts over.
An existing build is used as it is, whatever sizes it was built with (`make demo` and the tests build
their own), except that `shapes_tasks` of an older `shapes_tasks.VERSION` (fewer tasks) is rebuilt,
and with it every fine-tuning dataset built from another `shapes_tasks` build than the present one.
The builders need tensorflow(-datasets) and are imported only when something is missing: checking
is free.
"""

import json
from typing import Dict, Iterable, Set

from absl import logging

from x2vlm_jax import fs, tasks

SHAPES, SHAPES_VIDEO, TASKS = "shapes", "shapes_video", "shapes_tasks"
SHAPES_ML, SHAPES_ML_MTEXT = "shapes_ml", "shapes_ml_mtext"  # x2vlm_jax/data/shapes_ml.py (one build, one marker)
SHAPES_ML_EN = "shapes_ml_en"  # the same scenes, English captions only (the cross-lingual A/B)
ML_TASKS = "shapes_ml_tasks"  # its retrieval files per language (shapes_ml.write_tasks)
# multilingual fine-tuning TFDS sets: the training file of one language (zero-shot transfer: en;
# translate-train: the others) → (the task whose builder makes it, the file in shapes_ml_tasks)
ML_FINETUNE = {
  **{f"shapes_ml_retrieval_{lang}": ("xretrieval", f"retrieval_train_{lang}.json") for lang in ("en", "de", "fr")},
  **{f"shapes_ml_xgqa_{lang}": ("xgqa", f"vqa_train_{lang}.json") for lang in ("en", "de", "fr")},
}
RETRIEVAL = "shapes_retrieval"
# fine-tuning dataset → (the task whose builder makes it, training annotations and media root in
# shapes_tasks, the builder's own options with paths relative to shapes_tasks)
FINETUNE = {
  RETRIEVAL: ("retrieval", "retrieval_train.json", "", {}),
  "shapes_vqa": ("vqa", "vqa_train.json", "", {}),
  "shapes_captioning": ("captioning", "captioning_train.json", "", {}),
  "shapes_video_qa": ("video_qa", "video_qa_train.jsonl", "videos", {"ans2label": "video_qa_ans2label.json"}),
  "shapes_video_retrieval": ("video_retrieval", "video_retrieval_train.json", "", {}),
  "shapes_grounding": ("grounding", "grounding_train.json", "", {}),
  "shapes_nlvr2": ("nlvr2", "nlvr_train.json", "", {}),
}
NAMES = (SHAPES, SHAPES_VIDEO, SHAPES_ML, SHAPES_ML_MTEXT, SHAPES_ML_EN, ML_TASKS, *ML_FINETUNE, TASKS, *FINETUNE)
MARKER = "build_params.json"  # written last by every build below
# Builder keyword arguments; empty = the builders' defaults (tests shrink them).
SIZES = {SHAPES: {}, TASKS: {}, SHAPES_ML: {}, ML_TASKS: {}}


def _marker(data_dir: str, name: str):
  owner = {SHAPES_VIDEO: SHAPES, SHAPES_ML_MTEXT: SHAPES_ML}.get(name, name)  # one build writes both, one marker
  path = fs.path(data_dir) / owner / MARKER
  return json.loads(path.read_text()) if path.exists() else None


def built(data_dir: str, name: str) -> bool:
  marker = _marker(data_dir, name)
  if marker is None:
    return False
  if name == TASKS:
    from x2vlm_jax.data.shapes_tasks import VERSION  # tf-free

    return marker.get("version") == VERSION
  if name in FINETUNE:
    return marker.get("tasks") == _marker(data_dir, TASKS)
  return True


def _build_shapes(data_dir: str) -> None:
  from x2vlm_jax.data import shapes

  shapes.build(data_dir, **SIZES[SHAPES])


def _build_shapes_ml(data_dir: str) -> None:
  from x2vlm_jax.data import shapes_ml

  shapes_ml.build(data_dir, **SIZES[SHAPES_ML])


def _build_shapes_ml_en(data_dir: str) -> None:
  from x2vlm_jax.data import shapes_ml

  sizes = {k: v for k, v in SIZES[SHAPES_ML].items() if k != "num_pairs"}  # the same scenes as shapes_ml
  shapes_ml.build_english_only(data_dir, **sizes)


def _build_ml_tasks(data_dir: str) -> None:
  from x2vlm_jax.data import shapes_ml

  shapes_ml.write_tasks(data_dir, **SIZES[ML_TASKS])


def _build_ml_finetune(data_dir: str, name: str) -> None:
  files = fs.path(data_dir) / ML_TASKS
  task, annotations = ML_FINETUNE[name]
  report = tasks.data_builder(task)(str(files / annotations), str(files), data_dir, name)
  logging.info("%s: %s", name, ", ".join(report.lines(task)))
  (fs.path(data_dir) / name / MARKER).write_text(
    json.dumps({"source": f"{ML_TASKS}/{annotations}", "written": report.written})
  )


def _build_tasks(data_dir: str) -> None:
  from x2vlm_jax.data import shapes_tasks

  shapes_tasks.build(data_dir, **SIZES[TASKS])


def _build_finetune(data_dir: str, name: str) -> None:
  task, annotations, media, options = FINETUNE[name]
  files = fs.path(data_dir) / TASKS
  report = tasks.data_builder(task)(
    str(files / annotations),
    str(files / media) if media else str(files),
    data_dir,
    name,
    **{key: str(files / value) for key, value in options.items()},
  )
  logging.info("%s: %s", name, ", ".join(report.lines(task)))
  (fs.path(data_dir) / name / MARKER).write_text(
    json.dumps({"source": f"{TASKS}/{annotations}", "written": report.written, "tasks": _marker(data_dir, TASKS)})
  )


# name → (builder, names it reads)
_BUILDERS = {
  SHAPES: (_build_shapes, ()),
  SHAPES_VIDEO: (_build_shapes, ()),
  SHAPES_ML: (_build_shapes_ml, ()),
  SHAPES_ML_MTEXT: (_build_shapes_ml, ()),
  SHAPES_ML_EN: (_build_shapes_ml_en, ()),
  ML_TASKS: (_build_ml_tasks, ()),
  **{name: (lambda d, name=name: _build_ml_finetune(d, name), (ML_TASKS,)) for name in ML_FINETUNE},
  TASKS: (_build_tasks, ()),
  **{name: (lambda d, name=name: _build_finetune(d, name), (TASKS,)) for name in FINETUNE},
}


def ensure(data_dir: str, names: Iterable[str]) -> Set[str]:
  """Builds the missing ones among `names` (and what they are built from) → the names built now."""
  done: Set[str] = set()

  def one(name):
    for dep in _BUILDERS[name][1]:
      one(dep)
    if built(data_dir, name) or name in done:
      return
    if "://" in data_dir:
      raise ValueError(
        f"data_dir {data_dir!r}: the embedded dataset {name!r} is missing there and is built "
        "on local disk only; build it locally (python -m x2vlm_jax.embedded DIR) and copy it"
      )
    logging.info("building the embedded dataset %r in %s (first use only; later runs reuse it)", name, data_dir)
    fs.path(data_dir).mkdir(parents=True, exist_ok=True)
    _BUILDERS[name][0](data_dir)
    done.update([name, SHAPES, SHAPES_VIDEO] if name in (SHAPES, SHAPES_VIDEO) else [name])

  for name in sorted(names):
    if name not in _BUILDERS:
      raise ValueError(f"embedded dataset {name!r} is unknown; known: {', '.join(NAMES)}")
    one(name)
  return done


def _dataset_names(data) -> Iterable[str]:
  """Dataset names read by a data config: pre-training streams and the fine-tuning `train` list."""
  for stream in ("image", "region", "video", "mtext"):
    s = data.get(stream)  # a pre-training stream's config (fine-tuning data has `video` = True/False)
    if hasattr(s, "get") and s.get("enabled", True) and s.get("batch_size", 0) > 0:
      yield from (entry[0] for entry in s.get("datasets", ()))
  yield from (entry[0] for entry in data.get("train", ()))


def needed(config) -> Dict[str, Set[str]]:
  out: Dict[str, Set[str]] = {}
  data = config.get("data")
  if data is not None and data.get("source", "tfds") == "tfds":
    names = {n for n in _dataset_names(data) if n in _BUILDERS}
    if names:
      out.setdefault(data.data_dir, set()).update(names)
  for ecfg in (config.get("evals") or {}).values():
    for key in ("annotations", "image_root"):
      parts = str(ecfg.get(key, "") or "").rstrip("/").split("/")
      for files in (TASKS, ML_TASKS):
        if files in parts:  # DATA_DIR/shapes_tasks/... → shapes_tasks of DATA_DIR
          root = "/".join(parts[: parts.index(files)]) or "."
          out.setdefault(root, set()).add(files)
  return out


def ensure_for_config(config) -> Set[str]:
  built_now: Set[str] = set()
  for data_dir, names in sorted(needed(config).items()):
    built_now |= ensure(data_dir, names)
  return built_now


if __name__ == "__main__":
  import sys

  logging.set_verbosity(logging.INFO)
  print(sorted(ensure(sys.argv[1], sys.argv[2:] or NAMES)))
