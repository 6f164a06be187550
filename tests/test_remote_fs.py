"""Workdirs, data dirs and evaluation outputs on a non-local filesystem (gs://).

Each scenario runs in a subprocess under tests/helpers/fake_gcs.py: gs:// is fsspec's in-memory
filesystem behind etils.epath's fsspec backend (what a GPU host without tensorflow uses, with gcsfs's
no-append semantics), or tensorflow's `ram://` behind epath's tf.io.gfile backend (what a host with
tensorflow uses for gs://). Whatever bypasses epath (builtin open, os.makedirs, os.replace) leaves a
local "gs:" directory in the working directory or fails; both are checked.

Not covered here: Orbax's array data (tensorstore has its own GCS client; the trainer scenario keeps
its checkpoints in a local directory), reading ArrayRecord shards from gs:// (array_record's C++ GCS
client), and the real GCS clients themselves: tests/test_gcs_server.py runs those against a GCS API
server on 127.0.0.1.
"""

import base64
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import xla

REPO = pathlib.Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "fake_gcs.py"


def _run(tmp_path, script, *args, block_tensorflow=False, ram=False, seed=None, timeout=600, devices=1):
  """Runs `script args` under the fake filesystem in tmp_path/cwd → (completed process, dump dir)."""
  cwd, dump = tmp_path / "cwd", tmp_path / "dump"
  cwd.mkdir()
  env = dict(
    os.environ,
    PYTHONPATH=str(REPO),
    JAX_PLATFORMS="cpu",
    TF_CPP_MIN_LOG_LEVEL="2",
    XLA_FLAGS=xla.cpu_flags(devices),
  )
  if not block_tensorflow and not ram:
    env["EPATH_USE_TF"] = "0"  # tensorflow importable (data tools) but epath on its fsspec backend
  cmd = [sys.executable, str(HELPER), "--dump", str(dump)]
  cmd += ["--block_tensorflow"] if block_tensorflow else []
  cmd += ["--ram"] if ram else []
  cmd += ["--seed", str(seed)] if seed else []
  out = subprocess.run(
    cmd + [str(script), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
  )
  # Nothing may have gone to a local directory named after the URL ("./gs:/bucket/...").
  assert sorted(p.name for p in cwd.iterdir()) == [], (sorted(p.name for p in cwd.iterdir()), out.stderr[-3000:])
  return out, dump


def _jpeg(rs, h, w) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rs.randint(0, 255, (h, w, 3), np.uint8)).save(buf, format="JPEG")
  return buf.getvalue()


