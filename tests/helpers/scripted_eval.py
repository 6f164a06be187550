"""An evaluator that reports a scripted sequence of values (trainer tests of the schedule and of the
best-checkpoint bookkeeping, independent of any model quality)."""

from x2vlm_jax.evaluation.base import Evaluator

CALLS = []


class ScriptedEvaluator(Evaluator):
  DEFAULTS = dict(values=(1.0,))

  def evaluate(self, graphdef, params):
    del graphdef, params
    value = self.ecfg["values"][len(CALLS) % len(self.ecfg["values"])]
    CALLS.append(value)
    return {"score": float(value)}, {"call": len(CALLS)}
