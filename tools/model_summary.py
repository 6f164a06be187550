"""Prints the X²-VLM parameter table (clu's parameter overview: name, shape, dtype, size) of a preset;
last line `params: N`. Abstract: nothing is allocated, so `--model large` runs on a laptop.

  python tools/model_summary.py --model base [--image_res 384] [--num_frames 3] [--stacked]

One row per layer's parameter (the unstacked layout, as the official names go); `--stacked` shows the
scanned layout the base/large presets train in (one [layers, ...] array per parameter,
x2vlm_jax/params_layout.py). The count is the same.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
  from x2vlm_jax import console

  console.quiet()  # before jax/tensorflow load: expected CPU-machine noise off, warnings and errors kept

from clu import parameter_overview  # noqa: E402
from flax import nnx  # noqa: E402

from x2vlm_jax import params_io  # noqa: E402
from x2vlm_jax.models import get_preset  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True, choices=["tiny", "base", "large"])
  p.add_argument("--image_res", type=int, default=None)
  p.add_argument("--num_frames", type=int, default=None)
  p.add_argument("--stacked", action="store_true", help="the scanned layout (stacked layer arrays)")
  args = p.parse_args(argv)
  overrides = {k: v for k, v in (("image_res", args.image_res), ("num_frames", args.num_frames)) if v is not None}
  overrides["scan_layers"] = bool(args.stacked)
  params = nnx.to_pure_dict(nnx.state(params_io.abstract_model(get_preset(args.model, **overrides)), nnx.Param))
  print(parameter_overview.get_parameter_overview(params, include_stats=False))
  print(f"params: {int(parameter_overview.count_parameters(params))}")


if __name__ == "__main__":
  main()
