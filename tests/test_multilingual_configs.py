"""The multilingual fine-tuning configs: on the embedded shapes_ml data, the xretrieval config's batch
contract is what its real train iterator yields (zero-shot: English rows only; translate-train: every
language), its evaluator describes its programs; the released-data configs name one test file per IGLUE
language and the training sets of each mode."""

import importlib

import numpy as np
import pytest

from x2vlm_jax import embedded, tasks


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from tests.helpers.embedded_small import small_sizes

  d = str(tmp_path_factory.mktemp("data"))
  with small_sizes():
    embedded.ensure(d, [embedded.ML_TASKS, *embedded.ML_FINETUNE])
  return d


def _layout(tree):
  return {
    k: (tuple(v[0]), np.dtype(v[1]).name) if isinstance(v, tuple) else (v.shape, v.dtype.name) for k, v in tree.items()
  }


@pytest.mark.parametrize("mode", ["zero_shot", "translate_train"])
@pytest.mark.slow
def test_shapes_xretrieval_batches_and_evaluator(data_dir, mode):
  pytest.importorskip("tensorflow")
  from tests.helpers.tools import load_tool
  from x2vlm_jax import sharding as shd
  from x2vlm_jax.inference.tokenizer import Tokenizer

  cfg = importlib.import_module("x2vlm_jax.configs.finetune.shapes_xretrieval").get_config(
    f"batch=4,mode={mode},data_dir={data_dir}"
  )
  assert embedded.needed(cfg)[data_dir] >= {embedded.ML_TASKS}
  task = tasks.build(cfg)
  batch = next(iter(task.train_iterator(seed=0, process_index=0, process_count=1)))
  assert _layout(task.batch_spec()) == _layout(batch)
  tok = Tokenizer(cfg.data.vocab_file)
  words = " ".join(tok.decode(row) for row in batch["text_ids"])
  if mode == "zero_shot":
    assert [name for name, *_ in cfg.data.train] == ["shapes_ml_retrieval_en"] and "ein" not in words.split()
  else:
    assert [name for name, *_ in cfg.data.train] == [f"shapes_ml_retrieval_{x}" for x in ("en", "de", "fr")]
  compile_check = load_tool("compile_check")
  mesh = shd.create_mesh(cfg.mesh)
  graphdef, _, _, state = compile_check.train_target(cfg, mesh)
  names = [n for n, _, _ in compile_check.eval_targets(cfg, mesh, graphdef, state["params"], 8, 16)]
  assert names == [f"test/{p}" for p in ("encode_image", "encode_text", "itc_topk_i2t", "rerank_i2t", "rerank_t2i")]


@pytest.mark.parametrize(
  "name,eval_name,n",
  [("xretrieval", "xretrieval", 8), ("xvnli", "xvnli", 5), ("xgqa", "xgqa", 8), ("marvl", "marvl", 6)],
)
def test_released_data_configs(name, eval_name, n):
  """One test file and one translate-train set per language of the benchmark."""
  mod = importlib.import_module(f"x2vlm_jax.configs.finetune.{name}")
  c = mod.get_config("model=base")  # the structure; the multilingual presets come with the CCLM model
  e = c.evals[eval_name]
  assert len(e.annotations.split(",")) == len(e.languages.split(",")) == n and c.task == name
  assert c.best_metric.startswith(f"{eval_name}/")
  if name != "marvl":
    tt = mod.get_config("model=base,mode=translate_train")
    assert len(tt.data.train) == n and len(c.data.train) == 1


def test_wit_config():
  c = importlib.import_module("x2vlm_jax.configs.finetune.xretrieval").get_config("model=base,dataset=wit")
  assert len(c.evals.xretrieval.languages.split(",")) == 11 and c.num_epochs == 5 and c.data.max_tokens == 80


@pytest.mark.parametrize("mode", ["zero_shot", "translate_train"])
@pytest.mark.slow
def test_shapes_xgqa_batches_and_evaluator(data_dir, mode):
  pytest.importorskip("tensorflow")
  from tests.helpers.tools import load_tool
  from x2vlm_jax import sharding as shd

  cfg = importlib.import_module("x2vlm_jax.configs.finetune.shapes_xgqa").get_config(
    f"batch=4,mode={mode},data_dir={data_dir}"
  )
  with __import__("tests.helpers.embedded_small", fromlist=["small_sizes"]).small_sizes():
    embedded.ensure_for_config(cfg)
  task = tasks.build(cfg)
  batch = next(iter(task.train_iterator(seed=0, process_index=0, process_count=1)))
  assert _layout(task.batch_spec()) == _layout(batch)
  assert len(cfg.data.train) == (1 if mode == "zero_shot" else 3)
  compile_check = load_tool("compile_check")
  mesh = shd.create_mesh(cfg.mesh)
  graphdef, _, _, state = compile_check.train_target(cfg, mesh)
  assert [n for n, _, _ in compile_check.eval_targets(cfg, mesh, graphdef, state["params"], 8, 16)] == ["test/rank"]
