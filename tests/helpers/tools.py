"""A command-line tool as a module: x2vlm_jax/cli/<name>.py (the installed console scripts; tools/<name>.py
is its thin wrapper), or a tools/*.py script that stays outside the package (benchmarks, reports)."""

import importlib
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool(name: str):
  """The tool's module, loaded once per process.

  The tools define absl flags at import time; executing a file a second time (two test modules that
  both need it) would register its flags twice and raise DuplicateFlagError. A packaged tool is an
  ordinary import (sys.modules keeps it); a tools/ script is cached under a private name.
  """
  if os.path.exists(os.path.join(REPO, "x2vlm_jax", "cli", f"{name}.py")):
    return importlib.import_module(f"x2vlm_jax.cli.{name}")
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
