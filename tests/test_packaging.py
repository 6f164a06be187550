"""pyproject.toml: the wheel holds every module of x2vlm_jax and configs (and the shipped vocabulary), and
its dependencies agree with requirements.txt (core, or the `data` extra for the input pipeline): ranges
that contain requirements.txt's exact pins."""

import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from packaging.specifiers import SpecifierSet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _requirement(line: str):
  """'tensorflow-text==2.21.1  # comment' → ('tensorflow_text', '==2.21.1')."""
  line = line.split("#")[0].strip()
  if not line:
    return None
  m = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", line)
  return re.sub(r"[-_.]+", "_", m.group(1)).lower(), m.group(2).replace(" ", "")


@pytest.mark.slow
def test_wheel_contents_and_dependencies(tmp_path):
  src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
  anywhere = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")

  def ignore(directory, names):
    top = {".git", ".venv", "artifacts", "build", "data", "workdir"} if os.path.samefile(directory, REPO) else set()
    return set(anywhere(directory, names)) | (top & set(names))

  shutil.copytree(REPO, src, ignore=ignore)
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "pip",
      "wheel",
      "--no-deps",
      "--no-build-isolation",
      "-q",
      str(src),
      "-w",
      str(tmp_path / "dist"),
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  wheel = zipfile.ZipFile(glob.glob(str(tmp_path / "dist" / "*.whl"))[0])
  names = set(wheel.namelist())

  expected = {
    os.path.relpath(p, REPO)
    for pkg in ("x2vlm_jax", "configs")
    for p in glob.glob(os.path.join(REPO, pkg, "**", "*.py"), recursive=True)
  }
  assert len(expected) > 80 and expected <= names, sorted(expected - names)[:10]
  assert "x2vlm_jax/data/shapes_vocab.txt" in names
  assert "x2vlm_jax/data/shapes_ml_spm.model" in names  # the embedded multilingual tokenizer
  assert not any(n.startswith(("tests/", "tools/")) for n in names)

  meta = wheel.read([n for n in names if n.endswith(".dist-info/METADATA")][0]).decode()
  core, extras = set(), {}
  for line in meta.splitlines():
    if not line.startswith("Requires-Dist:"):
      continue
    req, _, marker = line[len("Requires-Dist:") :].partition(";")
    m = re.search(r'extra == "([^"]+)"', marker)
    (extras.setdefault(m.group(1), set()) if m else core).add(_requirement(req))
  pinned = [r for r in map(_requirement, open(os.path.join(REPO, "requirements.txt"))) if r]
  assert len(pinned) > 15
  declared = {name: spec for name, spec in core | extras.get("data", set())}
  for name, pin in pinned:
    assert name in declared, f"requirements.txt {name} is not in the wheel's metadata"
    # The wheel takes ranges; requirements.txt's exact pin (what CI runs) must be inside each.
    if pin.startswith("=="):
      version = pin[2:].split(";")[0]
      assert SpecifierSet(declared[name]).contains(version), f"{name}: pin {version} outside {declared[name]!r}"
  # A newer jax (Colab, Python 3.12: 0.11.2 and 0.12.0.1 were tested) satisfies the package, and none is
  # pinned exactly, so pip keeps what it finds instead of refusing or downgrading it.
  for name in ("jax", "jaxlib", "flax", "optax", "orbax_checkpoint"):
    assert "==" not in declared[name], (name, declared[name])
  assert SpecifierSet(declared["jax"]).contains("0.12.0.1") and SpecifierSet(declared["flax"]).contains("0.12.12")
  # A host without the input pipeline installs no tensorflow.
  assert not any(name.startswith("tensorflow") for name, _ in core)
  assert SpecifierSet(dict(extras["data"])["tensorflow"]).contains("2.21.0")
  assert "tensorboard" in dict(extras["data"])
