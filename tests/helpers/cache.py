"""Size bound of a kept test compilation cache (tests/conftest.py), applied once per session."""

import os


def trim_cache(directory: str, max_bytes: int) -> int:
  """Removes the oldest files (by modification time) of `directory` until the rest fits `max_bytes`.
  → the number of files removed. One pass per session instead of JAX's pass per write."""
  entries = []
  for entry in os.scandir(directory):
    if entry.is_file():
      st = entry.stat()
      entries.append((st.st_mtime, st.st_size, entry.path))
  total = sum(size for _, size, _ in entries)
  removed = 0
  for _, size, path in sorted(entries):
    if total <= max_bytes:
      break
    os.remove(path)
    total -= size
    removed += 1
  return removed
