"""Training metrics: TensorBoard events, the console line and WORKDIR/metrics.jsonl, with throughput/ETA.

Why not more of clu: `clu.periodic_actions` (ReportProgress, Profile) and `clu.metric_writers` import
tensorflow when imported (clu 0.0.12: metric_writers/__init__ → summary_writer → `import tensorflow`),
which costs every launch seconds and does not exist on the GPU hosts; the steps/s, examples/s and ETA
below are three lines of arithmetic, the profiler trace is `jax.profiler.start_trace/stop_trace` as
clu's Profile calls it, and the events are written by `events.EventWriter` (why: its docstring).
"""

import json
import time
from typing import Dict

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from x2vlm_jax import fs


def _create_writer(workdir: str, primary: bool):
  """Process 0's TensorBoard writer; none where the `tensorboard` package (its protos) is missing
  (metrics.jsonl and the console line are written either way)."""
  if not primary:
    return _NullWriter()
  try:
    from x2vlm_jax.training import events
  except ImportError as e:
    logging.warning("TensorBoard summaries disabled (%s); console and metrics.jsonl only", e)
    return _NullWriter()
  return events.EventWriter(workdir)


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
    self._jsonl = JsonLines(fs.path(workdir) / "metrics.jsonl") if self.primary else None
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
      self._jsonl.append(json.dumps({"step": step, **scalars}))
    return scalars

  def flush(self):
    self.writer.flush()

  def close(self):
    self.writer.flush()
    self.writer.close()


class JsonLines:
  """A JSON-lines file that grows by one line per call, locally or on an object store.

  Object stores cannot append: gcsfs (epath's gs:// backend without tensorflow) silently turns mode
  "a" into "w", which would leave only the newest line. On a remote path the content is therefore
  kept in memory (starting from what a resumed run finds there) and the object rewritten per line,
  which is what tf.io.gfile's GCS append does internally as well."""

  def __init__(self, path):
    self.path = path
    self.remote = fs.is_remote(path)
    self._text = path.read_text() if self.remote and path.exists() else ""

  def append(self, line: str) -> None:
    if self.remote:
      self._text += line + "\n"
      self.path.write_text(self._text)
    else:
      with self.path.open("a") as f:
        f.write(line + "\n")


def flatten(tree, prefix: str) -> Dict[str, float]:
  """{"a": {"b": 1}} → {"prefix/a/b": 1} (input-pipeline stats and other nested scalars)."""
  return {f"{prefix}/{k}": v for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def all_finite(scalars: Dict[str, float]) -> bool:
  return all(np.isfinite(v) for v in scalars.values())


def progress_line(step: int, total: int, s: Dict[str, float]) -> str:
  """One console line: total loss, each stream's terms, throughput and ETA (or evaluation results)."""
  if "train/loss" not in s:
    shown = {
      k: v
      for k, v in s.items()
      if not k.startswith("perf/")
      and "/seconds_" not in k
      and not k.endswith(("/num_images", "/num_texts", "/skipped_images", "/pairs_fused"))
    }
    return f"step {step}/{total} | eval " + " ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items()))
  streams = sorted({k.split("/")[0] for k in s if k.split("/")[0] in ("image", "region", "video", "mtext")})
  parts = [f"step {step}/{total}", f"loss {s.get('train/loss', float('nan')):.4f}"]
  for st in streams:
    names = ("itc", "itm", "ttc", "ttm", "mlm", "bbox", "giou")
    terms = " ".join(f"{t} {s[f'{st}/{t}']:.3f}" for t in names if f"{st}/{t}" in s)
    parts.append(f"{st}[{terms}]")
  if "perf/steps_per_s" in s:
    parts.append(
      f"{s['perf/steps_per_s']:.2f} steps/s, {s['perf/examples_per_s']:.0f} ex/s, ETA {s['perf/eta_min']:.1f} min"
    )
  return " | ".join(parts)
