"""Loading a tools/*.py script as a module (tools/ is not a package)."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod
