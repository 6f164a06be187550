"""python tests/helpers/no_tensorflow.py SCRIPT [ARGS...]: runs SCRIPT as __main__ with tensorflow (and
tensorflow_text / tensorflow_datasets) unimportable, as on a GPU host that only trains on prepared data."""

import os
import runpy
import sys

if __name__ == "__main__":
  for name in ("tensorflow", "tensorflow_text", "tensorflow_datasets"):
    sys.modules[name] = None  # any import now raises ImportError
  script = sys.argv[1]
  sys.argv = sys.argv[1:]
  sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
  runpy.run_path(script, run_name="__main__")
