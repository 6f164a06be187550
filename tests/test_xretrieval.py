"""Multilingual retrieval (official XRetrieval.py, docs/reference.md §5.7): the `xretrieval` evaluator gives,
for each language's file, exactly what the English `retrieval` evaluator gives on that file alone, and
the averages of the official script (all languages) and of IGLUE (non-English); `tools/evaluate.py --task
xretrieval` on the official-format files of `shapes_ml` with a checkpoint that carries its SentencePiece
model; the task's training step runs on the multilingual TFDS set built by its builder."""

import json

import numpy as np
import pytest

from tests.helpers.tools import load_tool
from x2vlm_jax import inference
from x2vlm_jax.data import shapes_ml
from x2vlm_jax.evaluation import multilingual


@pytest.fixture(scope="module")
def ml_tasks(tmp_path_factory):
  d = tmp_path_factory.mktemp("mltasks")
  shapes_ml.write_tasks(str(d), num_train=12, num_test=6, seed=0)
  return d / shapes_ml.TASKS_NAME


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("ckpt"))
  return inference.save_random(d, "tiny", image_res=32, vocab_file=shapes_ml.SPM_MODEL, seed=1)


def test_files_are_translations_of_one_scene_set(ml_tasks):
  tests = {lang: json.loads((ml_tasks / f"retrieval_test_{lang}.json").read_text()) for lang in shapes_ml.LANGUAGES}
  assert [r["image"] for r in tests["en"]] == [r["image"] for r in tests["de"]] == [r["image"] for r in tests["fr"]]
  assert tests["de"][0]["caption"][0].startswith(("ein", "eine"))
  train = json.loads((ml_tasks / "retrieval_train_fr.json").read_text())
  assert {"image", "caption", "image_id"} <= set(train[0]) and train[0]["caption"].startswith("un ")
  # the questions: the same question ids and images in every language, answers in the answer list
  qs = {lang: json.loads((ml_tasks / f"vqa_test_{lang}.json").read_text()) for lang in shapes_ml.LANGUAGES}
  assert [(q["question_id"], q["image"]) for q in qs["en"]] == [(q["question_id"], q["image"]) for q in qs["de"]]
  answers = set(json.loads((ml_tasks / "answer_list.json").read_text()))
  assert all(q["answer"] in answers for lang in qs for q in qs[lang])
  yes_no = {q["question_id"]: q["answer"] for q in qs["en"] if q["question"].startswith("is there")}
  assert yes_no and all(
    {"yes": "ja", "no": "nein"}[yes_no[q["question_id"]]] == q["answer"] for q in qs["de"] if q["question_id"] in yes_no
  )


def test_questions_are_read_from_the_objects():
  objs = [dict(color="red", shape="diamond", size="small", cx=1.0, cy=1.0)]
  rs = np.random.RandomState(0)
  asked = shapes_ml.questions(objs, rs)
  assert asked[0] == {
    "en": ("what color is the diamond", "red"),
    "de": ("welche farbe hat die Raute", "rot"),
    "fr": ("de quelle couleur est le losange", "rouge"),
  }
  exists = asked[1]
  present = exists["en"][0] == "is there a red diamond"
  assert exists["en"][1] == ("yes" if present else "no") and exists["fr"][1] == ("oui" if present else "non")


def _run(evaluate, ckpt, ml_tasks, out, task, annotations, *extra):
  rc = evaluate.main(
    [
      "--task",
      task,
      "--checkpoint",
      ckpt,
      "--annotations",
      annotations,
      "--image_root",
      str(ml_tasks),
      "--output",
      str(out),
      "--config.k_test=4",
      "--config.batch_size=4",
      "--config.max_tokens=48",
      *extra,
    ]
  )
  assert rc == 0
  return json.loads((out / "metrics.json").read_text())


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_per_language_metrics_equal_the_english_evaluator_per_file(ckpt, ml_tasks, tmp_path):
  evaluate = load_tool("evaluate")
  files = ",".join(str(ml_tasks / f"retrieval_test_{lang}.json") for lang in ("en", "de", "fr"))
  got = _run(evaluate, ckpt, ml_tasks, tmp_path / "x", "xretrieval", files)
  assert got["num_languages"] == 3
  for lang in ("en", "de", "fr"):
    ref = _run(evaluate, ckpt, ml_tasks, tmp_path / lang, "retrieval", str(ml_tasks / f"retrieval_test_{lang}.json"))
    for k in ("r_mean", "txt_r1", "img_r1", "itc_r_mean", "num_texts"):
      assert got[f"{lang}_{k}"] == pytest.approx(ref[k]), (lang, k)
  rm = [got[f"{lang}_r_mean"] for lang in ("en", "de", "fr")]
  assert got["r_mean"] == pytest.approx(np.mean(rm)) and got["r_mean_non_en"] == pytest.approx(np.mean(rm[1:]))
  # languages named explicitly (file stems of other datasets need not end in the language)
  named = _run(evaluate, ckpt, ml_tasks, tmp_path / "n", "xretrieval", files, "--config.languages=EN,DE,FR")
  assert named["DE_r_mean"] == pytest.approx(got["de_r_mean"]) and "r_mean_non_en" in named


