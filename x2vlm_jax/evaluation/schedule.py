"""Running the evaluators on their schedule and keeping their results.

    config.evals.test = dict(type="retrieval", every=1000, annotations=..., image_root=..., k_test=256)
    config.evals.test = dict(type="retrieval", every_epochs=1, ...)   # after every epoch (config.num_epochs)

Evaluators are built by `x2vlm_jax.tasks.build_evaluators` (the task that brings an evaluator type
hands it the forward passes it runs). Each evaluator's scalars are logged as `<name>/<metric>`
(TensorBoard, metrics.jsonl, console) and its predictions written by process 0 to
WORKDIR/eval/<name>/step_<n>/{metrics,predictions}.json.
"""

import json
from typing import Dict

import jax
from etils import epath


def write(root: epath.Path, name: str, step: int, metrics: Dict[str, float], predictions) -> None:
  """Process 0 writes an evaluation's results (the directory may be gs://)."""
  if jax.process_index() != 0:
    return
  out = root / "eval" / name / f"step_{step}"
  out.mkdir(parents=True, exist_ok=True)
  (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
  if predictions is not None:
    (out / "predictions.json").write_text(json.dumps(predictions))


def epoch_steps(total: int, num_epochs) -> int:
  """(Micro-)steps per epoch of a run of `total` steps over `num_epochs` epochs; 0 when the run is not a
  whole number of epochs (trainer.resolve_total_steps makes `total` = epochs × steps per epoch)."""
  epochs = float(num_epochs or 0)
  if epochs <= 0 or epochs != int(epochs) or total % int(epochs):
    return 0
  return total // int(epochs)


def run_due(
  evaluators, graphdef, params, step: int, total: int, root: epath.Path, start: int = 0, num_epochs=0
) -> Dict[str, float]:
  """Runs every evaluator due at `step` (at_start only on a fresh start) → {"<name>/<metric>": value}."""
  results = {}
  per_epoch = epoch_steps(total, num_epochs)
  for name, evaluator in evaluators:
    if step == 0 and start != 0:
      continue
    if not evaluator.due(step, total, per_epoch):
      continue
    metrics, predictions = evaluator(graphdef, params)
    write(root, name, step, metrics, predictions)
    results.update({f"{name}/{k}": float(v) for k, v in metrics.items()})
  return results
