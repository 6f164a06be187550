"""Prints the X²-VLM parameter tree with shapes; last line `params: N` (abstract, nothing allocated).

  python tools/model_summary.py --model base [--image_res 384] [--num_frames 3]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
  from x2vlm_jax import console
  console.quiet()  # before jax/tensorflow load: expected CPU-machine noise off, warnings and errors kept

import numpy as np  # noqa: E402

from x2vlm_jax import params_io  # noqa: E402
from x2vlm_jax.models import get_preset  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True, choices=["tiny", "base", "large"])
  p.add_argument("--image_res", type=int, default=None)
  p.add_argument("--num_frames", type=int, default=None)
  p.add_argument("--depth", type=int, default=None, help="collapse paths deeper than this (default: full)")
  args = p.parse_args(argv)
  overrides = {k: v for k, v in (("image_res", args.image_res), ("num_frames", args.num_frames)) if v is not None}
  cfg = get_preset(args.model, **overrides)
  shapes = params_io.param_shapes(cfg)
  total = 0
  for path, (shape, dtype) in sorted(shapes.items(), key=lambda kv: _natural(kv[0])):
    n = int(np.prod(shape))
    total += n
    print(f"{path:<60s} {str(shape):<18s} {np.dtype(dtype).name:<8s} {n:>12,d}")
  print(f"params: {total}")


def _natural(path: str):
  return [int(p) if p.isdigit() else p for p in path.split("/")]


if __name__ == "__main__":
  main()
