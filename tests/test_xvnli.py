"""XVNLI (official XVNLI.py / dataset/xvnli_dataset.py): the builder's counted skips, the training stream's
batch contract and a finite loss, and the evaluator's per-language accuracy against the model run
directly (test transform, tokenizer, cls head; numpy arg-max), with the official and IGLUE means."""

import json

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from tests.helpers.tools import load_tool
from x2vlm_jax import params_io
from x2vlm_jax.data import shapes, shapes_ml
from x2vlm_jax.inference.images import normalize, read_image
from x2vlm_jax.inference.tokenizer import Tokenizer
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.tasks.xvnli import XVNLITask, cls_logits

LABELS = ["contradiction", "entailment", "neutral"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("xvnli")
  rs = np.random.RandomState(0)
  scenes = []
  for i in range(4):
    img, objs, _ = shapes.render_scene(rs)
    (d / f"{1000 + i}.jpg").write_bytes(shapes.encode(img))
    scenes.append(objs)
  for lang in ("en", "de", "fr"):
    rows = [
      {"Flikr30kID": str(1000 + i), "sentence2": shapes_ml.caption(scenes[(i + k) % 4], lang), "gold_label": LABELS[k]}
      for i in range(4)
      for k in range(3)
    ]
    rows.append({"Flikr30kID": "1000", "sentence2": "x", "gold_label": "-"})  # officially "invalid"
    (d / f"test_{lang}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  return d


@pytest.fixture(scope="module")
def model_ckpt(tmp_path_factory):
  cfg = get_preset("tiny", image_res=32)
  cfg.heads.num_labels = 3
  model = X2VLM(cfg, rngs=nnx.Rngs(4))
  d = str(tmp_path_factory.mktemp("ckpt"))
  params_io.save(d, cfg, nnx.to_pure_dict(nnx.state(model, nnx.Param)), vocab_file=shapes_ml.SPM_MODEL)
  return cfg, model, d


@pytest.mark.timeout(900)
def test_accuracy_per_language_equals_the_model_run_directly(files, model_ckpt, tmp_path):
  cfg, model, ckpt = model_ckpt
  tok = Tokenizer(shapes_ml.SPM_MODEL, 40)
  files_arg = ",".join(str(files / f"test_{lang}.jsonl") for lang in ("en", "de", "fr"))
  rc = load_tool("evaluate").main(
    ["--task", "xvnli", "--checkpoint", ckpt, "--annotations", files_arg, "--image_root", str(files)]
    + ["--output", str(tmp_path / "out"), "--config.batch_size=4"]
  )
  assert rc == 0
  got = json.loads((tmp_path / "out" / "metrics.json").read_text())
  accs = []
  for lang in ("en", "de", "fr"):
    rows = [json.loads(x) for x in (files / f"test_{lang}.jsonl").read_text().splitlines()][:-1]
    images = normalize(np.stack([read_image(str(files / f"{r['Flikr30kID']}.jpg"), 32) for r in rows]))
    ids, mask = tok([r["sentence2"] for r in rows], 40, clean=40)
    logits = np.asarray(cls_logits(model, jax.numpy.asarray(images), ids, mask))
    acc = 100.0 * np.mean(logits.argmax(-1) == np.asarray([LABELS.index(r["gold_label"]) for r in rows]))
    assert got[f"{lang}_acc"] == pytest.approx(acc, abs=1e-4) and got[f"{lang}_skipped_labels"] == 1
    accs.append(acc)
  assert got["acc"] == pytest.approx(np.mean(accs), abs=1e-4)
  assert got["acc_non_en"] == pytest.approx(np.mean(accs[1:]), abs=1e-4)


@pytest.mark.slow
def test_build_stream_and_loss(files, model_ckpt, tmp_path):
  pytest.importorskip("tensorflow")
  cfg, model, _ = model_ckpt
  report = load_tool("build_tfds").build(
    "xvnli", str(files / "test_de.jsonl"), str(tmp_path / "data"), "xvnli_de", image_root=str(files), max_words=40
  )
  assert report.written == 12 and dict(report.skipped) == {"bad_label": 1}
  from x2vlm_jax.configs.finetune import common

  c = ml_collections.ConfigDict()
  c.model = cfg
  c.data = common.finetune_data(32, 4)
  c.data.update(data_dir=str(tmp_path / "data"), vocab_file=shapes_ml.SPM_MODEL, train=[("xvnli_de", "train", 1.0)])
  c.data.max_words = 40
  task = XVNLITask(c)
  batch = next(task.train_iterator(0, 0, 1))
  assert batch["images"].shape == (4, 32, 32, 3) and set(batch["labels"].tolist()) <= {0, 1, 2}
  assert (batch["text_ids"][:, 0] == 0).all()  # XLM-R <s>
  loss, metrics = task.loss(model, jax.tree.map(jax.numpy.asarray, batch), jax.random.key(0), 0)
  assert np.isfinite(float(loss)) and task.train_size() == 12
