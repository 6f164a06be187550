"""`python tools/evaluate.py ...` in a clone = the `x2vlm-evaluate` console script: the code, its usage and
flags are in x2vlm_jax/cli/evaluate.py (`--help`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
  from x2vlm_jax import cli

  cli.launch("evaluate")
