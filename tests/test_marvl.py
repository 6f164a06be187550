"""MaRVL (official MARVL.py): the `marvl` evaluator's per-language accuracy equals the NLVR2 evaluator on
each language's file alone, with the official mean and the IGLUE non-English mean; the IGLUE → NLVR2
format conversion of the official utils/marvl_preproc.py."""

import json

import numpy as np
import pytest
from flax import nnx

from tests.helpers.tools import load_tool
from x2vlm_jax import params_io
from x2vlm_jax.data import shapes, shapes_ml
from x2vlm_jax.models import X2VLM, get_preset


@pytest.fixture(scope="module")
def marvl_files(tmp_path_factory):
  d = tmp_path_factory.mktemp("marvl")
  rs = np.random.RandomState(0)
  scenes = []
  for i in range(6):
    img, objs, _ = shapes.render_scene(rs)
    (d / f"{i}.jpg").write_bytes(shapes.encode(img))
    scenes.append(objs)
  for lang in ("id", "sw", "de"):
    rows = []
    for i in range(5):  # "the left image shows <caption of image i or i+1>"
      j = i + (i % 2)
      rows.append(
        {"images": [f"{i}.jpg", f"{i + 1}.jpg"], "sentence": shapes_ml.caption(scenes[j], "de"), "label": j == i}
      )
    (d / f"marvl-{lang}.json").write_text(json.dumps(rows[: 3 + len(lang) % 3], ensure_ascii=False))
  return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  cfg = get_preset("tiny", image_res=32)
  cfg.heads.nlvr = True
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(2)), nnx.Param))
  d = str(tmp_path_factory.mktemp("ckpt"))
  params_io.save(d, cfg, params, vocab_file=shapes_ml.SPM_MODEL)
  return d


def _run(ckpt, d, out, task, annotations, *extra):
  rc = load_tool("evaluate").main(
    ["--task", task, "--checkpoint", ckpt, "--annotations", annotations, "--image_root", str(d)]
    + ["--output", str(out), "--config.batch_size=4", *extra]
  )
  assert rc == 0
  return json.loads((out / "metrics.json").read_text())


# slow: the NLVR2 evaluator run per language and per file; the fast tier keeps the NLVR2 evaluator
# against its pairwise reference (test_nlvr2.py) and the MaRVL preprocessing below.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_marvl_per_language_equals_nlvr2_per_file(ckpt, marvl_files, tmp_path):
  d = marvl_files
  files = ",".join(str(d / f"marvl-{lang}.json") for lang in ("id", "sw", "de"))
  got = _run(ckpt, d, tmp_path / "m", "marvl", files)
  accs = []
  for lang in ("id", "sw", "de"):
    ref = _run(ckpt, d, tmp_path / lang, "nlvr2", str(d / f"marvl-{lang}.json"), "--config.splits=test")
    assert got[f"{lang}_acc"] == pytest.approx(ref["test_acc"]) and got[f"{lang}_num"] == ref["num_test"]
    accs.append(ref["test_acc"])
  assert got["acc"] == pytest.approx(np.mean(accs)) and got["acc_non_en"] == pytest.approx(np.mean(accs))


def test_marvl_preproc_writes_the_official_nlvr2_records(tmp_path):
  src = tmp_path / "ann"
  src.mkdir()
  line = {"caption": "Gambar kiri", "label": True, "left_img": "42-Gedung.jpg", "right_img": "42-Rumah.jpg"}
  (src / "marvl-id.jsonl").write_text(json.dumps(dict(line, language="id")) + "\n")
  assert load_tool("marvl_preproc").main(["--input", str(src), "--output", str(tmp_path / "out")]) == 0
  rows = json.loads((tmp_path / "out" / "marvl-id.json").read_text())
  assert rows == [
    {
      "sentence": "Gambar kiri",
      "label": True,
      "images": ["images/marvl_official/id/images/42/42-Gedung.jpg", "images/marvl_official/id/images/42/42-Rumah.jpg"],
    }
  ]
