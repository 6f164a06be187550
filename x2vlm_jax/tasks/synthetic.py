"""A synthetic input source that honours the batch contract without tensorflow.

What a task reads with `config.data.source = "synthetic"`: `tools/benchmark_train.py` (GPU hosts have
no tensorflow) and the trainer tests. Batch k of host p is a pure function of (seed, k, p), so its
"position" is just k: save/restore is exact.
"""

from typing import Callable, Dict

import numpy as np

from x2vlm_jax.batch import stream_spec, synthetic_stream


class SyntheticIterator:
  def __init__(
    self,
    data_cfg,
    model_cfg,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    streams=("image", "region", "video"),
  ):
    """streams: the streams a task reads; the multilingual (CCLM) task adds "mtext" (parallel text)."""
    self.seed, self.process_index, self.position = seed, process_index, 0
    self.vocab_size = model_cfg.text.vocab_size
    self.specs = {}
    for stream in streams:
      s = data_cfg.get(stream)
      if s is None or not s.get("enabled", True) or s.batch_size <= 0:
        continue
      per_host = lambda n: _per_host(n, process_count, f"data.{stream}")  # noqa: E731
      self.specs[stream] = stream_spec(
        stream,
        batch_size=per_host(s.batch_size),
        image_res=model_cfg.image_res,
        patch_size=model_cfg.patch_size,
        max_tokens=s.get("max_tokens", data_cfg.max_tokens),  # mtext has its own lengths
        max_masks=s.get("max_masks", data_cfg.max_masks),
        num_images=per_host(s.get("num_images", 0)) if stream == "region" else 0,
        num_frames=s.get("num_frames", 0),
      )

  def __iter__(self):
    return self

  def __next__(self):
    k = self.position
    self.position += 1
    return {
      stream: synthetic_stream(
        stream, spec, vocab_size=self.vocab_size, seed=_seed(self.seed, k, self.process_index, i)
      )
      for i, (stream, spec) in enumerate(self.specs.items())
    }

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = int(state["position"])

  def stats(self):
    return {}


class SyntheticBatches(SyntheticIterator):
  """Batch k of host p = make(seed(seed, k, p)): fine-tuning tasks' contract-shaped random batches."""

  def __init__(self, make: Callable[[int], Dict[str, np.ndarray]], *, seed: int, process_index: int = 0):
    self.seed, self.process_index, self.position = seed, process_index, 0
    self._make = make

  def __next__(self):
    k = self.position
    self.position += 1
    return self._make(_seed(self.seed, k, self.process_index))


def _seed(*ints) -> int:
  # Not hash(): string hashing is randomised per process, which would break exact resume.
  return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(1)[0] % (2**31))


def _per_host(n: int, process_count: int, name: str) -> int:
  if n % process_count:
    raise ValueError(f"{name}: global batch {n} is not divisible by the {process_count} processes")
  return n // process_count
