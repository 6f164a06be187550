"""Sharded evaluation plumbing: split an evaluation set over the mesh and the hosts.

An evaluation set of n rows is cut into global batches of G = per_device × (data × fsdp devices)
rows; each host loads only the rows its devices hold (`local_rows`), and the jitted model functions
run on the training mesh with the training shardings (no parameter is gathered to a host). The last
batch is padded; padding rows carry valid = 0. Outputs stay device-resident global arrays.
"""

import math
from typing import Callable, Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from x2vlm_jax import sharding as shd
from x2vlm_jax.progress import Progress


class EvalBatches:
  def __init__(self, mesh, per_device: int):
    if per_device <= 0:
      raise ValueError(f"evaluation batch per device: expected > 0, got {per_device}")
    self.mesh = mesh
    self.batch_devices = int(np.prod([mesh.shape[a] for a in shd.BATCH_AXES]))
    self.global_batch = int(per_device) * self.batch_devices
    rows = set()
    sharding = shd.batch_sharding(mesh, 1)
    for index in sharding.addressable_devices_indices_map((self.global_batch,)).values():
      rows.update(range(self.global_batch)[index[0]])
    # Rows of a global batch whose data this process supplies (in increasing order).
    self.local_rows = np.asarray(sorted(rows), np.int64)

  def num_batches(self, n: int) -> int:
    return max(1, math.ceil(n / self.global_batch))

  def padded(self, n: int) -> int:
    return self.num_batches(n) * self.global_batch

  def local_indices(self, b: int, n: int) -> np.ndarray:
    """Dataset indices of this host's rows in global batch b; -1 for padding rows."""
    idx = b * self.global_batch + self.local_rows
    return np.where(idx < n, idx, -1)

  def to_global(self, local: np.ndarray) -> jax.Array:
    """This host's rows of one global batch (in `local_rows` order) → a global array."""
    local = np.asarray(local)
    sharding = shd.batch_sharding(self.mesh, local.ndim)
    position = {int(r): i for i, r in enumerate(self.local_rows)}

    def piece(index):
      rows = [position[r] for r in range(self.global_batch)[index[0]]]
      return local[rows][(slice(None),) + tuple(index[1:])]

    return jax.make_array_from_callback((self.global_batch,) + local.shape[1:], sharding, piece)

  def map(
    self, fn: Callable, n: int, load: Callable[[np.ndarray], Dict[str, np.ndarray]], what: str = "", unit: str = "rows"
  ) -> List:
    """Runs fn(global batch dict) over every batch → list of fn's outputs (global arrays).

    load(indices) gets this host's dataset indices (-1 = padding) and returns {name: [rows, ...]}.
    `what` names the job in progress lines (process 0; count, rate, ETA).
    """
    outs = []
    progress = Progress(what or "evaluation", n, unit=unit, enabled=bool(what) and jax.process_index() == 0)
    for b in range(self.num_batches(n)):
      host = load(self.local_indices(b, n))
      out = fn({k: self.to_global(v) for k, v in host.items()})
      if jax.default_backend() == "cpu":
        jax.block_until_ready(out)  # fake CPU devices can deadlock on back-to-back collectives
      outs.append(out)
      progress.update(min(self.global_batch, n - b * self.global_batch))
    progress.done()
    return outs

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def concat(self, outs: List, replicate: bool = False):
    """Batch outputs (a list of pytrees of global arrays) → one pytree, rows in dataset order
    (padding rows at the end), batch-sharded or replicated on every device."""
    out_sharding = self.replicated() if replicate else None
    return jax.jit(lambda xs: jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *xs), out_shardings=out_sharding)(
      outs
    )


def to_host(x) -> np.ndarray:
  """A global array (any sharding, any number of processes) → the full numpy value on every host."""
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
