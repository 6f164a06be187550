"""CCLM pre-training (docs/reference.md §1.8, §3.7): stage-1 initialisation from an English X²-VLM checkpoint +
XLM-R (the official `XVLMPlusBase.load_pretrained_xvlm` with `replace_text_encoder`), the
`cclm_pretrain` task on the synthetic `mtext` contract, its configs, and a short run through main.py."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.helpers import xla
from x2vlm_jax.convert import cclm_init
from x2vlm_jax.models import X2VLM, get_preset

REPO = pathlib.Path(__file__).resolve().parents[1]


def random_xlmr(cfg, seed):
  """A random HF XLMRobertaForMaskedLM with the cclm_tiny text geometry (a real HF file layout)."""
  import torch
  from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

  torch.manual_seed(seed)
  t = cfg.text
  hf = XLMRobertaForMaskedLM(
    XLMRobertaConfig(
      vocab_size=t.vocab_size,
      hidden_size=t.hidden,
      num_hidden_layers=t.num_layers,
      num_attention_heads=t.num_heads,
      intermediate_size=t.ffn_dim,
      max_position_embeddings=t.max_positions,
      type_vocab_size=1,
      layer_norm_eps=t.layer_norm_eps,
      pad_token_id=1,
    )
  )
  return hf


@pytest.mark.slow
def test_init_cclm_maps_fusion_layers_to_the_cross_encoder_and_xlmr_to_the_text_encoder(tmp_path):
  from convert_helpers import random_official_state_dict

  from x2vlm_jax.convert.assemble import fresh_flat
  from x2vlm_jax.convert.state_dict import read_state_dict

  english = get_preset("tiny")  # 2 text-only layers + 1 fusion layer; the vision tower of cclm_tiny
  cfg = get_preset("cclm_tiny")
  x2 = random_official_state_dict(english, seed=4)
  hf = random_xlmr(cfg, seed=0)
  hf.save_pretrained(tmp_path / "xlmr")  # an HF model directory (model.safetensors)
  xlmr = read_state_dict(str(tmp_path / "xlmr"))
  flat, report = cclm_init.init_cclm(x2, xlmr, cfg, lambda: fresh_flat(cfg, 0), num_text_layers=2)

  def torch_linear(key):
    return x2[key].T

  b = "text_encoder.bert."
  # English layer 2 (the fusion layer) → cross encoder layer 0, cross-attention included.
  np.testing.assert_array_equal(
    flat["text/cross/0/cross_attn/key/kernel"], torch_linear(b + "encoder.layer.2.crossattention.self.key.weight")
  )
  np.testing.assert_array_equal(flat["text/cross/0/ln/scale"], x2[b + "encoder.layer.2.output.LayerNorm.weight"])
  # XLM-R → text encoder (embeddings with its one token type, layers).
  hf_sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  np.testing.assert_array_equal(
    flat["text/embeddings/word/embedding"], hf_sd["roberta.embeddings.word_embeddings.weight"]
  )
  np.testing.assert_array_equal(
    flat["text/layers/1/output/kernel"], hf_sd["roberta.encoder.layer.1.output.dense.weight"].T
  )
  # MLM transform from X²-VLM's head; decoder and bias fresh; everything of mlm_head in the lr×2 group.
  np.testing.assert_array_equal(
    flat["text/lm_head/dense/kernel"], torch_linear("text_encoder.cls.predictions.transform.dense.weight")
  )
  assert {"text/lm_head/decoder/kernel", "text/lm_head/bias"} <= set(report["new_params"])
  assert "text/lm_head" in report["new_params"]
  # Vision, projections and heads carried over unchanged.
  np.testing.assert_array_equal(flat["itm_head/fc0/kernel"], torch_linear("itm_head.0.weight"))
  np.testing.assert_array_equal(flat["vision/cls_token"], x2["vision_encoder.cls_token"])
  assert any(k.startswith(b + "encoder.layer.0.") for k in report["x2vlm_dropped_keys"])
  assert any(k.startswith("lm_head.") for k in report["xlmr_unused_keys"])


@pytest.mark.slow  # a tools/convert_checkpoint.py subprocess; its mapping is checked in-process above
def test_convert_checkpoint_cli_cclm_init_then_init_from_plan(tmp_path):
  from convert_helpers import random_official_state_dict
  from helpers.tools import load_tool

  from x2vlm_jax import params_io
  from x2vlm_jax.training import init_from

  x2 = random_official_state_dict(get_preset("tiny"), seed=5)
  np.savez(tmp_path / "x2vlm_tiny.npz", **x2)
  random_xlmr(get_preset("cclm_tiny"), seed=1).save_pretrained(tmp_path / "xlmr")
  out = str(tmp_path / "cclm_init")
  cli = load_tool("convert_checkpoint")
  args = ["--cclm_init", str(tmp_path / "x2vlm_tiny.npz"), "--xlmr", str(tmp_path / "xlmr"), "--model", "cclm_tiny"]
  assert cli.main(args + ["--xvlm_text_layers", "2", "--output", out]) == 0
  cfg = params_io.load_config(out)
  assert cfg.text_encoder == "xlmr" and cfg.name == "cclm_tiny"
  report = json.loads((pathlib.Path(out) / "conversion.json").read_text())
  assert "text/lm_head" in report["new_params"]
  plan = init_from.plan(out, get_preset("cclm_tiny"))
  assert all(a == "load" for a in plan.actions.values())
  assert "text/lm_head/decoder/kernel" in plan.new_params  # lr × lr_mult, as officially
  with pytest.raises(ValueError, match="text_encoder"):
    init_from.plan(out, get_preset("tiny"))


# --- the task -----------------------------------------------------------------------------------------


def cclm_task(**arg):
  from x2vlm_jax import tasks
  from x2vlm_jax.configs.pretrain import cclm_tiny

  items = ",".join(f"{k}={v}" for k, v in arg.items())
  config = cclm_tiny.get_config(items or None)
  return config, tasks.build(config)


def test_cclm_config_batch_follows_the_mtext_contract():
  config, task = cclm_task()
  spec = task.batch_spec()
  assert sorted(spec) == ["image", "mtext", "region"]
  b = config.data.mtext.batch_size
  assert spec["mtext"]["para_ids"] == ((b, 12), np.int32) and spec["mtext"]["mlm_labels"] == ((b, 4), np.int32)
  batch = next(task.train_iterator(0, 0, 1))
  m = batch["mtext"]
  # XLM-R specials: <s> first, </s> last real token, pad 1 after it, <mask> = last id at masked_pos.
  assert np.all(m["text_ids"][:, 0] == 0) and np.all(m["para_ids"][:, 0] == 0)
  lengths = m["text_mask"].sum(1)
  assert np.all(m["text_ids"][np.arange(len(lengths)), lengths - 1] == 2)
  assert np.all(m["text_ids"][m["text_mask"] == 0] == 1)
  rows = np.arange(m["masked_pos"].shape[0])[:, None]
  real = m["mlm_labels"] != -100
  assert np.all(m["text_ids_masked"][rows, m["masked_pos"]][real] == config.model.text.vocab_size - 1)
  assert np.all(m["text_ids"][rows, m["masked_pos"]][real] == m["mlm_labels"][real])
  assert np.all(batch["image"]["text_ids"][batch["image"]["text_mask"] == 0] == 1)
  assert task.examples_per_step() == 3 * config.data.image.batch_size


@pytest.mark.slow
def test_cclm_task_loss_is_the_weighted_sum_of_every_stream():
  config, task = cclm_task()
  config.unlock()
  config.loss_weights.mtext = 0.5
  config.loss_weights.region = 2.0
  from x2vlm_jax import tasks

  task = tasks.build(config)
  batch = jax.tree.map(jnp.asarray, next(task.train_iterator(0, 0, 1)))
  model = X2VLM(config.model, rngs=nnx.Rngs(0))
  total, metrics = task.loss(model, batch, jax.random.key(0), 0)
  want = (
    sum(float(metrics[f"image/{t}"]) for t in ("itc", "itm", "mlm"))
    + 2.0 * sum(float(metrics[f"region/{t}"]) for t in ("itc", "itm", "mlm", "bbox", "giou"))
    + 0.5 * sum(float(metrics[f"mtext/{t}"]) for t in ("ttc", "ttm", "mlm"))
  )
  np.testing.assert_allclose(float(total), want, rtol=1e-6)
  # The English task does not know the stream.
  from x2vlm_jax.tasks.pretrain import PretrainTask

  with pytest.raises(ValueError, match="mtext"):
    PretrainTask(config).loss(model, {"mtext": batch["mtext"]}, jax.random.key(0), 0)


def test_cclm_task_requires_the_xlmr_text_side():
  from x2vlm_jax.configs.pretrain import cclm_tiny
  from x2vlm_jax.tasks.cclm_pretrain import CCLMPretrainTask

  config = cclm_tiny.get_config()
  config.unlock()
  config.model = get_preset("tiny")
  with pytest.raises(ValueError, match="XLM-R"):
    CCLMPretrainTask(config)


@pytest.mark.slow
def test_para_text_losses_fall_when_training_on_the_mtext_stream():
  """Adam on a fixed synthetic `mtext` batch (the translation is a relabelling of sentence 1): TTC,
  TTM and the conditioned MLM all fall — every part of the objective carries gradient."""
  from x2vlm_jax.objectives import para_text_losses

  config, task = cclm_task(mtext=True)
  batch = jax.tree.map(jnp.asarray, next(task.train_iterator(0, 0, 1))["mtext"])
  model = X2VLM(config.model, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, rng):
    def loss_fn(m):
      t = para_text_losses(m, batch, rng, group_size=4)
      return t["ttc"] + t["ttm"] + t["mlm"], t

    (_, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    opt.update(model, grads)
    return terms

  first = step(model, opt, jax.random.key(0))
  for i in range(1, 50):
    last = step(model, opt, jax.random.key(i))
  for k in ("ttc", "ttm", "mlm"):
    assert float(last[k]) < float(first[k]), (k, float(first[k]), float(last[k]))


@pytest.mark.slow
def test_main_trains_cclm_tiny_on_every_stream(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla.cpu_flags(2))
  cmd = [sys.executable, "main.py", "--config=configs/pretrain/cclm_tiny.py:steps=3", f"--workdir={tmp_path}"]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if "train/loss" in r]
  assert train and all(np.isfinite(r["train/loss"]) for r in train)
  assert {"mtext/ttc", "mtext/ttm", "mtext/mlm", "image/itc", "region/giou"} <= set(train[-1])


BOUNDARY_CODE = r"""
import sys
for blocked in ("tensorflow", "tensorflow_text", "tensorflow_datasets", "torch"):
  sys.modules[blocked] = None
import x2vlm_jax.models.xlmr, x2vlm_jax.objectives.para_text, x2vlm_jax.tasks.cclm_pretrain, x2vlm_jax.convert.cclm_init
from x2vlm_jax.configs.pretrain import cclm_tiny, cclm_x2vlm_base, cclm_x2vlm_large
from x2vlm_jax import tasks
for m in (cclm_tiny, cclm_x2vlm_base, cclm_x2vlm_large):
  tasks.build(m.get_config()).batch_spec()
print("ok")
"""


def test_cclm_training_path_imports_without_tensorflow_or_torch():
  out = subprocess.run([sys.executable, "-c", BOUNDARY_CODE], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
