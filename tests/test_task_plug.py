"""Adding a task is its own modules plus one registration (README, Layout). The example task below —
image–text matching as a yes/no question on the ITM head, with its data module, its evaluator and its
forward pass, all in this one file — is registered with one line (`tasks._TASKS[NAME] = ...`) and is
then found by the evaluator lookup, `tools/build_tfds.py --kind`, `tools/evaluate.py --task`,
tools/compile_check.py (its batch contract and its evaluator's programs) and the trainer
(`experiment.run`: built data in, evaluation during training, export)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from tests.configs import synthetic_retrieval
from tests.helpers.tools import load_tool
from x2vlm_jax import experiment, fs, objectives, tasks
from x2vlm_jax import sharding as shd
from x2vlm_jax.data import annotations as ann
from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.evaluation.sharded import EvalBatches, to_host
from x2vlm_jax.inference.images import normalize, read_image
from x2vlm_jax.inference.tokenizer import Tokenizer
from x2vlm_jax.tasks.base import FinetuneTask, images_spec, synthetic_text, text_spec

NAME = "toy_match"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}


# ------------------------------------------------------------------ the data module (x2vlm_jax/data/finetune/)
def build(annotations, image_root, data_dir, name, *, split="train", strict=False, max_words=30):
  """Official-style records {image, text, label} → DATA_DIR/NAME/SPLIT.json (a real task writes TFDS)."""
  from x2vlm_jax.data import records

  report, rows = records.BuildReport(), []
  for i, rec in enumerate(ann.read_records(annotations)):
    try:
      image, text = ann.field(rec, "image", str), ann.field(rec, "text", str)
      rows.append({"image": ann.image_path(image_root, image), "text": text, "label": ann.field(rec, "label", int)})
    except ann.BadRecord as e:
      if strict:
        raise e.located(annotations, i) from None
      report.skipped[e.reason] += 1
  out = fs.path(data_dir) / name
  out.mkdir(parents=True, exist_ok=True)
  (out / f"{split}.json").write_text(json.dumps(rows))
  report.written = len(rows)
  return report


class RowBatches:
  """The built rows in order, cycled; every batch checked against the task's contract."""

  def __init__(self, cfg, spec, rows):
    self.cfg, self.rows, self.position = cfg, rows, 0
    self.spec = spec(cfg, int(cfg.batch_size))
    self.tokenizer = Tokenizer(cfg.vocab_file, int(cfg.max_tokens))

  def __iter__(self):
    return self

  def __next__(self):
    rows = [self.rows[(self.position + i) % len(self.rows)] for i in range(int(self.cfg.batch_size))]
    self.position += len(rows)
    ids, mask = self.tokenizer([r["text"] for r in rows], int(self.cfg.max_tokens))
    batch = {
      "images": normalize(np.stack([read_image(r["image"], int(self.cfg.image_res)) for r in rows])),
      "text_ids": ids,
      "text_mask": mask,
      "labels": np.asarray([r["label"] for r in rows], np.int32),
      "valid": np.ones((len(rows),), np.float32),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {k: (s, np.dtype(d)) for k, (s, d) in self.spec.items()}
    return batch

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = int(state["position"])


def _rows(cfg):
  return [
    r for name, split, *_ in cfg.train for r in json.loads((fs.path(cfg.data_dir) / name / f"{split}.json").read_text())
  ]


def create_iterator(cfg, *, spec, seed, process_index, process_count):
  del seed, process_index, process_count  # one process, in order: enough for the example
  return RowBatches(cfg, spec, _rows(cfg))


def train_size(cfg):
  return len(_rows(cfg))


# ------------------------------------------------------------------ the evaluator (x2vlm_jax/evaluation/)
class MatchEvaluator(Evaluator):
  """Accuracy of the yes/no answer on {image, text, label} records."""

  DEFAULTS = dict(annotations="", image_root="", batch_size=4, max_tokens=12, max_words=30, strict=False)
  PREDICT_FNS = ("match_logits",)

  def setup(self):
    self.records = ann.read_records(self.ecfg.annotations, objects_only=True)
    ann.require(self.ecfg.annotations, self.records, "label", int)
    self.images = [ann.image_path(self.ecfg.image_root, r["image"]) for r in self.records]
    self.ids, self.mask = self.tokenizer()([r["text"] for r in self.records], int(self.ecfg.max_tokens))
    self.batches = EvalBatches(self.mesh, int(self.ecfg.batch_size))

  def _fn(self, graphdef):
    from flax import nnx

    match_logits = self.predict_fns["match_logits"]

    def predict(params, batch):
      logits = match_logits(nnx.merge(graphdef, params), batch["images"], batch["ids"], batch["mask"])
      return jnp.argmax(logits, -1), batch["valid"]

    return self.jitted(graphdef, lambda: jax.jit(predict))

  def compile_targets(self, graphdef, params, *, num_images, num_texts):
    res, length = int(self.model_cfg.image_res), int(self.ecfg.max_tokens)
    fields = {"images": ((res, res, 3), jnp.float32), "ids": ((length,), jnp.int32), "mask": ((length,), jnp.int32)}
    batch = self.sharded_batch(
      EvalBatches(self.mesh, int(self.ecfg.batch_size)), {**fields, "valid": ((), jnp.float32)}
    )
    return [(f"{self.name}/predict", self._fn(graphdef), (params, batch))]

  def evaluate(self, graphdef, params):
    def load(idx):
      pixels, valid = self.load_images(self.images, idx)
      safe = np.maximum(idx, 0)
      return {"images": pixels, "ids": self.ids[safe], "mask": self.mask[safe], "valid": valid}

    fn, n = self._fn(graphdef), len(self.records)
    pred, valid = (to_host(x)[:n] for x in self.batches.concat(self.batches.map(lambda b: fn(params, b), n, load)))
    labels = np.asarray([r["label"] for r in self.records])
    return {"acc": float(np.mean(pred[valid > 0] == labels[valid > 0])), "num": float(n)}, pred.tolist()


# ------------------------------------------------------------------ the task (x2vlm_jax/tasks/NAME.py)
def match_logits(model, images, ids, mask, rng=None):
  """Does the text describe the image? The ITM head on the fused pair → [B, 2] (1 = yes)."""
  r_vis, r_txt, r_fuse = (None, None, None) if rng is None else jax.random.split(rng, 3)
  image, _ = model.encode_image(images, r_vis)
  text, _ = model.encode_text(ids, mask, r_txt)
  return model.itm_logits(image, jnp.ones(image.shape[:2], jnp.int32), text, mask, r_fuse)


class MatchTask(FinetuneTask):
  name = NAME
  DATA_MODULE = __name__
  BUILDER = "build"
  EVALUATORS = {NAME: MatchEvaluator}
  PREDICT_FNS = {"match_logits": match_logits}
  EVALUATION = (NAME, {})

  @staticmethod
  def spec(cfg, b):
    return {
      **images_spec(cfg, b),
      **text_spec(b, int(cfg.max_tokens)),
      "labels": ((b,), np.int32),
      "valid": ((b,), np.float32),
    }

  def loss(self, model, batch, rng, step):
    del step
    logits = match_logits(model, batch["images"], batch["text_ids"], batch["text_mask"], rng)
    loss, acc = objectives.classification_loss(logits, batch["labels"], batch["valid"])
    return loss, {"train/ce": loss, "train/acc": acc}

  def synthetic_batch(self, seed, batch_size):
    rs = np.random.RandomState(seed)
    data = self.config.data
    ids, mask = synthetic_text(rs, batch_size, data.max_tokens, self.config.model.text.vocab_size)
    res = data.image_res
    images = rs.randn(batch_size, res, res, 3).astype(np.float32)
    labels = rs.randint(0, 2, size=batch_size).astype(np.int32)
    return {
      "images": images,
      "text_ids": ids,
      "text_mask": mask,
      "labels": labels,
      "valid": np.ones((batch_size,), np.float32),
    }


# ------------------------------------------------------------------ the tests
@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(tasks._TASKS, NAME, f"{__name__}:MatchTask")  # the one registration


@pytest.fixture
def files(tmp_path):
  records = []
  for colour, rgb in COLOURS.items():
    Image.fromarray(np.full((40, 40, 3), rgb, np.uint8)).save(tmp_path / f"{colour}.png")
    for other in COLOURS:
      records.append({"image": f"{colour}.png", "text": f"a {other} square", "label": int(other == colour)})
  (tmp_path / "train.json").write_text(json.dumps(records))
  (tmp_path / "test.json").write_text(json.dumps(records[:4]))
  return tmp_path


def _config(files, steps=2):
  c = synthetic_retrieval.get_config(f"steps={steps},batch=4")
  c.task = NAME
  c.data.source = "tfds"
  c.data.data_dir = str(files / "tfds")
  c.data.train = [("toy", "train")]
  c.evals.test = dict(type=NAME, annotations=str(files / "test.json"), image_root=str(files), at_end=True)
  return c


def test_one_registration_reaches_every_lookup(registered, files, capsys):
  assert NAME in tasks.names() and NAME in tasks.evaluation_names() and NAME in tasks.data_kinds()
  assert tasks.evaluator_class(NAME) is MatchEvaluator and tasks.evaluation(NAME) == (NAME, {})
  config = _config(files)

  # tools/build_tfds.py --kind NAME: the task's builder, one written row per record.
  build_tfds = load_tool("build_tfds")
  args = ["--kind", NAME, "--input", str(files / "train.json"), "--data_dir", str(files / "tfds"), "--name", "toy"]
  assert build_tfds.main([*args, "--image_root", str(files)]) == 0
  assert "written: 9" in capsys.readouterr().out
  assert len(json.loads((files / "tfds" / "toy" / "train.json").read_text())) == 9

  # tools/evaluate.py --task NAME: the task's own evaluation, with the evaluator's defaults.
  evaluate = load_tool("evaluate")
  cli, overrides = evaluate._parse(["--task", NAME, "--checkpoint", "c", "--annotations", "a.json", "--output", "o"])
  assert cli.task == NAME and overrides == []

  # tools/compile_check.py: the train step traced on the task's batch contract, and the evaluator's
  # program on one evaluation batch (both abstract: nothing compiled, no data read).
  compile_check = load_tool("compile_check")
  mesh = shd.create_mesh(config.mesh)
  graphdef, step, (state, batch), _ = compile_check.train_target(config, mesh)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
    k: (s, np.dtype(d)) for k, (s, d) in MatchTask.spec(config.data, 4).items()
  }
  with jax.set_mesh(mesh):
    _, metrics = jax.eval_shape(step, state, batch)
    targets = compile_check.eval_targets(config, mesh, graphdef, state["params"], 4, 4)
    [(target_name, program, program_args)] = targets
    predicted, valid = jax.eval_shape(program, *program_args)
  assert target_name == "test/predict"
  assert set(metrics) >= {"train/loss", "train/ce", "train/acc"} and predicted.shape == valid.shape == (4 * mesh.size,)


@pytest.mark.slow
def test_trainer_and_tools_evaluate_run_the_registered_task(registered, files, tmp_path):
  load_tool("build_tfds").build(NAME, str(files / "train.json"), str(files / "tfds"), "toy", image_root=str(files))
  config = _config(files)
  experiment.run(config, str(tmp_path / "run"))  # built data in, the evaluation at the end, the export
  logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [line["step"] for line in logged if "train/ce" in line] == [1, 2]
  in_training = [line["test/acc"] for line in logged if "test/acc" in line]
  assert len(in_training) == 1

  # The exported model through tools/evaluate.py --task NAME gives the evaluation of the last step.
  out = tmp_path / "out"
  argv = ["--task", NAME, "--checkpoint", str(tmp_path / "run" / "export"), "--annotations", str(files / "test.json")]
  assert load_tool("evaluate").main([*argv, "--image_root", str(files), "--output", str(out)]) == 0
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["num"] == 4 and metrics["acc"] == pytest.approx(in_training[0])