def test_language_names_and_averages():
  assert multilingual.language_names(["a/xflickrco_test_de.json", "test_en.json"]) == ["de", "en"]
  with pytest.raises(ValueError, match="2 names for 1"):
    multilingual.language_names(["x.json"], "en,de")
  out = multilingual.averages({"en": {"acc": 0.9}, "de": {"acc": 0.5}, "id": {"acc": 0.3}}, ["acc"])
  assert out["acc"] == pytest.approx((0.9 + 0.5 + 0.3) / 3) and out["acc_non_en"] == pytest.approx(0.4)
  assert out["de_acc"] == 0.5 and "acc_non_en" not in multilingual.averages({"en": {"acc": 1.0}}, ["acc"])


def _to_iglue(rows, train):
  if train:
    by_image = {}
    for r in rows:
      by_image.setdefault(r["image_id"], {"sentences": [], "id": r["image_id"], "img_path": r["image"]})
      by_image[r["image_id"]]["sentences"].append(r["caption"])
    return list(by_image.values())
  return [{"sentences": r["caption"], "id": i, "img_path": r["image"]} for i, r in enumerate(rows)]


@pytest.mark.timeout(900)
def test_iglue_files_give_the_official_format_results(ckpt, ml_tasks, tmp_path):
  for lang in ("de",):
    rows = json.loads((ml_tasks / f"retrieval_test_{lang}.json").read_text())
    (tmp_path / f"test_{lang}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _to_iglue(rows, False)))
  evaluate = load_tool("evaluate")
  a = _run(evaluate, ckpt, ml_tasks, tmp_path / "a", "xretrieval", str(ml_tasks / "retrieval_test_de.json"))
  b = _run(evaluate, ckpt, ml_tasks, tmp_path / "b", "xretrieval", str(tmp_path / "test_de.jsonl"))
  assert b["de_r_mean"] == pytest.approx(a["de_r_mean"]) and b["de_num_texts"] == a["de_num_texts"] > 0


def test_iglue_training_file_builds_like_the_official_rows(ml_tasks, tmp_path):
  pytest.importorskip("tensorflow")
  build = load_tool("build_tfds").build
  rows = json.loads((ml_tasks / "retrieval_train_de.json").read_text())
  (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _to_iglue(rows, True)))
  official = build(
    "xretrieval", str(ml_tasks / "retrieval_train_de.json"), str(tmp_path / "d"), "a", image_root=str(ml_tasks)
  )
  iglue = build("xretrieval", str(tmp_path / "train.jsonl"), str(tmp_path / "d"), "b", image_root=str(ml_tasks))
  assert iglue.written == official.written == len(rows) and iglue.extra == official.extra


def test_answer_list_may_be_xgqa_ans2label(tmp_path):
  from x2vlm_jax.inference import generation

  (tmp_path / "a.json").write_text(json.dumps({"yes": 0, "no": 1, "red": 2}))
  assert generation.read_answer_list(str(tmp_path / "a.json"), allow_ans2label=True) == ["yes", "no", "red"]
  with pytest.raises(ValueError, match="expected a non-empty list"):  # VQA v2's answer_list must be a list
    generation.read_answer_list(str(tmp_path / "a.json"))


def test_wit_lines_become_the_retrieval_format(ml_tasks, tmp_path):
  import base64

  wit = load_tool("wit_to_retrieval")
  img = base64.b64encode((ml_tasks / "images" / "test_00000.jpg").read_bytes()).decode()
  lines = [
    {"image_url": "u1", "image_content": img, "caption_reference_description": "ein Kreis"},
    {"image_url": "u2", "image_content": img, "caption_reference_description": ""},  # skipped, as officially
    {"image_url": "u1", "image_content": img, "caption_reference_description": "un cercle"},
  ]
  (tmp_path / "test_de.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
  target, n, skipped, images = wit.convert(str(tmp_path / "test_de.jsonl"), str(tmp_path / "out"), "test")
  rows = json.loads(open(target).read())
  assert (n, skipped, images) == (2, 1, 1) and rows[0]["caption"] == ["ein Kreis", "un cercle"]
  assert (tmp_path / "out" / rows[0]["image"]).read_bytes() == (ml_tasks / "images" / "test_00000.jpg").read_bytes()
  target, *_ = wit.convert(str(tmp_path / "test_de.jsonl"), str(tmp_path / "out"), "train")
  assert [r["image_id"] for r in json.loads(open(target).read())] == ["u1", "u1"]
