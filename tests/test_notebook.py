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


def test_images_with_text_put_each_text_under_its_own_image():
  _require("matplotlib")
  import matplotlib

  matplotlib.use("Agg")
  images = [np.full((20, 30, 3), v, np.uint8) for v in (10, 200, 90)]
  texts = ["1. a red circle (itm +1.25, itc 0.31)\n2. a blue square", "ranked: red", "free-form: blue"]
  fig = visualize.show_with_text(images, texts, ["image 0", "image 1", "image 2"], columns=2, size=1.5)
  panels = [ax for ax in fig.axes if ax.images]
  assert [ax.get_xlabel() for ax in panels] == [
    "1. a red circle (itm\n+1.25, itc 0.31)\n2. a blue square",  # wrapped to the 1.5-inch panel at 8 pt: 22 chars
    "ranked: red",
    "free-form: blue",
  ] and [ax.get_title() for ax in panels] == [
    "image 0",
    "image 1",
    "image 2",
  ]
  assert [int(ax.images[0].get_array()[0, 0, 0]) for ax in panels] == [10, 200, 90]  # each image in its panel
  assert len(fig.axes) == 4 and not fig.axes[3].axison  # 2 x 2 grid, the spare panel blank
  with pytest.raises(ValueError, match="3 images but 2 texts"):
    visualize.show_with_text(images, texts[:2])


# An IPython start-up file of the kernel: tensorflow (and its text / datasets packages) cannot be
# imported (as if not installed: epath's probe finds no spec) and every `import` of them is recorded, so
# the test, not a cell of the user's notebook, checks that none happened.
_BLOCK_TENSORFLOW = """import builtins, sys

_NAMES = ("tensorflow", "tensorflow_text", "tensorflow_datasets")
builtins._x2vlm_tensorflow_imports = []
for _name in _NAMES:
  sys.modules[_name] = None  # find_spec → None, import → ImportError
_import = builtins.__import__


def _recording_import(name, *args, **kwargs):
  if name.split(".")[0] in _NAMES:
    builtins._x2vlm_tensorflow_imports.append(name)
  return _import(name, *args, **kwargs)


builtins.__import__ = _recording_import
"""


def _execute(tmp_path, monkeypatch, with_demo_export: bool):
  """Runs a copy of the notebook in TMP/notebooks (so that an `artifacts/` of the checkout is not
  found) with tensorflow blocked; → (text of every output, outputs by cell id, tensorflow imports)."""
  nbformat = _require("nbformat")
  nbclient = _require("nbclient")
  _require("ipykernel")
  _require("matplotlib")
  startup = tmp_path / "ipython" / "profile_default" / "startup"
  startup.mkdir(parents=True)
  (startup / "00-block-tensorflow.py").write_text(_BLOCK_TENSORFLOW)
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", xla.cpu_flags(1))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
  if with_demo_export:  # what `make demo` leaves: a pre-training export without an answer decoder ...
    from x2vlm_jax import inference

    inference.save_random(str(tmp_path / "artifacts" / "demo" / "export"), "tiny", image_res=64, seed=1)
    # ... and tools/finetune_shapes.py --task vqa: an export with one.
    inference.save_random(str(tmp_path / "artifacts" / "shapes_vqa" / "export"), "tiny", image_res=64, decoder_layers=1)
  workdir = tmp_path / "notebooks"
  workdir.mkdir()
  nb = nbformat.read(os.path.join(REPO, "notebooks", "x2vlm_colab.ipynb"), as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell("print('tensorflow imports:', builtins._x2vlm_tensorflow_imports)"))
  nbclient.NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
  ).execute()  # raises on a failing cell
  outputs = {c.id: c.outputs for c in nb.cells if c.cell_type == "code"}
  text = "".join(o.get("text", "") for outs in outputs.values() for o in outs)
  return text, outputs


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("with_demo_export", [False, True], ids=["random_weights", "demo_export"])
def test_notebook_executes_without_tensorflow(tmp_path, monkeypatch, with_demo_export):
  text, outputs = _execute(tmp_path, monkeypatch, with_demo_export)
  assert "tensorflow imports: []" in text, text[-2000:]
  assert "image 0:" in text and "itm" in text and "P(match | image 0" in text
  assert text.rstrip().endswith("done\ntensorflow imports: []"), text[-500:]
  if with_demo_export:  # the demo's exports are found and said so; no random checkpoint is written
    assert "using the demo's pre-training export ../artifacts/demo/export" in text, text[:2000]
    assert "VQA: ../artifacts/shapes_vqa/export" in text and "RANDOM" not in text, text[:2000]
  else:
    assert "RANDOM weights" in text and "VQA: the same checkpoint" in text, text[:2000]
  # VQA (ranked over the answer list, and free-form) and captions ran.
  assert text.count("answer (ranked):") == 4 and text.count("answer (free-form):") == 4, text
  assert text.count("caption of image") == 4, text
  from x2vlm_jax.data import shapes

  assert set(re.findall(r"answer \(ranked\): '([^']*)'", text)) <= set(shapes.COLORS), text  # from the list
  # Rounded numbers: no score is printed with more than 2 decimals.
  assert not re.search(r"\d\.\d{3,}", text), re.findall(r".{30}\d\.\d{3,}.{10}", text)
  # Pictures: the retrieval grid, the grounding boxes, the VQA answers and the captions on the images.
  figures = [c for c, outs in outputs.items() if any("image/png" in o.get("data", {}) for o in outs)]
  assert len(figures) == 4, figures
