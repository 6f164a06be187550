"""Loading a tools/*.py script as a module (tools/ is not a package)."""

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool(name: str):
  """tools/<name>.py as a module, loaded once per process.

  The tools define absl flags at import time; executing a file a second time (two test modules that
  both need it) would register its flags twice and raise DuplicateFlagError.
  """
  key = f"_x2vlm_tool_{name}"
  if key in sys.modules:
    return sys.modules[key]
  spec = importlib.util.spec_from_file_location(key, os.path.join(REPO, "tools", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  sys.modules[key] = mod
  try:
    spec.loader.exec_module(mod)
  except BaseException:
    del sys.modules[key]
    raise
  return mod
