"""gs:// against a real GCS API server on 127.0.0.1 (fake-gcs-server; tests/helpers/gcs_server.py), through
the real clients: gcsfs (etils.epath's gs:// backend: config, metrics, evaluation outputs, dataset files)
and tensorstore (Orbax's checkpoints and exports). tf.io.gfile cannot be pointed at an emulator (its GCS
endpoint is compiled in; see the helper), so tensorflow is blocked where gs:// paths are used at run time
(a GPU host) and the dataset build runs with EPATH_USE_TF=0.

  * tools/build_tfds.py writes a TFDS dataset into the bucket; read back, it holds the input records;
  * Orbax writes an export into the bucket; tools/evaluate.py reads it, the annotations and the images from
    the bucket and writes its outputs there: the same metrics as the same weights evaluated locally;
  * main.py with its workdir in the bucket is killed (SIGKILL) after a checkpoint, resumed, and gives the
    per-step metrics of an uninterrupted local run bit for bit, one row per step, then exports into the
    bucket and is evaluated there.
"""

import base64
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers.gcs_server import GCSServer

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
NO_TF = REPO / "tests" / "helpers" / "no_tensorflow.py"
TINY = REPO / "tests" / "configs" / "synthetic_tiny.py"
STEPS = 16
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


@pytest.fixture(scope="module")
def gcs():
  server = GCSServer()
  yield server
  server.stop()


def _env(gcs):
  """The subprocesses' environment: the server's endpoint, one fake device, and (inherited from
  tests/conftest.py) the session's compilation cache."""
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", **gcs.env)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count=1 {FAST_COMPILE_FLAGS}"
  return env


def _jpeg(rs, h, w) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rs.randint(0, 255, (h, w, 3), np.uint8)).save(buf, format="JPEG")
  return buf.getvalue()


def _read(gcs, key):
  data = gcs.get(key)
  return data.decode() if data is not None else ""


def test_the_server_keeps_answering_after_its_log_outgrows_a_pipe_buffer(gcs):
  """fake-gcs-server logs a line per request to a pipe; unread, that pipe fills after ~64 KiB and the
  server stops answering (every client then hangs). 1500 requests log well over 64 KiB."""
  gcs.put("ping.txt", b"pong")
  for _ in range(1500):
    assert gcs.get("ping.txt") == b"pong"
  assert "ping.txt" in gcs.log_tail(5)


def test_build_tfds_writes_a_readable_dataset_into_a_bucket(gcs, tmp_path):
  rs = np.random.RandomState(0)
  images = [_jpeg(rs, 20 + i, 30) for i in range(5)]
  captions = [f"a red circle number {i}" for i in range(5)]
  src = tmp_path / "in.json"
  src.write_text(
    "".join(
      json.dumps({"binary": base64.b64encode(im).decode(), "caption": c}) + "\n" for im, c in zip(images, captions)
    )
  )
  cmd = [sys.executable, str(REPO / "tools" / "build_tfds.py"), "--kind", "image_text", "--input", str(src)]
  cmd += ["--data_dir", "gs://bucket/tfds", "--name", "tiny", "--examples_per_shard", "2"]
  out = subprocess.run(cmd, cwd=tmp_path, env=_env(gcs), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "written: 5" in out.stdout, out.stdout
  assert not (tmp_path / "gs:").exists()

  keys = gcs.list("tfds/tiny/1.0.0/")
  names = sorted(k.rsplit("/", 1)[-1] for k in keys)
  assert [n for n in names if "array_record" in n] == [f"tiny-train.array_record-0000{i}-of-00003" for i in range(3)]
  assert not any(n.startswith(".tmp") for n in names), names
  local = tmp_path / "copy"
  for key in keys:
    out = local / key[len("tfds/tiny/1.0.0/") :]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gcs.get(key))
  import tensorflow_datasets as tfds

  source = tfds.builder_from_directory(str(local)).as_data_source("train")
  assert len(source) == 5
  for i in range(5):
    assert source[i]["image"] == images[i] and source[i]["caption"].decode() == captions[i]