# -------------------------------------------------------------------------------- tools/build_tfds.py


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["fsspec", "tf.io.gfile"])
def test_build_tfds_writes_a_readable_dataset_to_a_remote_data_dir(tmp_path, backend):
  rs = np.random.RandomState(0)
  images = [_jpeg(rs, 20 + i, 30) for i in range(5)]
  captions = [f"a red circle number {i}" for i in range(5)]
  lines = [json.dumps({"binary": base64.b64encode(im).decode(), "caption": c}) for im, c in zip(images, captions)]
  lines.insert(2, json.dumps({"binary": "!!not base64", "caption": "a bad record"}))
  src = tmp_path / "in.json"
  src.write_text("\n".join(lines) + "\n")
  scheme = "ram" if backend == "tf.io.gfile" else "gs"
  out, dump = _run(
    tmp_path,
    REPO / "tools" / "build_tfds.py",
    "--kind",
    "image_text",
    "--input",
    src,
    "--data_dir",
    f"{scheme}://bucket/tfds",
    "--name",
    "tiny",
    "--examples_per_shard",
    2,
    ram=scheme == "ram",
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "written: 5" in out.stdout and "skipped[bad_base64]: 1" in out.stdout, out.stdout
  root = dump / "bucket" / "tfds" / "tiny" / "1.0.0"
  shards = sorted(p.name for p in root.iterdir() if "array_record" in p.name)
  assert shards == [f"tiny-train.array_record-0000{i}-of-00003" for i in range(3)], shards
  assert not any(p.name.startswith(".tmp") for p in root.iterdir())

  # What landed in the bucket is a complete TFDS dataset: read it back (from a local copy: the
  # reader's own GCS client cannot see the in-memory bucket) and compare with the input.
  import tensorflow_datasets as tfds

  source = tfds.builder_from_directory(str(root)).as_data_source("train")
  assert len(source) == 5
  for i in range(5):
    assert source[i]["image"] == images[i] and source[i]["caption"].decode() == captions[i]


@pytest.mark.slow
def test_retrieval_build_puts_its_caption_rows_in_the_remote_data_dir(tmp_path):
  rs = np.random.RandomState(1)
  seed = tmp_path / "seed"
  (seed / "bucket" / "coco" / "images").mkdir(parents=True)
  rows = []
  for i in range(3):
    (seed / "bucket" / "coco" / "images" / f"{i}.jpg").write_bytes(_jpeg(rs, 16, 16 + i))
    rows += [{"image": f"images/{i}.jpg", "caption": f"caption {j} of image {i}", "image_id": i} for j in range(i + 1)]
  (seed / "bucket" / "coco" / "train.json").write_text(json.dumps(rows))
  out, dump = _run(
    tmp_path,
    REPO / "tools" / "build_tfds.py",
    "--kind",
    "retrieval",
    "--input",
    "gs://bucket/coco/train.json",
    "--image_root",
    "gs://bucket/coco",
    "--data_dir",
    "gs://bucket/tfds",
    "--name",
    "coco",
    seed=seed,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  table = json.loads((dump / "bucket" / "tfds" / "coco" / "1.0.0" / "train.rows.json").read_text())["rows"]
  assert [(r["record"], r["caption"]) for r in table] == [
    (i, f"caption {j} of image {i}") for i in range(3) for j in range(i + 1)
  ]


# -------------------------------------------------------------------------------- trainer (main.py path)

TRAIN = r"""
import sys
from flax import nnx
from tests.configs import synthetic_retrieval
from x2vlm_jax import experiment, params_io
from x2vlm_jax import tasks
from x2vlm_jax.models import X2VLM
from x2vlm_jax.training import checkpointing

local = sys.argv[1]
tasks._TASKS["scripted"] = "tests.helpers.scripted_eval:ScriptedTask"
# Orbax writes arrays through tensorstore's own GCS client, which the in-memory bucket cannot serve:
# the checkpoints (only they) go to a local directory.
_init = checkpointing.Checkpointer.__init__
checkpointing.Checkpointer.__init__ = lambda self, workdir, **kw: _init(self, local + "/ckpt", **kw)
c = synthetic_retrieval.get_config("steps=3")
c.evals.val = dict(type="scripted", every=2, values=(7.0,))
export = local + "/export"  # init_from a local export (read through Orbax as well)
params_io.save(export, c.model, nnx.to_pure_dict(nnx.state(X2VLM(c.model, rngs=nnx.Rngs(0)), nnx.Param)))
c.init_from = export
experiment.train(c, "gs://bucket/run")
print("trained")
"""


@pytest.mark.slow
def test_trainer_writes_config_init_metrics_and_eval_outputs_to_a_gs_workdir(tmp_path):
  script = tmp_path / "train.py"
  script.write_text(TRAIN)
  local = tmp_path / "local"
  out, dump = _run(tmp_path, script, local, block_tensorflow=True)
  assert out.returncode == 0 and "trained" in out.stdout, out.stderr[-3000:]
  run = dump / "bucket" / "run"
  assert json.loads((run / "config.json").read_text())["total_steps"] == 3
  assert json.loads((run / "init.json").read_text())["source"].endswith("export")
  lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  # Every line is kept: an object store cannot append, and gcsfs turns "a" into "w" silently.
  assert [e["step"] for e in lines if "train/loss" in e] == [1, 2, 3], lines
  assert [(e["step"], e["val/score"]) for e in lines if "val/score" in e] == [(2, 7.0), (3, 7.0)]
  assert json.loads((run / "eval" / "val" / "step_2" / "metrics.json").read_text()) == {"score": 7.0}
  assert json.loads((run / "eval" / "val" / "step_2" / "predictions.json").read_text()) == {"call": 1}
  assert (local / "ckpt" / "checkpoints" / "3").is_dir()
  # TensorBoard events, written into the bucket with tensorflow blocked: metrics.jsonl's values.
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  acc = event_accumulator.EventAccumulator(str(run), size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  for e in lines:
    for tag, value in e.items():
      if tag != "step":
        (event,) = [t for t in acc.Tensors(tag) if t.step == e["step"]]
        assert float(tensor_util.make_ndarray(event.tensor_proto)) == np.float32(value), (tag, e["step"])


# -------------------------------------------------------------------------------- tools/evaluate.py


@pytest.mark.slow
def test_evaluate_reads_annotations_and_images_and_writes_outputs_on_gs(tmp_path):
  from flax import nnx

  from x2vlm_jax import params_io
  from x2vlm_jax.data.config import SHAPES_VOCAB
  from x2vlm_jax.models import X2VLM, get_preset

  cfg = get_preset("tiny", image_res=32)
  ckpt = tmp_path / "ckpt"
  params_io.save(
    str(ckpt), cfg, nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(0)), nnx.Param)), vocab_file=SHAPES_VOCAB
  )
  rs = np.random.RandomState(2)
  seed = tmp_path / "seed"
  (seed / "bucket" / "flickr").mkdir(parents=True)
  records = []
  for i in range(4):
    (seed / "bucket" / "flickr" / f"{i}.jpg").write_bytes(_jpeg(rs, 20, 24))
    records.append({"image": f"{i}.jpg", "caption": ["a red circle", f"two blue squares {i}"]})
  (seed / "bucket" / "flickr" / "test.json").write_text(json.dumps(records))
  out, dump = _run(
    tmp_path,
    REPO / "tools" / "evaluate.py",
    "--task",
    "retrieval",
    "--checkpoint",
    ckpt,
    "--annotations",
    "gs://bucket/flickr/test.json",
    "--image_root",
    "gs://bucket/flickr",
    "--output",
    "gs://bucket/eval/flickr",
    "--config.k_test=2",
    "--config.batch_size=4",
    "--config.max_tokens=8",
    block_tensorflow=True,
    seed=seed,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((dump / "bucket" / "eval" / "flickr" / "metrics.json").read_text())
  assert {"txt_r1", "img_r1", "r_mean"} <= set(metrics)
  predictions = json.loads((dump / "bucket" / "eval" / "flickr" / "predictions.json").read_text())
  assert len(predictions["i2t"]) == 4
