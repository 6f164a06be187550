"""Training metrics: clu writers (TensorBoard + console) and WORKDIR/metrics.jsonl, with throughput/ETA."""

import json
import os
import time
from typing import Dict

import jax
import numpy as np
from absl import logging
from etils import epath


def _create_writer(workdir: str, primary: bool):
  """clu's TensorBoard + console writer; console only where tensorflow/tensorboard are absent (GPU
  hosts run without tensorflow; metrics.jsonl is written either way)."""
  if not primary:
    return _NullWriter()
  try:
    from clu import metric_writers
  except ImportError as e:
    logging.warning("TensorBoard summaries disabled (%s); console and metrics.jsonl only", e)
    return _NullWriter()
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))


class _NullWriter:

  def write_scalars(self, step, scalars):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class MetricsLogger:

  def __init__(self, workdir: str, *, total_steps: int, examples_per_step: int):
    self.primary = jax.process_index() == 0
    self.writer = _create_writer(workdir, self.primary)
    self.total_steps = total_steps
    self.examples_per_step = examples_per_step
    # Through epath: the workdir may be gs://. One append per logged step (cheap locally; on object
    # stores the backend rewrites the object, which is fine at log_every ≥ 10 steps).
    self._jsonl = (epath.Path(workdir if "://" in workdir else os.path.abspath(workdir)) / "metrics.jsonl"
                   if self.primary else None)
    self._last = None

  def log(self, step: int, scalars: Dict[str, float], timing: bool = True) -> Dict[str, float]:
    """timing=False for evaluation results: no throughput, and the next training line restarts its clock."""
    now = time.perf_counter()
    scalars = {k: float(v) for k, v in scalars.items()}
    if timing and self._last is not None and step > self._last[0]:
      dt = (now - self._last[1]) / (step - self._last[0])
      scalars["perf/steps_per_s"] = 1.0 / dt
      scalars["perf/examples_per_s"] = self.examples_per_step / dt
      scalars["perf/eta_min"] = (self.total_steps - step) * dt / 60.0
    self._last = (step, now) if timing else None
    self.writer.write_scalars(step, scalars)
    if self.primary:
      logging.info("%s", progress_line(step, self.total_steps, scalars))
    if self._jsonl is not None:
      with self._jsonl.open("a") as f:
        f.write(json.dumps({"step": step, **scalars}) + "\n")
    return scalars

  def close(self):
    self.writer.flush()
    self.writer.close()


def flatten(tree, prefix: str) -> Dict[str, float]:
  """{"a": {"b": 1}} → {"prefix/a/b": 1} (input-pipeline stats and other nested scalars)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}/{k}"))
    else:
      out[f"{prefix}/{k}"] = v
  return out


def all_finite(scalars: Dict[str, float]) -> bool:
  return all(np.isfinite(v) for v in scalars.values())


def progress_line(step: int, total: int, s: Dict[str, float]) -> str:
  """One console line: total loss, each stream's terms, throughput and ETA (or evaluation results)."""
  if "train/loss" not in s:
    shown = {k: v for k, v in s.items() if not k.startswith("perf/") and "/seconds_" not in k and not k.endswith(
        ("/num_images", "/num_texts", "/skipped_images", "/pairs_fused"))}
    return f"step {step}/{total} | eval " + " ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items()))
  streams = sorted({k.split("/")[0] for k in s if k.split("/")[0] in ("image", "region", "video")})
  parts = [f"step {step}/{total}", f"loss {s.get('train/loss', float('nan')):.4f}"]
  for st in streams:
    terms = " ".join(f"{t} {s[f'{st}/{t}']:.3f}" for t in ("itc", "itm", "mlm", "bbox", "giou") if f"{st}/{t}" in s)
    parts.append(f"{st}[{terms}]")
  if "perf/steps_per_s" in s:
    parts.append(f"{s['perf/steps_per_s']:.2f} steps/s, {s['perf/examples_per_s']:.0f} ex/s, "
                 f"ETA {s['perf/eta_min']:.1f} min")
  return " | ".join(parts)
