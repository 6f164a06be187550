"""Progress lines for long jobs that are not training (dataset builds, evaluation, conversion).

    with Progress("shapes/train", total=8000, unit="scenes") as p:
      for ex in examples:
        p.update()
    # shapes/train: 2150/8000 scenes (27%), 212.3 scenes/s, ETA 28 s       (at most every `every_s`)
    # shapes/train: 8000 scenes in 37.6 s (212.8 scenes/s)                 (at the end)

Lines go through absl logging at INFO (the trainer's progress lines do too), so a cluster log gets one
line every `every_s` seconds rather than a carriage-return bar. Without a total there is no ETA.
tensorflow- and jax-free: the data builders and the notebook API use it.
"""

import time
from typing import Callable, Iterable, Optional

from absl import logging


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f"{seconds:.0f} s"
  if seconds < 5400:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


class Progress:
  def __init__(
    self,
    what: str,
    total: Optional[int] = None,
    *,
    unit: str = "items",
    every_s: float = 15.0,
    enabled: bool = True,
    log: Callable[[str], None] = None,
  ):
    self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
    self.enabled = enabled
    self.count = 0
    self._log = log or (lambda msg: logging.info("%s", msg))
    self._start = time.perf_counter()
    self._last = self._start

  def line(self) -> str:
    elapsed = max(time.perf_counter() - self._start, 1e-9)
    rate = self.count / elapsed
    if self.total:
      pct = 100.0 * self.count / self.total
      eta = _duration((self.total - self.count) / rate) if rate > 0 else "?"
      return f"{self.what}: {self.count}/{self.total} {self.unit} ({pct:.0f}%), {rate:.1f} {self.unit}/s, ETA {eta}"
    return f"{self.what}: {self.count} {self.unit}, {rate:.1f} {self.unit}/s"

  def update(self, n: int = 1) -> None:
    self.count += n
    now = time.perf_counter()
    if self.enabled and now - self._last >= self.every_s:
      self._last = now
      self._log(self.line())

  def done(self) -> None:
    if self.enabled:
      elapsed = time.perf_counter() - self._start
      self._log(
        f"{self.what}: {self.count} {self.unit} in {_duration(elapsed)} "
        f"({self.count / max(elapsed, 1e-9):.1f} {self.unit}/s)"
      )

  def wrap(self, iterable: Iterable):
    """Yields the items of `iterable`, counting each."""
    for item in iterable:
      yield item
      self.update()

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *exc):
    if exc_type is None:
      self.done()
