"""When the training loop stops early or saves outside its step schedule: signals and wall-clock time.

Stop signals. SIGTERM (a preemption notice, `kill`, a cluster's time limit) and SIGINT (Ctrl-C) both
save the current step and stop, on every host at the same step:
  * one process: a Python handler sets a flag the loop reads after the step in flight;
  * several processes: SIGTERM stays with JAX's preemption notifier (a Python handler would hide it),
    which tells the coordination service, and every host reaches the same sync step
    (`Checkpointer.reached_preemption`). A Ctrl-C on any host re-raises itself as SIGTERM to that
    process, so it takes the same path and the hosts agree.
A second Ctrl-C aborts at once without saving (KeyboardInterrupt), for a save that hangs.

Time-based checkpoints (`config.checkpoint_every_minutes`, next to the step-based `checkpoint_every`):
a preemptible pod loses at most that many minutes of work whatever the step time. One process checks
the clock after every step. Several processes must agree, or one host would enter the save collective
alone: the check happens only on logged steps (the same steps on every host), and process 0's clock
decides for everyone (one broadcast of a boolean), as Orbax's ContinuousCheckpointingPolicy does.
"""

import os
import signal
import time

import jax
import numpy as np
from absl import logging


class StopSignals:
  """Context manager: `requested` turns True after SIGTERM/SIGINT (single process)."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def _handler(self, signum, frame):
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt  # the second Ctrl-C: abort without saving
    logging.warning(
      "%s received: saving a checkpoint at the current step and stopping%s.",
      name,
      " (Ctrl-C again aborts without saving)" if signum == signal.SIGINT else "",
    )
    self.requested = True

  def _sigint_multi_process(self, signum, frame):
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True  # only marks that a Ctrl-C arrived; the stop itself goes through JAX's notifier
    logging.warning(
      "SIGINT received: forwarded as SIGTERM to JAX's preemption notifier, so that every host "
      "saves the same step and stops (Ctrl-C again aborts without saving)."
    )
    os.kill(os.getpid(), signal.SIGTERM)

  def _install(self, signum, handler):
    try:
      self._previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handler
      pass

  def __enter__(self):
    if jax.process_count() > 1:
      if not jax.config.jax_enable_preemption_service:
        logging.warning(
          "jax_enable_preemption_service is off: SIGTERM and Ctrl-C will end this process without "
          "a checkpoint (multi-process runs save on preemption through that service)"
        )
        return self
      self._install(signal.SIGINT, self._sigint_multi_process)
      return self
    self._install(signal.SIGTERM, self._handler)
    self._install(signal.SIGINT, self._handler)
    return self

  @property
  def stop_local(self) -> bool:
    """True when this process should stop by itself (single process; multi-process runs stop at
    the preemption sync point instead)."""
    return self.requested and jax.process_count() == 1

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}


class TimedCheckpoints:
  """`due(step, logged)`: True when `minutes` have passed since the last save (0 = never)."""

  def __init__(self, minutes: float):
    self.interval_s = float(minutes or 0) * 60.0
    self.last_save = time.monotonic()

  def saved(self) -> None:
    self.last_save = time.monotonic()

  def due(self, logged: bool) -> bool:
    if self.interval_s <= 0:
      return False
    local = time.monotonic() - self.last_save >= self.interval_s
    if jax.process_count() == 1:
      return local
    if not logged:
      return False  # hosts agree only on steps every host checks
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(local, np.int32)))
