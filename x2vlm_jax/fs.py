"""The one filesystem layer for workdirs, data dirs and exports: etils.epath.

Every path that may be remote (gs://, s3://) goes through `path()`; nothing writes a workdir or a data
dir with the builtin `open`, `os.makedirs`, `os.replace` or `shutil` (on "gs://b/x" those create a
local directory "./gs:/b/x" or fail). epath picks its backend per scheme: tf.io.gfile when
tensorflow is installed (data-building hosts), else fsspec (gcsfs for gs://: GPU hosts without
tensorflow); local paths always use the os module.

Libraries with their own I/O stay as they are: Orbax and ArrayRecord reach gs:// through their own
C++ clients (tensorstore, google-cloud-cpp), TensorBoard through tf.io.gfile; ArrayRecord *writes*
go to a local file first (`records.DatasetWriter`) so that every scheme epath knows works.
"""

import os
from typing import List

from etils import epath


def is_remote(p) -> bool:
  return "://" in os.fspath(p)


def path(p) -> epath.Path:
  """A local path (made absolute: Orbax requires it) or a URL, as an epath.Path."""
  p = os.fspath(p)
  return epath.Path(p if is_remote(p) else os.path.abspath(p))


def glob(pattern: str) -> List[str]:
  """Sorted paths matching a glob pattern whose wildcards may be in any component after the bucket
  ("gs://b/cc3m/*.json", "data/*/part-*.json")."""
  parts = os.fspath(pattern).split("/")
  first = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
  if first is None:
    return [pattern] if path(pattern).exists() else []
  root = path("/".join(parts[:first]) or ".")
  return sorted(str(p) for p in root.glob("/".join(parts[first:])))
