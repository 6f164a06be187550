"""notebooks/x2vlm_colab.ipynb runs top to bottom in a fresh kernel without GPU, internet or tensorflow
(imports of it are blocked in the kernel), on a tiny random-weight checkpoint it writes itself; and the
grounding boxes are drawn where the model put them."""

import os
import re

import numpy as np
import pytest

from tests.helpers import xla
from x2vlm_jax.inference import visualize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _require(module):
  # CI installs requirements-test.txt: a missing notebook runner must fail there, not skip.
  if os.environ.get("CI"):
    return __import__(module)
  return pytest.importorskip(module)


def test_boxes_are_drawn_at_the_predicted_place():
  _require("matplotlib")
  import matplotlib

  matplotlib.use("Agg")
  # (cx, cy, w, h) = (0.5, 0.25, 0.2, 0.1) on a 200 x 100 image → x 80, y 20, w 40, h 10 pixels.
  np.testing.assert_allclose(visualize.boxes_to_pixels([0.5, 0.25, 0.2, 0.1], 200, 100), [[80, 20, 40, 10]])
  images = [np.zeros((100, 200, 3), np.uint8), np.zeros((50, 50, 3), np.uint8)]
  fig = visualize.draw_boxes(images, [[0.5, 0.25, 0.2, 0.1], [0.5, 0.5, 1.0, 1.0]], ["a", "b"])
  rects = [ax.patches[0] for ax in fig.axes[:2]]
  assert [(r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rects] == [(80, 20, 40, 10), (0, 0, 50, 50)]
  assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "b"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook_executes_without_tensorflow(monkeypatch):
  nbformat = _require("nbformat")
  nbclient = _require("nbclient")
  _require("ipykernel")
  _require("matplotlib")
  monkeypatch.setenv("X2VLM_BLOCK_TENSORFLOW", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", xla.cpu_flags(1))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
  path = os.path.join(REPO, "notebooks", "x2vlm_colab.ipynb")
  nb = nbformat.read(path, as_version=4)
  nbclient.NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}
  ).execute()  # raises on a failing cell
  outputs = {c.id: c.outputs for c in nb.cells if c.cell_type == "code"}
  text = "".join(o.get("text", "") for outs in outputs.values() for o in outs)
  assert "image 0:" in text and "itm" in text and "P(match | image 0" in text and text.rstrip().endswith("done")
  # VQA (ranked over the answer list, and free-form) and captions ran on the random checkpoint.
  assert text.count("answer (ranked):") == 4 and text.count("answer (free-form):") == 4, text
  assert text.count("caption of image") == 4, text
  from x2vlm_jax.data import shapes

  assert set(re.findall(r"answer \(ranked\): '([^']*)'", text)) <= set(shapes.COLORS), text  # from the list
  assert any("image/png" in o.get("data", {}) for outs in outputs.values() for o in outs), "no figure drawn"