class _Launch:
  def __init__(self, env, workdir, log, *flags):
    self.log = log
    cmd = [sys.executable, str(NO_TF), "main.py", f"--config={TINY}:steps={STEPS}", f"--workdir={workdir}"]
    cmd += ["--config.checkpoint_every=4", "--config.log_every=1", *flags]
    self._out = open(log, "w")
    self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._out, stderr=subprocess.STDOUT)

  def tail(self):
    return "\n".join(pathlib.Path(self.log).read_text(errors="replace").splitlines()[-40:])

  def wait_ok(self, timeout):
    try:
      rc = self.proc.wait(timeout=timeout)
    finally:
      self._out.close()
    assert rc == 0, f"exit {rc}\n{self.tail()}"


def _rows(text):
  out = []
  for line in text.splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      pass
  return out


def _by_step(rows):
  return {e["step"]: {k: v for k, v in e.items() if not k.startswith("perf/")} for e in rows}


def _evaluate(gcs, checkpoint, output, cwd):
  cmd = [
    sys.executable,
    str(NO_TF),
    str(REPO / "tools" / "evaluate.py"),
    "--task",
    "retrieval",
    "--checkpoint",
    checkpoint,
  ]
  cmd += ["--annotations", "gs://bucket/flickr/test.json", "--image_root", "gs://bucket/flickr", "--output", output]
  cmd += ["--config.k_test=2", "--config.batch_size=4", "--config.max_tokens=8"]
  out = subprocess.run(cmd, cwd=cwd, env=_env(gcs), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]


EXPORT = r"""
import sys
from flax import nnx
from x2vlm_jax import params_io
from x2vlm_jax.data.config import SHAPES_VOCAB
from x2vlm_jax.models import X2VLM, get_preset

cfg = get_preset("tiny", image_res=32)
params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(0)), nnx.Param))
for target in sys.argv[1:]:
  params_io.save(target, cfg, params, vocab_file=SHAPES_VOCAB)
print("saved")
"""


def _put_flickr(gcs):
  rs = np.random.RandomState(2)
  records = []
  for i in range(4):
    gcs.put(f"flickr/{i}.jpg", _jpeg(rs, 20, 24))
    records.append({"image": f"{i}.jpg", "caption": ["a red circle", f"two blue squares {i}"]})
  gcs.put("flickr/test.json", json.dumps(records).encode())


