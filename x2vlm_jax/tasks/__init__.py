"""Tasks: pre-training and each fine-tuning task, one small file each, plugged into the one trainer.

    task = tasks.build(config)                         # config.task names it ("pretrain" when absent)
    evaluators = tasks.build_evaluators(config, mesh)  # config.evals, each by its `type`

`_TASKS` is the only table of task names. Everything else that is looked up by a name derives from
the task classes it lists (their declarations, `x2vlm_jax.tasks.base.Task`): the evaluator types of
`config.evals.*.type` and the forward passes each evaluator runs, `tools/build_tfds.py --kind`,
`tools/evaluate.py --task`, tools/compile_check.py's default evaluation and the embedded datasets'
builders. Task modules are imported on demand, so a host imports only what it looks up (and the
configs stay importable without tensorflow: no task module imports it).
"""

import importlib
from typing import Callable, Dict, List, Tuple

# name → "module:Class"
_TASKS = {
  "pretrain": "x2vlm_jax.tasks.pretrain:PretrainTask",
  "cclm_pretrain": "x2vlm_jax.tasks.cclm_pretrain:CCLMPretrainTask",
  "retrieval": "x2vlm_jax.tasks.retrieval:RetrievalTask",
  "xretrieval": "x2vlm_jax.tasks.xretrieval:XRetrievalTask",
  "video_retrieval": "x2vlm_jax.tasks.retrieval:VideoRetrievalTask",
  "nlvr2": "x2vlm_jax.tasks.nlvr2:NLVR2Task",
  "marvl": "x2vlm_jax.tasks.marvl:MarvlTask",
  "grounding": "x2vlm_jax.tasks.grounding:GroundingTask",
  "video_qa": "x2vlm_jax.tasks.video_qa:VideoQATask",
  "vqa": "x2vlm_jax.tasks.vqa:VQATask",
  "xgqa": "x2vlm_jax.tasks.xgqa:XGQATask",
  "xvnli": "x2vlm_jax.tasks.xvnli:XVNLITask",
  "captioning": "x2vlm_jax.tasks.captioning:CaptioningTask",
}


def names() -> List[str]:
  return sorted(_TASKS)


def task_class(name: str):
  if name not in _TASKS:
    raise ValueError(f"task: unknown task {name!r}; known tasks: {', '.join(names())}")
  module, cls = _TASKS[name].split(":")
  return getattr(importlib.import_module(module), cls)


def build(config):
  return task_class(config.get("task", "pretrain"))(config)


# --- evaluators ----------------------------------------------------------------------------------
def evaluator_types() -> Dict[str, Tuple[type, type]]:
  """evaluator type → (its class, the first task that brings it: its PREDICT_FNS go with it)."""
  out: Dict[str, Tuple[type, type]] = {}
  for name in _TASKS:
    task = task_class(name)
    for type_name, evaluator in task.EVALUATORS.items():
      known, first = out.get(type_name, (evaluator, task))
      if known is not evaluator:
        raise ValueError(f"evaluator type {type_name!r}: tasks {first.name!r} and {name!r} bring different classes")
      out[type_name] = (known, first)
  return out


def _evaluator_type(type_name: str) -> Tuple[type, type]:
  types = evaluator_types()
  if type_name not in types:
    raise ValueError(f"evaluator type {type_name!r} is unknown; known types: {', '.join(sorted(types))}")
  return types[type_name]


def evaluator_class(type_name: str):
  evaluator, _ = _evaluator_type(type_name)
  return evaluator


def build_evaluator(name: str, config, ecfg, mesh):
  """The evaluator of `config.evals.<name>` (= ecfg), with the forward passes of the task that brings
  its type."""
  if "type" not in ecfg:
    raise ValueError(f"evals.{name}: no `type` (one of {', '.join(sorted(evaluator_types()))})")
  evaluator, task = _evaluator_type(ecfg["type"])
  return evaluator(name, config, ecfg, mesh, predict_fns=task.PREDICT_FNS)


def build_evaluators(config, mesh) -> List[Tuple[str, object]]:
  """[(name, evaluator)] of `config.evals`, by name."""
  evals = config.get("evals") or {}
  return [(name, build_evaluator(name, config, evals[name], mesh)) for name in sorted(evals)]


def evaluation(name: str) -> Tuple[str, Dict]:
  """(evaluator type, fields) of task `name`'s own evaluation."""
  task = task_class(name)
  if task.EVALUATION is None:
    raise ValueError(f"task {name!r} has no evaluation of its own; tasks with one: {', '.join(evaluation_names())}")
  type_name, fields = task.EVALUATION
  return type_name, dict(fields)


def evaluation_names() -> List[str]:
  """Tasks with an evaluation of their own (`tools/evaluate.py --task`)."""
  return [name for name in names() if task_class(name).EVALUATION is not None]


def default_evaluators(config, mesh) -> List[Tuple[str, object]]:
  """The config's task's own evaluation with the evaluator's defaults, named by its type ([] when the
  task has none): what tools/compile_check.py compiles for a config without `evals`."""
  name = config.get("task", "pretrain")
  if task_class(name).EVALUATION is None:
    return []
  type_name, fields = evaluation(name)
  return [(type_name, build_evaluator(type_name, config, {"type": type_name, **fields}, mesh))]


# --- data ----------------------------------------------------------------------------------------
def data_kinds() -> List[str]:
  """Tasks whose official annotation files `tools/build_tfds.py --kind <task>` builds into TFDS."""
  return [name for name in names() if task_class(name).BUILDER]


def data_builder(kind: str) -> Callable:
  """build(annotations, image_root, data_dir, name, *, split, strict, max_words, **options) of task
  `kind`'s data module (imports tensorflow)."""
  if kind not in data_kinds():
    raise ValueError(f"build kind {kind!r} is unknown; tasks with a builder: {', '.join(data_kinds())}")
  task = task_class(kind)
  return getattr(importlib.import_module(task.DATA_MODULE), task.BUILDER)
