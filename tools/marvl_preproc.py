"""`python tools/marvl_preproc.py ...` in a clone = the `x2vlm-marvl-preproc` console script: the code, its usage and
flags are in x2vlm_jax/cli/marvl_preproc.py (`--help`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
  from x2vlm_jax import cli

  cli.launch("marvl_preproc")
