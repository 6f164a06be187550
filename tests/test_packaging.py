"""pyproject.toml: the wheel holds every module of x2vlm_jax, the shipped configs inside it (no generic
top-level `configs` package) and the shipped vocabulary; its dependencies agree with requirements.txt
(core, or the `data` extra for the input pipeline): ranges that contain requirements.txt's exact pins;
installed (no clone), every console script answers --help, the tensorflow-free ones without importing
tensorflow, and `x2vlm-train` takes a shipped config by its name."""

import glob
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
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


@pytest.fixture(scope="module")
def wheel_file(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("wheel")
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
  return glob.glob(str(tmp_path / "dist" / "*.whl"))[0]


@pytest.mark.slow
def test_wheel_contents_and_dependencies(wheel_file):
  wheel = zipfile.ZipFile(wheel_file)
  names = set(wheel.namelist())

  expected = {
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "x2vlm_jax", "**", "*.py"), recursive=True)
  }
  assert len(expected) > 80 and expected <= names, sorted(expected - names)[:10]
  # The configs ship inside the package; a clone's top-level `configs` is only a symlink to them.
  assert os.path.islink(os.path.join(REPO, "configs"))
  assert "x2vlm_jax/configs/pretrain/x2vlm_base_4m.py" in names and "x2vlm_jax/configs/finetune/common.py" in names
  assert not any(n.startswith("configs/") for n in names), sorted(n for n in names if n.startswith("configs/"))[:5]
  top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
  assert top_level == {"x2vlm_jax"}, top_level
  entry_points = wheel.read([n for n in names if n.endswith(".dist-info/entry_points.txt")][0]).decode()
  for script in SCRIPTS:
    assert f"\n{script} = x2vlm_jax.cli:" in entry_points, (script, entry_points)
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
  assert "tensorboard" in dict(core)  # the trainer's events, tensorflow or not


# console script → does its --help import tensorflow? (build-tfds and demo are the input pipeline's)
SCRIPTS = {
  "x2vlm-train": False,
  "x2vlm-evaluate": False,
  "x2vlm-convert": False,
  "x2vlm-compile-check": False,
  "x2vlm-sweep": False,
  "x2vlm-refer-to-grounding": False,
  "x2vlm-marvl-preproc": False,
  "x2vlm-wit-to-retrieval": False,
  "x2vlm-build-tfds": True,  # imports the input pipeline with its module: shows that the record works
  "x2vlm-demo": None,
}

# Loaded at interpreter start-up by a .pth file of the throwaway venv: at exit, the tensorflow modules
# the process imported go to $X2VLM_TEST_MODULES_OUT.
_RECORD_MODULES = """import atexit, os, sys
def _record(path=os.environ.get("X2VLM_TEST_MODULES_OUT")):
  if path:
    with open(path, "w") as f:
      f.write("\\n".join(sorted(m for m in sys.modules if m.split(".")[0].startswith("tensorflow"))))
atexit.register(_record)
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_console_scripts_of_the_installed_wheel(wheel_file, tmp_path):
  # A throwaway venv that sees this interpreter's packages (a .pth file; no download) and holds the
  # wheel itself, installed by pip --no-deps: what `pip install x2vlm-jax` gives a user without a clone.
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
  python = venv / "bin" / "python"
  site = subprocess.run(
    [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout.strip()
  ours = sysconfig.get_paths()["purelib"]
  (pathlib.Path(site) / "zz_outer_site.pth").write_text(ours + "\n")
  (pathlib.Path(site) / "x2vlm_test_record.py").write_text(_RECORD_MODULES)
  (pathlib.Path(site) / "x2vlm_test_record.pth").write_text("import x2vlm_test_record\n")
  out = subprocess.run(
    [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", wheel_file],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  run_dir = tmp_path / "elsewhere"  # not a clone: no main.py, tools/ or configs/ around
  run_dir.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")

  def run(*cmd, record=None):
    return subprocess.run(
      list(cmd),
      cwd=run_dir,
      env=dict(env, X2VLM_TEST_MODULES_OUT=str(record or "")),
      capture_output=True,
      text=True,
      timeout=300,
    )

  where = run(str(python), "-c", "import x2vlm_jax.configs as c; print(c.__file__)")
  assert where.returncode == 0 and where.stdout.startswith(site), (where.stdout, where.stderr[-2000:])
  assert run(str(python), "-c", "import configs").returncode != 0  # no generic top-level package
  for script, may_import_tf in SCRIPTS.items():
    record = tmp_path / f"{script}.modules"
    out = run(str(venv / "bin" / script), "--help", record=record)
    # absl's --help (train, compile-check) exits 1 after the usage; argparse's exits 0.
    assert out.returncode in (0, 1) and "Traceback" not in out.stderr, (script, out.stdout[-2000:], out.stderr[-3000:])
    assert "usage:" in out.stdout or "Try --helpfull" in out.stdout, (script, out.stdout[-1000:])
    if may_import_tf is False:
      assert record.read_text() == "", f"{script} --help imported {record.read_text().split()}"
    elif may_import_tf:
      assert "tensorflow" in record.read_text().split(), script

  # A shipped config by its name, from outside a clone: the config loads (a typo'd key is then named).
  out = run(
    str(venv / "bin" / "x2vlm-train"), "--config=pretrain/shapes_tiny.py", "--workdir=wd", "--config.optim.lrr=1"
  )
  assert out.returncode != 0 and "unknown field 'lrr' (did you mean 'lr'?)" in out.stderr, out.stderr[-3000:]
  out = run(str(venv / "bin" / "x2vlm-train"), "--config=pretrain/no_such.py", "--workdir=wd")
  assert out.returncode != 0 and "no_such.py" in out.stderr, out.stderr[-3000:]