@pytest.mark.timeout(900)
def test_export_through_orbax_into_a_bucket_and_evaluate_with_everything_in_the_bucket(gcs, tmp_path):
  """Orbax (tensorstore + epath/gcsfs) writes an export into the bucket; tools/evaluate.py reads it, the
  annotations and the images from the bucket and writes its outputs there: the metrics of the same
  weights exported and evaluated locally."""
  _put_flickr(gcs)
  script = tmp_path / "export.py"
  script.write_text(EXPORT)
  cmd = [sys.executable, str(NO_TF), str(script), "gs://bucket/exports/tiny", str(tmp_path / "local_export")]
  out = subprocess.run(cmd, cwd=tmp_path, env=_env(gcs), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and "saved" in out.stdout, out.stderr[-3000:]
  assert gcs.get("exports/tiny/model_config.json") and gcs.list("exports/tiny/params/")
  _evaluate(gcs, "gs://bucket/exports/tiny", "gs://bucket/eval/tiny", tmp_path)
  _evaluate(gcs, str(tmp_path / "local_export"), str(tmp_path / "eval_local"), tmp_path)
  metrics = json.loads(_read(gcs, "eval/tiny/metrics.json"))
  local = json.loads((tmp_path / "eval_local" / "metrics.json").read_text())
  for k in ("txt_r1", "img_r1", "r_mean"):
    assert metrics[k] == local[k], (k, metrics[k], local[k])
  assert len(json.loads(_read(gcs, "eval/tiny/predictions.json"))["i2t"]) == 4
  assert json.loads(_read(gcs, "eval/tiny/eval_config.json"))["checkpoint"] == "gs://bucket/exports/tiny"
  assert not (tmp_path / "gs:").exists()


# This test used to hang (a thread of main.py waiting forever in fsspec's sync(), in metrics.jsonl's
# write_text or Orbax's finalize). Not gcsfs: the fake-gcs-server process itself was blocked in write(2)
# on its stderr, a pipe the PyPI wrapper never reads (see GCSServer.__init__ and the test above).
@pytest.mark.timeout(1500)
def test_train_in_a_bucket_kill9_resume_exactly_export_and_evaluate(gcs, tmp_path):
  # The session's compilation cache (inherited from tests/conftest.py): the same program as
  # test_trainer.py's single-device launches (tests/configs/synthetic_tiny.py, 16 steps), so whichever
  # runs first compiles it for the other.
  env = _env(gcs)

  reference = _Launch(env, tmp_path / "reference", tmp_path / "reference.log")
  reference.wait_ok(timeout=600)  # also fills the compilation cache: the runs below execute the same program
  want = _by_step(_rows((tmp_path / "reference" / "metrics.jsonl").read_text()))
  assert sorted(want) == list(range(1, STEPS + 1))

  def committed():
    # Orbax on GCS marks each item (run/checkpoints/4/state/commit_success.txt, …) before the step
    # itself (run/checkpoints/4/commit_success.txt); only the step's own marker makes it restorable.
    parts = [k.split("/") for k in gcs.list("run/checkpoints/")]
    return sorted(int(p[2]) for p in parts if len(p) == 4 and p[3] == "commit_success.txt" and p[2].isdigit())

  killed = _Launch(env, "gs://bucket/run", tmp_path / "killed.log")
  deadline = time.monotonic() + 600
  while True:
    saved = committed()
    logged = [e["step"] for e in _rows(_read(gcs, "run/metrics.jsonl"))]
    if saved and logged and max(logged) > saved[-1]:
      break
    assert killed.proc.poll() is None, f"exited before the kill\n{killed.tail()}"
    assert time.monotonic() < deadline, killed.tail()
    time.sleep(0.05)
  killed.proc.send_signal(signal.SIGKILL)
  killed.proc.wait(timeout=60)
  killed._out.close()
  resume_from = committed()[-1]
  at_kill = max(e["step"] for e in _rows(_read(gcs, "run/metrics.jsonl")))
  assert resume_from < at_kill < STEPS, "the kill must land mid-run, after a checkpoint"

  resumed = _Launch(env, "gs://bucket/run", tmp_path / "resumed.log")
  resumed.wait_ok(timeout=600)
  assert f"at step {resume_from}" in pathlib.Path(resumed.log).read_text(), resumed.tail()
  rows = _rows(_read(gcs, "run/metrics.jsonl"))
  assert [e["step"] for e in rows] == list(range(1, STEPS + 1))  # one row per step in the bucket too
  got = _by_step(rows)
  for step in sorted(want):
    assert got[step] == want[step], f"step {step}: resumed in the bucket {got[step]} != local {want[step]}"
  assert json.loads(_read(gcs, "run/config.json"))["total_steps"] == STEPS
  assert len(_rows(_read(gcs, "run/config_history.jsonl"))) == 2
  # TensorBoard events in the bucket, one file per launch (the killed one uploaded at its checkpoints):
  # every step, with the local run's loss.
  names = [n for n in gcs.list("run/") if "/events.out.tfevents." in n]
  assert len(names) == 2, names
  events_dir = tmp_path / "events"
  events_dir.mkdir()
  for n in names:
    (events_dir / n.split("/")[-1]).write_bytes(gcs.get(n))
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  acc = event_accumulator.EventAccumulator(str(events_dir), size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  losses = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors("train/loss")}
  assert sorted(losses) == list(range(1, STEPS + 1))
  assert all(losses[s] == np.float32(want[s]["train/loss"]) for s in losses), (losses, want)
  assert gcs.get("run/export/model_config.json") and gcs.get("run/export/vocab.txt")

  # Evaluation: annotations and images in the bucket, the bucket's export, outputs into the bucket.
  _put_flickr(gcs)
  _evaluate(gcs, "gs://bucket/run/export", "gs://bucket/eval/run", tmp_path)
  _evaluate(gcs, str(tmp_path / "reference" / "export"), str(tmp_path / "eval_reference"), tmp_path)
  metrics = json.loads(_read(gcs, "eval/run/metrics.json"))
  local = json.loads((tmp_path / "eval_reference" / "metrics.json").read_text())
  for k in ("txt_r1", "img_r1", "r_mean"):
    assert metrics[k] == local[k], (k, metrics[k], local[k])
  assert len(json.loads(_read(gcs, "eval/run/predictions.json"))["i2t"]) == 4
  assert json.loads(_read(gcs, "eval/run/eval_config.json"))["checkpoint"] == "gs://bucket/run/export"
  assert not (tmp_path / "gs:").exists() and not (REPO / "gs:").exists()
