"""The trainer's TensorBoard events without tensorflow (x2vlm_jax/training/events.py), against
tensorflow's own TFRecord writer and tf.summary, read back by TensorBoard's reader."""

import numpy as np
import pytest

from x2vlm_jax import fs
from x2vlm_jax.training import events, metrics

# Distinct values per tag and step, so a swapped tag or step cannot pass.
SCALARS = {
  1: {"train/loss": 20.5, "image/itc": 3.25, "train/lr": 1e-4},
  2: {"train/loss": 19.75, "image/itc": float("nan"), "train/lr": 2e-4},
  5: {"train/loss": 18.125, "image/itc": 2.5, "train/lr": 3e-4, "val/txt_r1": 41.5},
}


def _tensorboard_read(logdir):
  """({tag: {step: value}}, {tag: (plugin name, data class)}) through TensorBoard's event reader."""
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  tags = acc.Tags()["tensors"]
  values = {t: {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(t)} for t in tags}
  meta = {t: (acc.SummaryMetadata(t).plugin_data.plugin_name, acc.SummaryMetadata(t).data_class) for t in tags}
  return values, meta


def _expected():
  out = {}
  for step, scalars in SCALARS.items():
    for tag, v in scalars.items():
      out.setdefault(tag, {})[step] = float(np.float32(v))
  return out


def _assert_same(got, want):
  assert set(got) == set(want)
  for tag in want:
    assert sorted(got[tag]) == sorted(want[tag]), tag
    np.testing.assert_array_equal([got[tag][s] for s in sorted(want[tag])], [want[tag][s] for s in sorted(want[tag])])


def test_record_framing_is_tensorflows_tfrecord(tmp_path):
  import tensorflow as tf

  payloads = [b"", b"x", bytes(range(256)) * 3, b"event \x00\xff bytes"]
  path = str(tmp_path / "ref.tfrecord")
  with tf.io.TFRecordWriter(path) as w:
    for p in payloads:
      w.write(p)
  assert b"".join(events.record(p) for p in payloads) == (tmp_path / "ref.tfrecord").read_bytes()


def test_scalars_read_back_like_tf_summary_writes_them(tmp_path):
  import tensorflow as tf

  ours = tmp_path / "ours"
  w = events.EventWriter(ours)
  for step, scalars in SCALARS.items():
    w.write_scalars(step, scalars)
  w.close()
  (name,) = [p.name for p in ours.iterdir()]
  assert name.startswith("events.out.tfevents.") and name.endswith(".v2")

  ref = tmp_path / "tf_summary"
  writer = tf.summary.create_file_writer(str(ref))
  with writer.as_default():
    for step, scalars in SCALARS.items():
      for tag, v in scalars.items():
        tf.summary.scalar(tag, v, step=step)
  writer.close()

  got, got_meta = _tensorboard_read(ours)
  want, want_meta = _tensorboard_read(ref)
  _assert_same(want, _expected())  # the reference itself holds the float32 of each value
  _assert_same(got, want)
  assert got_meta == want_meta and {name for name, _ in got_meta.values()} == {"scalars"}

  # tensorflow's reader checks every record's CRCs; the first event names the file version.
  first, *rest = tf.compat.v1.train.summary_iterator(str(ours / name))
  assert first.file_version == events.FILE_VERSION
  assert [e.step for e in rest] == list(SCALARS)


def test_object_store_rewrites_the_file_per_flush_and_starts_a_new_one_when_full(tmp_path, monkeypatch):
  """The remote path (no appends) on a local directory: nothing is uploaded before a flush, a flush
  uploads the whole file, a full file is closed and the next started; every value is read back."""
  monkeypatch.setattr(fs, "is_remote", lambda p: True)
  uploads = []
  real_write = type(fs.path(tmp_path)).write_bytes

  def counting_write(self, data):
    uploads.append((self.name, len(data)))
    return real_write(self, data)

  monkeypatch.setattr(type(fs.path(tmp_path)), "write_bytes", counting_write)
  # Sizes here: the file-version record 40 bytes, step 1's event 143, step 2's 104, step 5's 143.
  w = events.EventWriter(tmp_path / "run", flush_secs=3600, max_remote_bytes=250)
  w.write_scalars(1, SCALARS[1])
  assert list((tmp_path / "run").iterdir()) == [] and uploads == []
  w.flush()
  w.write_scalars(2, SCALARS[2])  # past max_remote_bytes: uploaded at once, and a new file begun
  w.write_scalars(5, SCALARS[5])
  assert len(uploads) == 2
  w.close()
  (a, first), (a2, second), (b, third) = uploads
  assert a == a2 != b and first < second and (a, b) == tuple(sorted((a, b)))
  assert {p.name: p.stat().st_size for p in (tmp_path / "run").iterdir()} == {a: second, b: third}
  got, _ = _tensorboard_read(tmp_path / "run")
  _assert_same(got, _expected())


def test_a_failed_upload_is_retried_without_losing_values(tmp_path, monkeypatch):
  monkeypatch.setattr(fs, "is_remote", lambda p: True)
  cls = type(fs.path(tmp_path))
  real_write = cls.write_bytes
  failures = [RuntimeError("503 from the store")]

  def flaky_write(self, data):
    if failures:
      raise failures.pop()
    return real_write(self, data)

  monkeypatch.setattr(cls, "write_bytes", flaky_write)
  w = events.EventWriter(tmp_path / "run", flush_secs=0)
  for step, scalars in SCALARS.items():
    w.write_scalars(step, scalars)  # the first upload fails, the next ones carry everything
  w.close()
  got, _ = _tensorboard_read(tmp_path / "run")
  _assert_same(got, _expected())


@pytest.mark.parametrize("primary", [True, False])
def test_metrics_logger_writes_events_on_process_0_only(tmp_path, primary, monkeypatch):
  monkeypatch.setattr(metrics.jax, "process_index", lambda: 0 if primary else 1)
  logger = metrics.MetricsLogger(str(tmp_path), total_steps=5, examples_per_step=8)
  for step, scalars in SCALARS.items():
    logger.log(step, scalars, timing=False)
  logger.close()
  files = [p for p in tmp_path.iterdir() if p.name.startswith("events.out.tfevents.")]
  if not primary:
    assert files == []
    return
  got, _ = _tensorboard_read(tmp_path)
  _assert_same(got, _expected())
