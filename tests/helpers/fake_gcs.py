"""Runs a script with a non-local filesystem in memory, for the remote-workdir / data-dir tests.

  python tests/helpers/fake_gcs.py --dump DIR [--seed DIR] [--block_tensorflow] [--ram] SCRIPT [ARGS...]

Default: fsspec's in-memory filesystem is registered as the `gs`/`gcs` protocols (with gcsfs's path
conventions, "bucket/key" without a leading slash, and its no-append semantics) and etils.epath must use its
fsspec backend, which it does when tensorflow cannot be imported (`--block_tensorflow`: a GPU host) or
when EPATH_USE_TF=0 (tensorflow present for the data tools). `--ram`: tensorflow's own in-memory filesystem `ram://`
is registered as an epath scheme on epath's tf.io.gfile backend, the backend gs:// uses wherever
tensorflow is installed (etils knows no ram:// by itself, hence the registration into its tables).

Either way nothing reaches a real bucket; what the script wrote under the scheme is copied to
DIR/<bucket>/<key> at exit, and files under `--seed DIR/<bucket>/...` are put there first. Builtin
`open`/`os.makedirs` on a "gs://b/x" string bypass all this and show up as a local "gs:" directory
in the working directory, which the tests check for.
"""

import atexit
import os
import runpy
import sys


def install_ram(dump: str, seed: str = ""):
  from etils.epath import backend, gpath, register

  gpath._URI_SCHEMES = gpath._URI_SCHEMES | {"ram"}  # noqa: SLF001
  gpath._URI_MAP_ROOT["ram://"] = "/ram/"  # noqa: SLF001
  gpath._PREFIX_TO_BACKEND["ram"] = backend.tf_backend  # noqa: SLF001
  gpath._URI_PREFIXES = gpath._URI_PREFIXES + ("ram://",)  # noqa: SLF001
  register.register_path_cls("ram://")(gpath.PosixGPath)
  import tensorflow as tf

  if seed:
    for root, _, files in os.walk(seed):
      for f in files:
        local = os.path.join(root, f)
        tf.io.gfile.makedirs("ram://" + os.path.relpath(root, seed))
        tf.io.gfile.copy(local, "ram://" + os.path.relpath(local, seed))

  def dump_store():
    for top in tf.io.gfile.glob("ram://*"):
      for root, _, files in tf.io.gfile.walk(top):
        for f in files:
          src = root.rstrip("/") + "/" + f
          out = os.path.join(dump, src[len("ram://") :])
          os.makedirs(os.path.dirname(out), exist_ok=True)
          with tf.io.gfile.GFile(src, "rb") as fin, open(out, "wb") as fout:
            fout.write(fin.read())

  atexit.register(dump_store)


def install(dump: str, seed: str = "", block_tensorflow: bool = False):
  if block_tensorflow:
    for name in ("tensorflow", "tensorflow_text", "tensorflow_datasets"):
      sys.modules[name] = None  # any import now raises ImportError; find_spec returns None
  import fsspec
  from fsspec.implementations.memory import MemoryFileSystem

  class FakeGCS(MemoryFileSystem):
    protocol = ("gs", "gcs")
    root_marker = ""
    store = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
      path = fsspec.utils.stringify_path(path)
      for prefix in ("gs://", "gcs://"):
        if path.startswith(prefix):
          path = path[len(prefix) :]
      return path.strip("/")

    def _open(self, path, mode="rb", **kwargs):
      # As gcsfs does: objects cannot be appended to, and mode "a" silently becomes "w".
      return super()._open(path, mode.replace("a", "w"), **kwargs)

  fsspec.register_implementation("gs", FakeGCS, clobber=True)
  fsspec.register_implementation("gcs", FakeGCS, clobber=True)

  from etils import epath

  backend = epath.Path("gs://bucket/x")._backend  # noqa: SLF001
  assert type(backend).__name__ == "_FileSystemSpecBackend", f"epath would use {backend} for gs://"

  fake = FakeGCS()
  if seed:
    for root, _, files in os.walk(seed):
      for f in files:
        local = os.path.join(root, f)
        with open(local, "rb") as src, fake.open("gs://" + os.path.relpath(local, seed), "wb") as dst:
          dst.write(src.read())

  def dump_store():
    for key, mem in list(FakeGCS.store.items()):
      out = os.path.join(dump, key)
      os.makedirs(os.path.dirname(out), exist_ok=True)
      with open(out, "wb") as f:
        f.write(mem.getvalue())

  atexit.register(dump_store)


def main():
  argv = sys.argv[1:]
  opts = {"--dump": "", "--seed": ""}
  block = ram = False
  while argv and argv[0].startswith("--"):
    flag = argv.pop(0)
    if flag == "--block_tensorflow":
      block = True
    elif flag == "--ram":
      ram = True
    else:
      opts[flag] = argv.pop(0)
  if ram:
    install_ram(opts["--dump"], opts["--seed"])
  else:
    install(opts["--dump"], opts["--seed"], block)
  script = argv[0]
  sys.argv = argv
  sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
  runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
  main()
