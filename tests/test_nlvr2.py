"""NLVR2 (docs/reference.md §5.3) against independent recomputations:

* head wiring: each image's fused [CLS] is the multi_modal pass of the sentence against THAT image
  alone, the head reads [CLS(image 0) ; CLS(image 1)], and swapping the images changes the logits
  only through that order (a manual recomputation that swaps the halves of the head's input);
* the loss is the cross-entropy of a numpy reference, padding rows excluded;
* the evaluator's accuracy equals argmax of the same logits computed pair by pair, over 4 devices
  as over 1, and `dev_test_mean_acc` (the official, test-leaking selection) is the mean of both;
* the builder counts bad records by reason and the stream keeps each pair's images in order.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.helpers import xla
from x2vlm_jax import sharding as shd
from x2vlm_jax import tasks
from x2vlm_jax.data.config import SHAPES_VOCAB
from x2vlm_jax.inference.images import normalize, read_image
from x2vlm_jax.inference.tokenizer import Tokenizer
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.objectives import classification_loss as cross_entropy  # the NLVR2 task's loss
from x2vlm_jax.tasks.nlvr2 import nlvr_forward


@pytest.fixture(scope="module")
def model():
  cfg = get_preset("tiny")
  cfg.heads.nlvr = True
  m = X2VLM(cfg, rngs=nnx.Rngs(2))
  # A larger head output so that logits of different pairs are far apart.
  m.nlvr_head.fc1.kernel.set_value(m.nlvr_head.fc1.kernel.get_value() * 50.0)
  return cfg, m


@nnx.jit
def _fused_cls(m, ids, mask, image):
  """The sentence against ONE image: embeddings + all layers, cross-attention to that image only."""
  embeds, _ = m.encode_image(image)
  return m.text.multi_modal(ids, mask, embeds, jnp.ones(embeds.shape[:2], jnp.int32))[:, 0]


_forward = nnx.jit(nlvr_forward)
_head = nnx.jit(lambda m, x: m.nlvr_head(x))


def test_head_reads_each_image_alone_and_swapping_only_swaps_the_halves(model):
  cfg, m = model
  rs = np.random.RandomState(0)
  img0, img1 = (jnp.asarray(rs.randn(3, 32, 32, 3), jnp.float32) for _ in range(2))
  ids = jnp.asarray([[2, 9, 12, 20, 3, 0], [2, 30, 3, 0, 0, 0], [2, 5, 6, 7, 8, 3]], jnp.int32)
  mask = (ids > 0).astype(jnp.int32)
  f0, f1 = _fused_cls(m, ids, mask, img0), _fused_cls(m, ids, mask, img1)
  forward = _forward(m, jnp.stack([img0, img1], 1), ids, mask)
  swapped = _forward(m, jnp.stack([img1, img0], 1), ids, mask)
  np.testing.assert_allclose(forward, _head(m, jnp.concatenate([f0, f1], -1)), atol=1e-5)
  np.testing.assert_allclose(swapped, _head(m, jnp.concatenate([f1, f0], -1)), atol=1e-5)
  assert np.abs(np.asarray(forward) - np.asarray(swapped)).max() > 1e-2  # the order matters
  # The head is the official build_mlp(2H → 4H → LN → GELU → 2) applied to that concatenation.
  h = cfg.text.hidden
  x = np.concatenate([np.asarray(f0), np.asarray(f1)], -1).astype(np.float64)
  p = nnx.to_pure_dict(nnx.state(m.nlvr_head, nnx.Param))
  y = x @ p["fc0"]["kernel"] + p["fc0"]["bias"]
  assert p["fc0"]["kernel"].shape == (2 * h, 4 * h)
  y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + cfg.head_layer_norm_eps)
  y = y * p["ln"]["scale"] + p["ln"]["bias"]
  from scipy.special import erf

  y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
  np.testing.assert_allclose(forward, y @ p["fc1"]["kernel"] + p["fc1"]["bias"], atol=1e-3, rtol=1e-4)


def test_loss_is_the_cross_entropy_over_real_rows():
  logits = jnp.asarray([[2.0, -1.0], [0.5, 0.25], [3.0, 1.0], [-2.0, 4.0]])
  labels = jnp.asarray([1, 0, 0, 1])
  valid = jnp.asarray([1.0, 1.0, 0.0, 1.0])
  loss, acc = cross_entropy(logits, labels, valid)
  lg = np.asarray(logits, np.float64)
  nll = [np.log(np.exp(r).sum()) - r[y] for r, y in zip(lg, [1, 0, 0, 1])]
  assert float(loss) == pytest.approx((nll[0] + nll[1] + nll[3]) / 3, rel=1e-6)
  assert float(acc) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def nlvr_files(tmp_path_factory):
  d = tmp_path_factory.mktemp("nlvr")
  rs = np.random.RandomState(3)
  for i in range(6):
    Image.fromarray(rs.randint(0, 255, (30 + 4 * i, 40, 3), np.uint8)).save(d / f"im{i}.jpg")
  words = [
    "the left image has more red objects than the right image",
    "both images contain a circle",
    "there is a blue square in the right image",
  ]

  def rows(n, off):
    return [
      {
        "images": [f"im{(i + off) % 6}.jpg", f"im{(i + off + 1 + i % 4) % 6}.jpg"],
        "sentence": words[i % 3],
        "label": [True, "False", False, "True"][i % 4],
      }
      for i in range(n)
    ]

  (d / "dev.json").write_text(json.dumps(rows(7, 0)))
  (d / "test.json").write_text(json.dumps(rows(5, 2)))
  return d


def _evaluate(cfg, m, d, devices):
  c = ml_collections.ConfigDict()
  c.model = cfg
  c.data = ml_collections.ConfigDict({"vocab_file": SHAPES_VOCAB})
  e = ml_collections.ConfigDict(
    dict(
      type="nlvr2",
      annotations=f"{d / 'dev.json'},{d / 'test.json'}",
      splits="dev,test",
      image_root=str(d),
      batch_size=2,
    )
  )
  mesh = shd.create_mesh((len(devices), 1, 1), devices=devices)
  graphdef, params = nnx.split(m, nnx.Param)
  params = nnx.to_pure_dict(params)
  with jax.set_mesh(mesh):
    return tasks.build_evaluator("nlvr2", c, e, mesh)(nnx.graphdef(X2VLM(cfg, rngs=nnx.Rngs(0))), params)


def test_evaluator_accuracy_per_split_sharded_equals_one_device_and_pairwise_reference(model, nlvr_files):
  cfg, m = model
  d = nlvr_files
  one, p1 = _evaluate(cfg, m, d, jax.devices()[:1])
  four, p4 = _evaluate(cfg, m, d, jax.devices()[:4])
  assert one == pytest.approx(four)
  assert [p["p_true"] for p in p1] == pytest.approx([p["p_true"] for p in p4], abs=1e-3)
  # Reference: each record on its own, through the model's recipe, official label parsing.
  tok = Tokenizer(SHAPES_VOCAB, 40)
  for split in ("dev", "test"):
    records = json.loads((d / f"{split}.json").read_text())
    correct = []
    for r in records:
      imgs = normalize(np.stack([read_image(str(d / p), 32) for p in r["images"]]))[None]
      ids, mask = tok([r["sentence"]], clean=30)
      logits = np.asarray(_forward(m, jnp.asarray(imgs), jnp.asarray(ids), jnp.asarray(mask)))[0]
      correct.append(int(np.argmax(logits)) == int(r["label"] in (True, "True")))
    assert one[f"{split}_acc"] == pytest.approx(np.mean(correct)), split
    assert one[f"num_{split}"] == len(records)
  assert one["dev_test_mean_acc"] == pytest.approx((one["dev_acc"] + one["test_acc"]) / 2)
  assert {p["split"] for p in p1} == {"dev", "test"} and len(p1) == 12


@pytest.mark.slow
def test_evaluate_cli_gives_the_in_process_evaluator_results(model, nlvr_files):
  """The same evaluation through the eval-only CLI on a checkpoint directory (tools/evaluate.py --task
  nlvr2); the in-process evaluator is checked against the pairwise reference above."""
  import os
  import subprocess
  import sys

  from x2vlm_jax import params_io

  cfg, m = model
  d = nlvr_files
  one, _ = _evaluate(cfg, m, d, jax.devices()[:1])
  ckpt, out_dir = d / "ckpt", d / "out"
  params_io.save(str(ckpt), cfg, nnx.to_pure_dict(nnx.state(m, nnx.Param)), vocab_file=SHAPES_VOCAB)
  out = subprocess.run(
    [
      sys.executable,
      "tools/evaluate.py",
      "--task",
      "nlvr2",
      "--checkpoint",
      str(ckpt),
      "--annotations",
      f"{d / 'dev.json'},{d / 'test.json'}",
      "--config.splits=dev,test",
      "--config.batch_size=2",
      "--image_root",
      str(d),
      "--output",
      str(out_dir),
    ],
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, XLA_FLAGS=xla.cpu_flags(1)),
  )
  assert out.returncode == 0, out.stderr[-2000:]
  cli = json.loads((out_dir / "metrics.json").read_text())
  assert {k: cli[k] for k in ("dev_acc", "test_acc")} == pytest.approx({k: one[k] for k in ("dev_acc", "test_acc")})
  assert len(json.loads((out_dir / "predictions.json").read_text())) == 12


def test_evaluator_rejects_an_unknown_label(model, nlvr_files, tmp_path):
  cfg, m = model
  records = json.loads((nlvr_files / "dev.json").read_text())
  records[3]["label"] = "yes"
  (tmp_path / "dev.json").write_text(json.dumps(records))
  (tmp_path / "test.json").write_text((nlvr_files / "test.json").read_text())
  with pytest.raises(ValueError, match=r"record 3: unsupported label 'yes'"):
    _evaluate(cfg, m, tmp_path, jax.devices()[:1])


def test_builder_counts_bad_records_and_the_stream_keeps_pairs_in_order(tmp_path):
  pytest.importorskip("tensorflow")
  from x2vlm_jax.configs.finetune.common import finetune_data
  from x2vlm_jax.data.finetune import nlvr2
  from x2vlm_jax.tasks.nlvr2 import NLVR2Task

  colours = {"r.jpg": (230, 20, 20), "g.jpg": (20, 200, 30), "b.jpg": (20, 40, 230)}
  for name, c in colours.items():
    Image.fromarray(np.full((40, 50, 3), c, np.uint8)).save(tmp_path / name, quality=95)
  (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  rows = [
    {"images": ["r.jpg", "g.jpg"], "sentence": "the left image is red", "label": True},
    {"images": ["r.jpg"], "sentence": "one image", "label": True},  # bad_field_type
    {"images": ["g.jpg", "b.jpg"], "sentence": "maybe", "label": "maybe"},  # bad_label
    {"images": ["g.jpg", "b.jpg"], "sentence": "...", "label": False},  # empty_caption
    {"images": ["g.jpg", "b.jpg"], "label": False},  # missing_field
    {"images": ["g.jpg", "missing.jpg"], "sentence": "lost", "label": False},  # image_not_found
    {"images": ["broken.jpg", "b.jpg"], "sentence": "broken", "label": "True"},  # corrupt_image
    {"images": ["b.jpg", "g.jpg"], "sentence": "the left image is blue", "label": "False"},
  ]
  (tmp_path / "train.json").write_text(json.dumps(rows))
  report = nlvr2.build(str(tmp_path / "train.json"), str(tmp_path), str(tmp_path / "tfds"), "n")
  assert report.written == 2 and report.extra["images"] == 3
  assert dict(report.skipped) == {
    "bad_field_type": 1,
    "bad_label": 1,
    "empty_caption": 1,
    "missing_field": 1,
    "image_not_found": 1,
    "corrupt_image": 1,
  }
  c = finetune_data(32, 2)
  c.data_dir, c.vocab_file, c.train, c.max_tokens, c.randaug = (
    str(tmp_path / "tfds"),
    SHAPES_VOCAB,
    [("n", "train")],
    12,
    False,
  )
  assert nlvr2.train_size(c) == 2
  b = next(nlvr2.create_iterator(c, spec=NLVR2Task.spec, seed=0, process_index=0, process_count=1))
  assert b["images"].shape == (2, 2, 32, 32, 3)
  mean = np.asarray([0.48145466, 0.4578275, 0.40821073]) * 255
  std = np.asarray([0.26862954, 0.26130258, 0.27577711]) * 255
  tok = Tokenizer(SHAPES_VOCAB, 12)
  want = {"the left image is red": (("r.jpg", "g.jpg"), 1), "the left image is blue": (("b.jpg", "g.jpg"), 0)}
  for i in range(2):
    text = tok.decode(b["text_ids"][i])
    names, label = want[text]
    assert int(b["labels"][i]) == label
    for j, name in enumerate(names):  # image 0 stays image 0 (the "left" one)
      got = b["images"][i, j].mean((0, 1)) * std + mean
      assert np.abs(got - colours[name]).max() < 15, (text, j, got)
