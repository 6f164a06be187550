"""Console hygiene for main.py, the demo and the CLI tools: silence what is expected on a CPU machine,
keep what a user should read. Call `quiet()` first thing, before jax or tensorflow are imported.

Silenced (each is a known, harmless line):
  * tensorflow's native log lines (its absl C++ logging ignores TF_CPP_MIN_LOG_LEVEL in TF 2.21): oneDNN
    notices, "Could not find cuda drivers", CPU-feature hints, "failed call to cuInit" on a machine
    without a GPU. They are dropped line by line from file descriptor 2 by a `grep -v` filter process;
    every other line (warnings, errors, tracebacks, crash messages) passes.
  * INFO chatter of orbax (checkpoint manager internals), jax's backend probing ("Unable to initialize
    backend 'tpu'") and TFDS's "fields info.[...] differ on disk and in the code".
Warnings and errors always pass. `X2VLM_VERBOSE=1` turns all of this off.
"""

import atexit
import logging as pylogging
import os
import shutil
import subprocess
import sys

# Substrings of expected native lines printed while tensorflow loads.
NATIVE_NOISE = (
  "All log messages before absl::InitializeLog() is called",
  "oneDNN custom operations are on",
  "cudart_stub.cc",
  "Could not find cuda drivers",
  "cpu_feature_guard.cc",
  "To enable the following instructions",
  "rebuild TensorFlow with the appropriate",
  "failed call to cuInit",
  "oneDNN supports DT_INT64 only on platforms with AVX-512",
  "Unable to register cuDNN factory",
  "Unable to register cuFFT factory",
  "Unable to register cuBLAS factory",
  "computation placer already registered",
  "TF-TRT Warning",
)


def verbose() -> bool:
  return os.environ.get("X2VLM_VERBOSE", "") not in ("", "0")


# The filter process: `grep -v` reads what this process writes to fd 2, drops the noise lines and writes
# the rest, line by line. A separate process survives a crash of this one (an abort's last words are not
# lost: it drains the pipe until this process's end of it closes); grep starts in milliseconds.
_installed = []


def filter_native_stderr(noise=NATIVE_NOISE) -> None:
  """Routes file descriptor 2 (where native libraries log) through a filter process for the rest of
  this process's life. Python's sys.stderr writes there too, so tracebacks pass through unchanged."""
  grep = shutil.which("grep")
  if _installed or grep is None:  # without grep, stderr stays as it is
    return
  sys.stderr.flush()
  original = os.dup(2)
  read, write = os.pipe()
  patterns = [arg for n in noise for arg in ("-e", n)]
  child = subprocess.Popen(
    [grep, "-v", "-F", "--line-buffered", *patterns], stdin=read, stdout=original, close_fds=True
  )
  os.close(read)
  os.dup2(write, 2)
  os.close(write)
  _installed.append((child, original))

  def restore():
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(original, 2)  # closes our end of the pipe: the filter drains it and exits
    try:
      child.wait(timeout=5)
    except subprocess.TimeoutExpired:
      pass

  atexit.register(restore)


class ExpectedInfo(pylogging.Filter):
  """Drops the expected INFO lines of libraries (absl and Python logging records)."""

  def filter(self, record):
    if record.levelno >= pylogging.WARNING:
      return True
    path = record.pathname.replace("\\", "/")
    if "/orbax/" in path or record.name.startswith("orbax"):
      return False
    if record.name.startswith("jax._src.xla_bridge") or path.endswith("jax/_src/xla_bridge.py"):
      return False
    if "differ on disk and in the code" in str(record.msg):
      return False
    return True


def quiet(verbosity: str = "info") -> None:
  """Call before importing jax/tensorflow (main.py, tools/*.py). absl logging at `verbosity`."""
  from absl import logging

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # still honoured by tensorflow's own C++ logging
  if not verbose():
    filter_native_stderr()
    handler = logging.get_absl_handler()
    if not any(isinstance(f, ExpectedInfo) for f in handler.filters):
      handler.addFilter(ExpectedInfo())
  logging.use_absl_handler()
  logging.set_verbosity(verbosity)
  from absl import flags

  if not flags.FLAGS.is_parsed():
    # argparse tools never parse absl flags; without this absl prefixes the first log line with
    # "Logging before flag parsing goes to stderr". absl's app.run parses them again as usual.
    flags.FLAGS.mark_as_parsed()
