"""requirements.txt against the code, both directions:

* every runtime requirement is imported by the package, its tools, main.py or the configs, or is
  declared for a reason checked here (jaxlib: jax's own backend; gcsfs: fsspec's gs:// filesystem);
* every third-party module they import (lazily inside functions too) is declared, in
  requirements.txt or, for the conversion-only torch / safetensors and the notebook's matplotlib, in
  requirements-test.txt.
"""

import ast
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = [*REPO.glob("x2vlm_jax/**/*.py"), *REPO.glob("tools/*.py"), REPO / "main.py"]  # configs: x2vlm_jax/configs

# distribution name → top-level module, where they differ
MODULE_OF = {
  "orbax-checkpoint": "orbax",
  "ml-collections": "ml_collections",
  "absl-py": "absl",
  "pillow": "PIL",
  "tensorflow-text": "tensorflow_text",
  "tensorflow-datasets": "tensorflow_datasets",
  "array-record": "array_record",
}
NOT_IMPORTED = {"jaxlib", "gcsfs"}
CONVERSION_ONLY = {"torch", "safetensors"}  # imported lazily by x2vlm_jax/convert; requirements-test.txt
# imported lazily by x2vlm_jax/inference/visualize.py: the pyproject `notebook` extra, requirements-test.txt
NOTEBOOK_ONLY = {"matplotlib"}


def _requirements(name):
  out = set()
  for line in (REPO / name).read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      out.add(re.split(r"[=<>~!\[; ]", line)[0].lower())
  return out


def _imported():
  mods = set()
  for path in SOURCES:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        mods.update(a.name.split(".")[0] for a in node.names)
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        mods.add(node.module.split(".")[0])
  tools = {p.stem for p in REPO.glob("tools/*.py")}  # tools import each other from their directory
  return mods - set(sys.stdlib_module_names) - tools - {"x2vlm_jax", "__future__"}


def test_every_runtime_requirement_is_used():
  imported = _imported()
  unused = sorted(r for r in _requirements("requirements.txt") - NOT_IMPORTED if MODULE_OF.get(r, r) not in imported)
  assert not unused, f"requirements.txt lists packages nothing imports: {unused}"


def test_every_imported_third_party_module_is_declared():
  runtime = {MODULE_OF.get(r, r) for r in _requirements("requirements.txt")}
  test_only = {MODULE_OF.get(r, r) for r in _requirements("requirements-test.txt")}
  undeclared = sorted(_imported() - runtime - ((CONVERSION_ONLY | NOTEBOOK_ONLY) & test_only))
  assert not undeclared, f"imported but not declared in requirements.txt: {undeclared}"


def test_gcsfs_is_what_gs_paths_use_without_tensorflow():
  import fsspec

  assert fsspec.get_filesystem_class("gs").__module__.split(".")[0] == "gcsfs"
