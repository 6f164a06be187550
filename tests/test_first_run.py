"""A first run that just works: a config naming the embedded `shapes` data builds it on
first use, once, and trains; the expected CPU-machine noise of the CLI tools is filtered, not errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.configs import synthetic_retrieval
from tests.helpers.embedded_small import small_sizes
from x2vlm_jax import embedded
from x2vlm_jax.configs.finetune import coco_retrieval, shapes_captioning, shapes_retrieval, shapes_video, shapes_vqa
from x2vlm_jax.configs.pretrain import shapes_tiny


@pytest.fixture
def small_builds():
  with small_sizes():
    yield


def test_needed_lists_the_embedded_data_each_config_reads():
  assert embedded.needed(shapes_tiny.get_config("data_dir=/d")) == {"/d": {"shapes", "shapes_tasks"}}
  assert embedded.needed(shapes_tiny.get_config("data_dir=/d,video")) == {
    "/d": {"shapes", "shapes_video", "shapes_tasks"}
  }
  assert embedded.needed(shapes_retrieval.get_config("data_dir=/e")) == {"/e": {"shapes_retrieval", "shapes_tasks"}}
  c = shapes_tiny.get_config("data_dir=/d")
  c.data.source = "synthetic"  # the input is not read; the evaluator's annotations still are
  assert embedded.needed(c) == {"/d": {"shapes_tasks"}}
  assert embedded.needed(shapes_vqa.get_config("data_dir=/e")) == {"/e": {"shapes_vqa", "shapes_tasks"}}
  assert embedded.needed(shapes_captioning.get_config("data_dir=/e")) == {"/e": {"shapes_captioning", "shapes_tasks"}}
  assert embedded.needed(shapes_video.get_config("data_dir=/e")) == {"/e": {"shapes_video_qa", "shapes_tasks"}}
  assert embedded.needed(shapes_video.get_config("data_dir=/e,task=video_retrieval")) == {
    "/e": {"shapes_video_retrieval", "shapes_tasks"}
  }
  assert embedded.needed(coco_retrieval.get_config()) == {}
  assert embedded.needed(synthetic_retrieval.get_config()) == {}


def _mtimes(root):
  return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(root) for f in fs}


def test_ensure_builds_once_and_redoes_an_interrupted_build(tmp_path, small_builds, monkeypatch):
  d = str(tmp_path / "data")
  assert embedded.ensure(d, ["shapes_retrieval"]) == {"shapes_tasks", "shapes_retrieval"}
  # The TFDS dataset holds every caption row of the official-format JSON it was built from.
  rows = json.load(open(tmp_path / "data" / "shapes_tasks" / "retrieval_train.json"))
  assert len(rows) >= 12 * 3
  from x2vlm_jax.data.finetune.common import RowsSource

  table = RowsSource(d, "shapes_retrieval", "train")
  assert len(table) == len(rows)
  assert sorted(table[i]["caption"] for i in range(len(table))) == sorted(r["caption"] for r in rows)

  before = _mtimes(d)
  assert embedded.ensure(d, ["shapes_retrieval", "shapes_tasks"]) == set()  # once
  assert _mtimes(d) == before
  # A build stopped before its marker was written is not trusted: it is built again.
  os.remove(tmp_path / "data" / "shapes_tasks" / embedded.MARKER)
  assert embedded.ensure(d, ["shapes_tasks"]) == {"shapes_tasks"}
  with pytest.raises(ValueError, match="unknown"):
    embedded.ensure(d, ["coco"])
  # Nothing there on a bucket (markers are read through x2vlm_jax.fs; no real bucket here): refused.
  monkeypatch.setattr(embedded, "_marker", lambda data_dir, name: None)
  with pytest.raises(ValueError, match="local disk"):
    embedded.ensure("gs://bucket/data", ["shapes"])


def _rows(path):
  text = open(path).read()
  return json.loads(text) if path.endswith(".json") else [json.loads(x) for x in text.splitlines() if x.strip()]


def test_every_finetuning_dataset_is_built_from_its_official_files_and_follows_shapes_tasks(tmp_path, small_builds):
  from x2vlm_jax.data.finetune.common import RowsSource

  d = str(tmp_path / "data")
  finetune = sorted(embedded.FINETUNE)
  assert embedded.ensure(d, finetune) == {"shapes_tasks", *finetune}
  tasks = tmp_path / "data" / "shapes_tasks"
  # One training row per official annotation row (questions; captions), nothing skipped.
  for name, (_, annotations, _, _) in embedded.FINETUNE.items():
    assert len(RowsSource(d, name, "train")) == len(_rows(str(tasks / annotations))) > 0, name
  assert embedded.ensure(d, finetune) == set()
  # Data built by an older version (shapes_tasks before VQA, captioning and video existed): shapes_tasks
  # is rebuilt, and every dataset built from the older files with it.
  for name in ["shapes_tasks", *finetune]:
    marker = tmp_path / "data" / name / embedded.MARKER
    m = json.loads(marker.read_text())
    if name == "shapes_tasks":
      m["version"] = 2
    else:
      m["tasks"]["version"] = 2
    marker.write_text(json.dumps(m))
  assert embedded.ensure(d, ["shapes_vqa"]) == {"shapes_tasks", "shapes_vqa"}
  assert not embedded.built(d, "shapes_captioning")
  assert embedded.ensure(d, finetune) == set(finetune) - {"shapes_vqa"}


@pytest.mark.slow
def test_fresh_run_of_shapes_tiny_builds_its_data_and_trains(tmp_path, small_builds):
  """What `python main.py --config=configs/pretrain/shapes_tiny.py --workdir=...` does on a fresh clone."""
  from x2vlm_jax import experiment

  data, workdir = tmp_path / "data", tmp_path / "run"
  c = shapes_tiny.get_config(f"steps=2,batch=8,data_dir={data}")
  c.optim.warmup_steps = 1
  c.log_every = 1
  c.evals.retrieval.batch_size = 4
  experiment.run(c, str(workdir))
  assert (data / "shapes" / embedded.MARKER).exists() and (data / "shapes_tasks" / embedded.MARKER).exists()
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [x for x in lines if "train/loss" in x]
  assert [x["step"] for x in train] == [1, 2] and all(np.isfinite(x["train/loss"]) for x in train)
  assert any("retrieval/r_mean" in x for x in lines)  # the evaluator read the built annotations
  assert (workdir / "export" / "model_config.json").exists()


NOISY = r"""
import os, sys
sys.path.insert(0, os.getcwd())
from x2vlm_jax import console
console.quiet()
os.write(2, b"I0000 00:00:1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
os.write(2, b"E0000 00:00:1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
os.write(2, b"E0000 00:00:1 some_op.cc:1] a real native error\n")
from absl import logging
logging.info("checkpoint manager chatter")  # not from orbax: kept
import logging as pylogging
pylogging.getLogger("jax._src.xla_bridge").info("Unable to initialize backend 'tpu'")
pylogging.getLogger("jax._src.xla_bridge").warning("a jax warning")
raise SystemExit("fatal: the user must see this")
"""


def test_quiet_console_drops_expected_noise_and_keeps_errors():
  out = subprocess.run(
    [sys.executable, "-c", NOISY],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  err = out.stderr
  assert out.returncode == 1
  assert "oneDNN custom operations" not in err and "cuInit" not in err and "Unable to initialize" not in err
  for kept in ("a real native error", "checkpoint manager chatter", "a jax warning", "fatal: the user must see this"):
    assert kept in err, err
