"""An evaluator that reports a scripted sequence of values (trainer tests of the schedule and of the
best-checkpoint bookkeeping, independent of any model quality), and the test task that brings it:
registered with one line, `tasks._TASKS["scripted"] = "tests.helpers.scripted_eval:ScriptedTask"`."""

from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.tasks.base import Task

CALLS = []


class ScriptedEvaluator(Evaluator):
  DEFAULTS = dict(values=(1.0,))

  def evaluate(self, graphdef, params):
    del graphdef, params
    value = self.ecfg["values"][len(CALLS) % len(self.ecfg["values"])]
    CALLS.append(value)
    return {"score": float(value)}, {"call": len(CALLS)}


class ScriptedTask(Task):
  """Brings the `scripted` evaluator type (nothing else: it is never trained)."""

  name = "scripted"
  EVALUATORS = {"scripted": ScriptedEvaluator}
