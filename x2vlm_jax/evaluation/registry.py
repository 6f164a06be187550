"""Evaluators by type name, built from `config.evals` and run by the trainer on their schedule.

    config.evals.test = dict(type="retrieval", every=1000, annotations=..., image_root=..., k_test=256)

Each evaluator's scalars are logged as `<name>/<metric>` (TensorBoard, metrics.jsonl, console) and
its predictions written by process 0 to WORKDIR/eval/<name>/step_<n>/{metrics,predictions}.json.
"""

import importlib
import json
from typing import Dict, List, Tuple

import jax
from etils import epath

# type → "module:Class"; task issues add theirs here.
TYPES = {
  "retrieval": "x2vlm_jax.evaluation.retrieval:RetrievalEvaluator",
  "grounding": "x2vlm_jax.evaluation.grounding:GroundingEvaluator",
  "nlvr2": "x2vlm_jax.evaluation.nlvr2:NLVR2Evaluator",
  "video_qa": "x2vlm_jax.evaluation.video_qa:VideoQAEvaluator",
  "vqa": "x2vlm_jax.evaluation.vqa:VQAEvaluator",
  "captioning": "x2vlm_jax.evaluation.captioning:CaptioningEvaluator",
}


def evaluator_class(type_name: str):
  if type_name not in TYPES:
    raise ValueError(f"evaluator type {type_name!r} is unknown; known types: {', '.join(sorted(TYPES))}")
  module, cls = TYPES[type_name].split(":")
  return getattr(importlib.import_module(module), cls)


def build(name: str, config, ecfg, mesh):
  if "type" not in ecfg:
    raise ValueError(f"evals.{name}: no `type` (one of {', '.join(sorted(TYPES))})")
  return evaluator_class(ecfg["type"])(name, config, ecfg, mesh)


def build_all(config, mesh) -> List[Tuple[str, object]]:
  evals = config.get("evals") or {}
  return [(name, build(name, config, evals[name], mesh)) for name in sorted(evals)]


def write(root: epath.Path, name: str, step: int, metrics: Dict[str, float], predictions) -> None:
  """Process 0 writes an evaluation's results (the directory may be gs://)."""
  if jax.process_index() != 0:
    return
  d = root / "eval" / name / f"step_{step}"
  d.mkdir(parents=True, exist_ok=True)
  (d / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
  if predictions is not None:
    (d / "predictions.json").write_text(json.dumps(predictions))


def run_due(evaluators, graphdef, params, step: int, total: int, root: epath.Path, start: int = 0) -> Dict[str, float]:
  """Runs every evaluator due at `step` (at_start only on a fresh start) → {"<name>/<metric>": value}."""
  results = {}
  for name, ev in evaluators:
    if step == 0 and start != 0:
      continue
    if not ev.due(step, total):
      continue
    metrics, predictions = ev(graphdef, params)
    write(root, name, step, metrics, predictions)
    results.update({f"{name}/{k}": float(v) for k, v in metrics.items()})
  return results
