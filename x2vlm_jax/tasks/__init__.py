"""Tasks: pre-training and each fine-tuning task, one small file each, plugged into the one trainer.

    task = tasks.build(config)     # config.task names it ("pretrain" when absent)

The contract is `x2vlm_jax.tasks.base.Task`. Task modules are imported on demand so that a host
only imports what its task needs (and the configs stay importable without tensorflow).
"""

import importlib

# name → (module, class)
_TASKS = {
  "pretrain": ("x2vlm_jax.tasks.pretrain", "PretrainTask"),
  "retrieval": ("x2vlm_jax.tasks.retrieval", "RetrievalTask"),
  "nlvr2": ("x2vlm_jax.tasks.nlvr2", "NLVR2Task"),
  "grounding": ("x2vlm_jax.tasks.grounding", "GroundingTask"),
  "video_qa": ("x2vlm_jax.tasks.video_qa", "VideoQATask"),
  "vqa": ("x2vlm_jax.tasks.vqa", "VQATask"),
  "captioning": ("x2vlm_jax.tasks.captioning", "CaptioningTask"),
}


def names():
  return sorted(_TASKS)


def task_class(name: str):
  if name not in _TASKS:
    raise ValueError(f"task: unknown task {name!r}; known tasks: {', '.join(names())}")
  module, cls = _TASKS[name]
  return getattr(importlib.import_module(module), cls)


def build(config):
  return task_class(config.get("task", "pretrain"))(config)
