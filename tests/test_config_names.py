"""x2vlm_jax/configs: the shipped configs live in the package, and a --config value names one without a
clone (`pretrain/NAME.py`, with or without `configs/` and `.py`), while a file that exists (a clone's
`configs/...`, a user's own config) is taken as it is."""

import os

import pytest

from tests.helpers.tools import load_tool
from x2vlm_jax import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_TINY = os.path.join(REPO, "x2vlm_jax", "configs", "pretrain", "shapes_tiny.py")


def test_a_shipped_config_is_named_from_outside_a_clone(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here
  for spec in ("pretrain/shapes_tiny.py", "pretrain/shapes_tiny", "configs/pretrain/shapes_tiny.py"):
    assert configs.resolve(spec) == SHIPPED_TINY, spec
    assert configs.resolve(spec + ":steps=3,batch=2") == SHIPPED_TINY + ":steps=3,batch=2", spec
  assert configs.path("finetune/coco_retrieval.py") == os.path.join(
    REPO, "x2vlm_jax", "configs", "finetune", "coco_retrieval.py"
  )
  argv = ["--config=pretrain/shapes_tiny.py:steps=3", "--config.optim.lr=0.1", "--config", "pretrain/shapes_tiny"]
  assert configs.resolve_argv(argv) == [
    f"--config={SHIPPED_TINY}:steps=3",
    "--config.optim.lr=0.1",
    "--config",
    SHIPPED_TINY,
  ]


def test_an_existing_file_unknown_names_and_urls_are_left_alone(tmp_path, monkeypatch):
  own = tmp_path / "pretrain" / "shapes_tiny.py"  # a user's file shadowing a shipped name wins
  own.parent.mkdir()
  own.write_text("def get_config(arg=None):\n  return None\n")
  monkeypatch.chdir(tmp_path)
  assert configs.resolve("pretrain/shapes_tiny.py:steps=3") == "pretrain/shapes_tiny.py:steps=3"
  assert configs.resolve("pretrain/no_such.py") == "pretrain/no_such.py"  # the loader reports it
  assert configs.resolve("gs://bucket/cfg.py:a=1") == "gs://bucket/cfg.py:a=1"
  assert configs.resolve("../cli/train.py") == "../cli/train.py"  # nothing outside the configs directory
  with pytest.raises(FileNotFoundError, match=r"no shipped config 'pretrain/no_such.py'; shipped: .*x2vlm_base_4m"):
    configs.path("pretrain/no_such.py")


def test_a_clone_keeps_its_configs_paths():
  # configs/ in a clone is a symlink to the package's directory: the documented paths are real files.
  assert os.path.islink(os.path.join(REPO, "configs"))
  assert os.path.samefile(os.path.join(REPO, "configs", "pretrain", "shapes_tiny.py"), SHIPPED_TINY)
  spec = os.path.join(REPO, "configs", "pretrain", "shapes_tiny.py")
  assert configs.resolve(spec) == spec


def test_names_are_the_runnable_configs():
  names = configs.names()
  assert {"pretrain/x2vlm_base_4m.py", "pretrain/shapes_tiny.py", "finetune/coco_retrieval.py"} <= set(names)
  # The shared building blocks define no get_config and are not offered as runs.
  assert not {"pretrain/common.py", "finetune/common.py", "finetune/multilingual.py"} & set(names)
  assert all(os.path.isfile(configs.path(n)) for n in names)


def test_sweep_expands_a_shipped_config_by_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path, trials = load_tool("sweep").expand("pretrain/shapes_tiny.py")
  assert path == SHIPPED_TINY and len(trials) == 6
