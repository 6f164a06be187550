"""Deterministic, host-sharded, resumable record order for one stream (index-based sampling).

Position p of a stream picks a dataset d (weighted, from a seeded block RNG; by default ∝ record
count, see `mixture_weights`) and then the next record of d for this host. The host's records of d,
epoch e, are `perm(seed, d, e)[process_index::process_count]`, so hosts are disjoint and together
cover every epoch. The whole reading state is (p, counts[d]):
it travels with every element, and resuming from it reproduces the stream exactly.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np

from x2vlm_jax.data import records

_BLOCK = 4096


def parse_entry(entry) -> Tuple[str, str, Optional[float]]:
  """(name, split) | (name, split, None) → size-proportional; (name, split, w) → explicit weight."""
  entry = tuple(entry)
  if len(entry) not in (2, 3):
    raise ValueError(f"datasets entry {entry!r}: expected (name, split) or (name, split, weight)")
  w = entry[2] if len(entry) == 3 else None
  if w is not None and not float(w) > 0:
    raise ValueError(f"datasets entry {entry!r}: weight must be > 0 (or None: proportional to size)")
  return entry[0], entry[1], None if w is None else float(w)


def mixture_weights(weights: Sequence[Optional[float]], sizes: Sequence[int]) -> np.ndarray:
  """Sampling probability of each dataset of a stream.

  The official loader pools all files of a stream and shuffles them, so a dataset is drawn in
  proportion to its size; that is the default (weight None). Explicit weights alone are relative.
  Mixed, the explicit weights are probabilities and the size-proportional datasets share what is left:
  [(laion, 0.85), (coco, None), (sbu, None)] → LAION 85%, COCO and SBU 15% split by record count.
  """
  sizes = np.asarray(sizes, np.float64)
  free = np.asarray([w is None for w in weights])
  fixed = np.asarray([0.0 if w is None else w for w in weights])
  if free.all():
    return sizes / sizes.sum()
  if not free.any():
    return fixed / fixed.sum()
  rest = 1.0 - fixed.sum()
  if rest <= 0:
    raise ValueError(
      f"datasets weights {list(weights)}: with size-proportional entries (None) the explicit "
      f"weights are probabilities and must sum to < 1, got {fixed.sum()}"
    )
  return fixed + free * rest * sizes / sizes[free].sum()


class StreamSource:
  def __init__(
    self,
    data_dir: str,
    datasets: Sequence[Tuple],
    *,
    seed: int,
    stream_id: int,
    process_index: int,
    process_count: int,
    opener=records.open_source,
  ):
    if not datasets:
      raise ValueError("datasets: empty list for an enabled stream")
    self.sources, weights = [], []
    for entry in datasets:
      name, split, w = parse_entry(entry)
      src = opener(data_dir, name, split)
      if len(src) < process_count:
        raise ValueError(f"dataset {name}/{split}: {len(src)} records < process_count {process_count}")
      self.sources.append(src)
      weights.append(w)
    self.weights = mixture_weights(weights, [len(s) for s in self.sources])
    self.seed, self.stream_id = int(seed), int(stream_id)
    self.process_index, self.process_count = process_index, process_count
    self._perm_cache = {}
    self._mix_cache = (None, None)
    self.error = None  # a read failure, kept so the iterator can report it (tf.data hides it)

  def host_len(self, d: int) -> int:
    n = len(self.sources[d])
    return len(range(self.process_index, n, self.process_count))

  def record_index(self, d: int, k: int) -> int:
    """Global record index of the k-th record of dataset d read by this host."""
    epoch, i = divmod(k, self.host_len(d))
    key = (d, epoch)
    if key not in self._perm_cache:
      if len(self._perm_cache) > 4:
        self._perm_cache.clear()
      perm = np.random.default_rng([self.seed, self.stream_id, d, epoch]).permutation(len(self.sources[d]))
      self._perm_cache[key] = perm[self.process_index :: self.process_count]
    return int(self._perm_cache[key][i])

  def dataset_at(self, p: int) -> int:
    if len(self.sources) == 1:
      return 0
    block = p // _BLOCK
    if self._mix_cache[0] != block:
      rng = np.random.default_rng([self.seed, self.stream_id, 1 << 20, block])
      self._mix_cache = (block, rng.choice(len(self.sources), size=_BLOCK, p=self.weights))
    return int(self._mix_cache[1][p % _BLOCK])

  def records(self, position: int, counts: List[int]):
    """Yields (position, counts after this record, dataset, record index, record) forever."""
    counts = [int(c) for c in counts]
    if len(counts) != len(self.sources):
      raise ValueError(f"saved counts {counts} do not match {len(self.sources)} datasets")
    p = int(position)
    while True:
      d = self.dataset_at(p)
      try:
        index = self.record_index(d, counts[d])
        rec = self.sources[d][index]
      except Exception as e:  # noqa: BLE001 — re-raised by the iterator with context
        self.error = e
        raise
      counts[d] += 1
      yield p, np.asarray(counts, np.int64), d, index, rec
      p += 1
