"""xGQA (official XGQA.py): the `xgqa` evaluator reads the IGLUE/LXMERT and GQA-original test formats, and
each language's accuracy equals the VQA evaluator's exact match on the same questions in the VQA format;
the mean over languages and the IGLUE non-English mean."""

import json

import numpy as np
import pytest
from flax import nnx

from tests.helpers.tools import load_tool
from x2vlm_jax import params_io
from x2vlm_jax.data import shapes, shapes_ml
from x2vlm_jax.evaluation.xgqa import xgqa_records
from x2vlm_jax.inference.tokenizer import Tokenizer
from x2vlm_jax.models import X2VLM, get_preset

QUESTIONS = {
  "en": [("what color is the circle", "red"), ("is there a square", "yes"), ("what shape is blue", "square")],
  "de": [("welche farbe hat der kreis", "rot"), ("gibt es ein quadrat", "ja"), ("welche form ist blau", "quadrat")],
}
ANSWERS = ["red", "yes", "square", "rot", "ja", "quadrat", "blue", "no"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("xgqa")
  rs = np.random.RandomState(0)
  for i in range(3):
    (d / f"n{i}.jpg").write_bytes(shapes.encode(shapes.render_scene(rs)[0]))
  for lang, qs in QUESTIONS.items():
    iglue = [{"question_id": 100 + j, "img_id": f"n{j}", "sent": q, "label": {a: 1.0}} for j, (q, a) in enumerate(qs)]
    (d / f"test_{lang}.json").write_text(json.dumps(iglue))
    vqa = [{"question_id": 100 + j, "image": f"n{j}.jpg", "question": q, "answer": a} for j, (q, a) in enumerate(qs)]
    (d / f"vqa_{lang}.json").write_text(json.dumps(vqa))
  (d / "answer_list.json").write_text(json.dumps(ANSWERS))
  (d / "ans2label.json").write_text(json.dumps({a: i for i, a in enumerate(ANSWERS)}))  # GQA's form
  return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  cfg = get_preset("tiny", image_res=32)
  cfg.text.vocab_size = Tokenizer(shapes_ml.SPM_MODEL).vocab_size
  cfg.heads.decoder_layers = 1
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(3)), nnx.Param))
  d = str(tmp_path_factory.mktemp("ckpt"))
  params_io.save(d, cfg, params, vocab_file=shapes_ml.SPM_MODEL)
  return d


def _run(ckpt, d, out, task, annotations, answer_list="answer_list.json"):
  rc = load_tool("evaluate").main(
    ["--task", task, "--checkpoint", ckpt, "--annotations", annotations, "--image_root", str(d)]
    + ["--output", str(out), f"--config.answer_list={d / answer_list}", "--config.k_test=4"]
    + ["--config.batch_size=4", "--config.max_tokens=24"]
  )
  assert rc == 0
  return json.loads((out / "metrics.json").read_text())


# slow: the VQA evaluator run once per language file and once on each file alone; the fast tier keeps
# the VQA evaluator against its references (test_eval_vqa.py) and the GQA formats below.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_xgqa_per_language_equals_vqa_exact_match(ckpt, files, tmp_path):
  got = _run(
    ckpt, files, tmp_path / "x", "xgqa", f"{files / 'test_en.json'},{files / 'test_de.json'}", "ans2label.json"
  )
  refs = {lang: _run(ckpt, files, tmp_path / lang, "vqa", str(files / f"vqa_{lang}.json")) for lang in QUESTIONS}
  for lang, ref in refs.items():
    assert got[f"{lang}_acc"] == pytest.approx(ref["exact_match"]) and got[f"{lang}_num_questions"] == 3
  assert got["acc"] == pytest.approx(np.mean([r["exact_match"] for r in refs.values()]))
  assert got["acc_non_en"] == pytest.approx(refs["de"]["exact_match"])


def test_gqa_original_format(tmp_path):
  (tmp_path / "g.json").write_text(json.dumps({"7": {"imageId": "n1", "question": "q?", "answer": "no"}}))
  assert xgqa_records(str(tmp_path / "g.json")) == [
    {"question_id": "7", "image": "n1.jpg", "question": "q?", "answer": "no"}
  ]


def test_gqa_training_formats_build_like_vqa_records(files, tmp_path):
  pytest.importorskip("tensorflow")
  build = load_tool("build_tfds").build
  lxmert = [{"question_id": 1, "img_id": "n0", "sent": "what color", "label": {"red": 1.0, "rot": 0.5}}]
  (tmp_path / "l.json").write_text(json.dumps(lxmert))
  (tmp_path / "g.json").write_text(json.dumps({"2": {"imageId": "n1", "question": "is it", "answer": "yes"}}))
  for name in ("l", "g"):
    report = build("xgqa", str(tmp_path / f"{name}.json"), str(tmp_path / "d"), name, image_root=str(files))
    assert report.written == 1 and not report.skipped
  from x2vlm_jax.data.finetune.xgqa import gqa_to_vqa_records

  assert gqa_to_vqa_records(lxmert)[0]["answer"] == ["red", "rot"]  # each weighs 1/2, the official weights
