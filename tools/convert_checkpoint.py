"""`python tools/convert_checkpoint.py ...` in a clone = the `x2vlm-convert` console script: the code, its usage and
flags are in x2vlm_jax/cli/convert_checkpoint.py (`--help`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
  from x2vlm_jax import cli

  cli.launch("convert_checkpoint")
