"""BEiT's "geometric" resize of relative-position-bias tables to another patch grid (docs/reference.md §7.5).

A table has (2G−1)² grid rows (one per relative offset, row-major over (Δrow, Δcol)) plus 3 extra rows
for the cls slot. Resizing maps the source offsets onto a geometric progression of coordinates whose
outermost value equals the target's largest offset, so short-range offsets keep (almost) their old
values and the far range is stretched; each head's grid is then interpolated with a bicubic spline.
The official code used scipy `interp2d(kind="cubic")`, removed from recent SciPy; on a rectilinear
grid `RectBivariateSpline(kx=3, ky=3, s=0)` is the same interpolating spline.
"""

import math
from typing import Tuple

import numpy as np

NUM_EXTRA_ROWS = 3  # cls→token, token→cls, cls→cls


def grid_from_rows(rows: int) -> int:
  """Table rows → patch grid G (rows = (2G−1)² + 3); ValueError if the row count is not a BEiT table."""
  side = math.isqrt(max(rows - NUM_EXTRA_ROWS, 0))
  if side * side != rows - NUM_EXTRA_ROWS or side % 2 == 0:
    raise ValueError(f"relative position table: {rows} rows is not (2G-1)^2 + 3 for any grid G")
  return (side + 1) // 2


def _geometric_sum(q: float, n: int) -> float:
  return (1.0 - q**n) / (1.0 - q)


def geometric_ratio(src: int, dst: int) -> float:
  """Bisection on q ∈ (1.01, 1.5), tolerance 1e-6: Σ_{i<src//2} q^i crosses dst//2 (BEiT's loop, verbatim order)."""
  left, right = 1.01, 1.5
  q = (left + right) / 2.0
  while right - left > 1e-6:
    q = (left + right) / 2.0
    if _geometric_sum(q, src // 2) > dst // 2:
      right = q
    else:
      left = q
  return q


def source_axis(src: int, q: float) -> np.ndarray:
  """Coordinates of the src offsets: [−d_{n−1} … −d_0, 0, d_0 … d_{n−1}] with d_0 = 1, d_i = d_{i−1} + q^i."""
  dis, cur = [], 1.0
  for i in range(src // 2):
    dis.append(cur)
    cur += q ** (i + 1)
  dis = np.asarray(dis)
  return np.concatenate([-dis[::-1], [0.0], dis])


def resize_rel_pos_table(table: np.ndarray, dst_grid: int) -> Tuple[np.ndarray, dict]:
  """[T_src, heads] → ([T_dst, heads], info). Identity (same array) when the grid already matches."""
  from scipy.interpolate import RectBivariateSpline  # scipy only needed when resizing

  table = np.asarray(table)
  src_grid = grid_from_rows(table.shape[0])
  src, dst = 2 * src_grid - 1, 2 * dst_grid - 1
  info = {
    "src_grid": src_grid,
    "dst_grid": dst_grid,
    "src_rows": int(table.shape[0]),
    "dst_rows": dst * dst + NUM_EXTRA_ROWS,
  }
  if src == dst:
    return table, info
  if src < 4:
    # A bicubic spline needs ≥ 4 points per axis; the official code fails here too (scipy).
    raise ValueError(
      f"relative position table: cannot resize from a {src_grid}x{src_grid} patch grid "
      f"({src} offsets per axis) with BEiT's bicubic method; it needs a grid of at least 3x3"
    )
  q = geometric_ratio(src, dst)
  axis = source_axis(src, q)
  half = dst // 2
  target = np.arange(-half, half + 0.1, 1.0)
  grid_part = table[: src * src].astype(np.float64)
  extra = table[src * src :]
  heads = []
  for h in range(table.shape[1]):
    z = grid_part[:, h].reshape(src, src)  # rows = Δrow, cols = Δcol
    spline = RectBivariateSpline(axis, axis, z, kx=3, ky=3, s=0)
    heads.append(spline(target, target).reshape(-1))
  resized = np.stack(heads, axis=-1).astype(table.dtype)
  info.update(q=float(q), outermost=float(axis[-1]))
  return np.concatenate([resized, extra], axis=0), info
