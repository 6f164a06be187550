"""TensorBoard event files of the trainer's scalars, written without tensorflow.

Why not clu's SummaryWriter (tf.summary underneath): importing tensorflow costs every trainer launch
~4.5 CPU-s and ~8 s of wall time on the 2-core CPU box (docs/performance.md, "TensorBoard without
tensorflow"), on runs whose input pipeline does not need it (synthetic batches, prepared
ArrayRecord shards), and the GPU hosts have no tensorflow at all, so they got no TensorBoard. What
tf.summary writes is simple: a TFRecord-framed file of `Event` protos. The protos and the framing
(length, masked CRC32C of the length, bytes, masked CRC32C of the bytes) come from the `tensorboard`
package itself, which needs no tensorflow; each scalar is a `Summary.Value` as `tf.summary.scalar`
writes it (a float32 scalar tensor with the "scalars" plugin's metadata on a tag's first value), so
TensorBoard's and tensorflow's readers see what they saw before. tensorboardX would be a second
event writer with its own gs:// client; this file goes through x2vlm_jax.fs like every other output.

Files: `events.out.tfevents.<time>.<host>.<pid>.<n>.v2` in the workdir, a new one per launch (as
tf.summary does; TensorBoard reads them all). Locally each write is appended and flushed. An object
store cannot append (fs.py), so there the file's bytes are kept in memory and the object rewritten at
most every `flush_secs`, at every checkpoint (the trainer flushes then, so a preempted run keeps the
events of the steps it saved) and at close (tf.io.gfile's GCS writer also uploads the whole file on
every flush); a file that reaches `max_remote_bytes` is closed and the next one started, which bounds both
the memory and the upload.
"""

import os
import socket
import struct
import time
from typing import Dict

from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from x2vlm_jax import fs

FILE_VERSION = "brain.Event:2"


def record(data: bytes) -> bytes:
  """One TFRecord: uint64 length, masked CRC32C of those 8 bytes, the data, masked CRC32C of the data
  (little-endian), the framing TensorBoard's and tf.data's readers check."""
  length = struct.pack("<Q", len(data))
  return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def scalar_value(tag: str, value: float, with_metadata: bool) -> summary_pb2.Summary.Value:
  """A scalar as tf.summary.scalar writes it: a float32 rank-0 tensor; the plugin metadata that files
  the tag under TensorBoard's scalars dashboard on the tag's first value."""
  v = summary_pb2.Summary.Value(
    tag=tag,
    tensor=tensor_pb2.TensorProto(
      dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(), float_val=[value]
    ),
  )
  if with_metadata:
    v.metadata.plugin_data.plugin_name = "scalars"  # no data_class, as tf.summary: TensorBoard infers it
  return v


class EventWriter:
  """Scalars of one process into TensorBoard event files under `logdir` (local or gs://)."""

  def __init__(self, logdir, *, flush_secs: float = 60.0, max_remote_bytes: int = 16 << 20):
    self.logdir = fs.path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    self.remote = fs.is_remote(self.logdir)
    self.flush_secs = flush_secs
    self.max_remote_bytes = max_remote_bytes
    self._files = 0
    self._tags = set()
    self._local = None  # the open local file
    self._pending = bytearray()  # remote: the current file's bytes
    self._uploaded = 0  # remote: len(self._pending) at the last upload
    self._last_upload = time.monotonic()
    self._start_file()

  def _start_file(self) -> None:
    now = time.time()
    name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.{self._files}.v2"
    self._files += 1
    self.path = self.logdir / name
    first = record(event_pb2.Event(wall_time=now, file_version=FILE_VERSION).SerializeToString())
    if self.remote:
      self._pending = bytearray(first)
      self._uploaded = 0
    else:
      self._local = self.path.open("ab")
      self._local.write(first)
      self._local.flush()

  def write_scalars(self, step: int, scalars: Dict[str, float]) -> None:
    summary = summary_pb2.Summary()
    for tag, value in scalars.items():
      summary.value.append(scalar_value(tag, float(value), with_metadata=tag not in self._tags))
      self._tags.add(tag)
    data = record(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary).SerializeToString())
    if not self.remote:
      self._local.write(data)
      self._local.flush()
      return
    self._pending += data
    if time.monotonic() - self._last_upload >= self.flush_secs or len(self._pending) >= self.max_remote_bytes:
      self.flush()

  def flush(self) -> None:
    if not self.remote:
      if self._local is not None:
        self._local.flush()
      return
    if len(self._pending) > self._uploaded and self._upload():
      if len(self._pending) >= self.max_remote_bytes:
        self._start_file()

  def _upload(self) -> bool:
    """The whole current file to the object store; a failure is logged and retried at the next flush
    (nothing is dropped: the bytes stay in memory until an upload succeeds)."""
    self._last_upload = time.monotonic()
    try:
      self.path.write_bytes(bytes(self._pending))
    except Exception as e:  # noqa: BLE001 — a transient store error must not stop the training run
      logging.warning("TensorBoard events: uploading %s failed (%s); retried at the next flush", self.path, e)
      return False
    self._uploaded = len(self._pending)
    return True

  def close(self) -> None:
    if self.remote:
      if len(self._pending) > self._uploaded and not self._upload():
        logging.error(
          "TensorBoard events: the last %d bytes of %s were not uploaded",
          len(self._pending) - self._uploaded,
          self.path,
        )
      return
    if self._local is not None:
      self._local.close()
      self._local = None
