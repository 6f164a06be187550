"""tests/helpers/cache.py: a kept compilation cache is trimmed oldest-first to its byte bound."""

import os

from tests.helpers.cache import trim_cache


def test_trim_removes_the_oldest_files_until_the_rest_fits(tmp_path):
  # Sizes and ages distinct so that "oldest first" differs from "largest first" or name order.
  files = {"c-new": (300, 4000), "a-old": (100, 1000), "d-mid": (200, 3000), "b-older": (400, 2000)}
  for name, (size, mtime) in files.items():
    path = tmp_path / name
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
  removed = trim_cache(str(tmp_path), 550)
  # 1000 bytes: drop a-old (1000 s, 100 B) → 900, b-older (2000 s, 400 B) → 500 ≤ 550.
  assert removed == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == ["c-new", "d-mid"]
  assert trim_cache(str(tmp_path), 550) == 0
