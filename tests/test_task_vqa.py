"""The VQA and captioning tasks on the one trainer (docs/reference.md §5.2, §5.5):

* the VQA task loss equals a brute-force reference: every (question, answer) pair decoded on its
  own against its own question's memory, token cross-entropies summed in numpy, weighted, / #questions;
* init from a pre-training export (no decoder) derives the decoder from the fusion layers, the
  embeddings and the MLM head (values compared), keeps the cross-attention keys/values fresh when the
  vision width differs from H, and puts every decoder param in the lr × lr_mult group with
  large_lr_for_dec (only the fresh ones without); the optimizer gives them lr × lr_mult;
* both tasks train through the trainer from that export (init.json records it).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.configs import synthetic_vqa
from tests.helpers.tiers import tiered
from x2vlm_jax import experiment, params_io, tasks
from x2vlm_jax.models import X2VLM
from x2vlm_jax.tasks.vqa import synthetic_batch
from x2vlm_jax.training import init_from, optimizer


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_vqa_loss_equals_brute_force_reference():
  c = synthetic_vqa.get_config()
  task = tasks.build(c)
  model = X2VLM(c.model, rngs=nnx.Rngs(1))
  b, a = 3, c.data.max_answers
  batch = synthetic_batch(7, b, 32, c.data.max_tokens, a, c.data.max_answer_tokens, c.model.text.vocab_size)
  batch["answer_weights"] = np.array([[0.6, 0.3, 0.1], [0.5, 0.0, 0.0], [0.2, 0.0, 0.7]], np.float32)
  task_loss = nnx.jit(lambda m, batch: task.loss(m, batch, jax.random.key(0), 0))
  loss, metrics = task_loss(model, {k: jnp.asarray(v) for k, v in batch.items()})

  memory_of = nnx.jit(lambda m, px, ids, mask: m.vqa_memory(ids, mask, m.vision(px)))
  decode = nnx.jit(lambda m, ans, amask, memory, mask: m.answer_logits(ans, amask, memory, mask))
  want = 0.0
  for q in range(b):
    ids, mask = batch["text_ids"][q : q + 1], batch["text_mask"][q : q + 1]
    memory = memory_of(model, batch["images"][q : q + 1], ids, mask)
    for j in range(a):
      ans, amask = batch["answer_ids"][q, j], batch["answer_mask"][q, j]
      logp = _log_softmax(decode(model, ans[None], amask[None], memory, mask)[0])
      n = int(amask.sum())
      # [CLS] predicts a₁, …, a_m predicts [SEP]: the teacher-forced sum over the answer's own tokens.
      nll = -sum(logp[t, ans[t + 1]] for t in range(n - 1))
      want += batch["answer_weights"][q, j] * nll
  want /= b
  assert float(loss) == pytest.approx(want, rel=2e-5)
  assert float(metrics["train/vqa"]) == pytest.approx(want, rel=2e-5)
  # A padding answer (weight 0) contributes nothing, whatever its tokens are.
  batch["answer_ids"][1, 1:] = np.roll(batch["answer_ids"][1, 1:], 1, axis=-1)
  again, _ = task_loss(model, {k: jnp.asarray(v) for k, v in batch.items()})
  assert float(again) == pytest.approx(float(loss), rel=1e-6)


@pytest.fixture(scope="module")
def pretrain_export(tmp_path_factory):
  """A pre-training export (no decoder) of the deepened tiny geometry."""
  c = synthetic_vqa.get_config()
  c.model.heads.decoder_layers = 0
  params = nnx.to_pure_dict(nnx.state(X2VLM(c.model, rngs=nnx.Rngs(5)), nnx.Param))
  path = str(tmp_path_factory.mktemp("pretrain") / "export")
  params_io.save(path, c.model, params, vocab_file=c.data.vocab_file)
  return path, params


@pytest.mark.parametrize("large_lr_for_dec", tiered([True, False], fast=[True]))
def test_init_from_pretraining_derives_the_decoder(pretrain_export, large_lr_for_dec):
  path, src = pretrain_export
  c = synthetic_vqa.get_config()
  c.large_lr_for_dec = large_lr_for_dec
  task = tasks.build(c)
  p = init_from.plan(path, c.model, task)
  decoder = sorted(k for k in p.actions if k.startswith("decoder/"))
  cross_kv = {k for k in decoder if "/cross_attn/key/" in k or "/cross_attn/value/" in k}
  assert len(cross_kv) == 2 * 2 * c.model.heads.decoder_layers  # key/value × kernel/bias × layers
  assert {k for k in decoder if p.actions[k] == "derived"} == set(decoder) - cross_kv
  assert {k for k in decoder if p.actions[k] == "fresh"} == cross_kv  # vision width 32 ≠ H 64
  assert set(p.new_params) == (set(decoder) if large_lr_for_dec else cross_kv)

  fresh_model = X2VLM(c.model, rngs=nnx.Rngs(9))
  fresh = init_from.flatten_tree(nnx.to_pure_dict(nnx.state(fresh_model, nnx.Param)))
  values = init_from.load_values(p, c.model, lambda k: fresh[k], task)
  text = init_from.flatten_tree(src)
  # Decoder layer j ← text layer fusion_start + j (2, 3): self- and cross-attention queries, FFN, norms.
  for j, layer in enumerate((2, 3)):
    for sub in (
      "self_attn/query/kernel",
      "self_attn/key/bias",
      "self_attn/ln/scale",
      "cross_attn/query/kernel",
      "cross_attn/out/kernel",
      "cross_attn/ln/bias",
      "intermediate/kernel",
      "output/bias",
      "ln/scale",
    ):
      np.testing.assert_array_equal(
        values[f"decoder/layers/{j}/{sub}"], text[f"text/layers/{layer}/{sub}"], err_msg=f"decoder layer {j} {sub}"
      )
    assert f"decoder/layers/{j}/cross_attn/key/kernel" not in values  # keeps its fresh init
  for k in (
    "embeddings/word/embedding",
    "embeddings/position/embedding",
    "embeddings/ln/scale",
    "mlm/dense/kernel",
    "mlm/ln/bias",
    "mlm/bias",
  ):
    np.testing.assert_array_equal(values[f"decoder/{k}"], text[f"text/{k}"])
  # The text layers 0, 1 are not copied anywhere: a 2-layer decoder has exactly layers 2 and 3's values.
  assert not any(
    np.array_equal(values["decoder/layers/0/self_attn/query/kernel"], text[f"text/layers/{i}/self_attn/query/kernel"])
    for i in (0, 1, 3)
  )

  # Official groups: text/* at text_lr, vision/* at vision_lr, the decoder at lr × lr_mult when new.
  peaks = optimizer.peak_learning_rates(c.optim)
  group = lambda k: optimizer.param_group(k, c.optim, frozenset(p.new_params))  # noqa: E731
  assert peaks[group("decoder/layers/0/self_attn/query/kernel")] == (
    c.optim.lr * c.optim.lr_mult if large_lr_for_dec else c.optim.lr
  )
  assert peaks[group("decoder/layers/1/cross_attn/key/kernel")] == c.optim.lr * c.optim.lr_mult
  assert peaks[group("text/layers/3/self_attn/query/kernel")] == c.optim.text_lr
  assert peaks[group("vision/blocks/0/fc1/kernel")] == c.optim.vision_lr


def test_one_layer_decoder_takes_the_odd_fusion_layer(pretrain_export):
  path, src = pretrain_export
  c = synthetic_vqa.get_config("decoder_layers=1")
  task = tasks.build(c)
  p = init_from.plan(path, c.model, task)
  values = init_from.load_values(p, c.model, lambda k: None, task)
  text = init_from.flatten_tree(src)
  np.testing.assert_array_equal(values["decoder/layers/0/output/kernel"], text["text/layers/3/output/kernel"])


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["vqa", "captioning"])
def test_tasks_train_from_the_pretraining_export(pretrain_export, tmp_path, task_name):
  path, src = pretrain_export
  c = synthetic_vqa.get_config(f"task={task_name},steps=1")
  c.init_from = path
  state, _, last = experiment.train(c, str(tmp_path))
  record = json.loads((tmp_path / "init.json").read_text())
  key = "train/vqa" if task_name == "vqa" else "train/caption"
  assert np.isfinite(last[key]) and last[key] > 0
  if task_name == "vqa":
    assert len(record["actions"]["derived"]) > 0 and set(record["new_params"]) == {
      k for k in init_from.flatten_tree(jax.device_get(state["params"])) if k.startswith("decoder/")
    }
  else:
    assert record["new_params"] == [] and "derived" not in record["actions"]
  # One optimizer step moved the loaded weights only a little.
  key = "text/layers/3/output/kernel"
  moved = np.abs(
    np.asarray(init_from.flatten_tree(jax.device_get(state["params"]))[key]) - init_from.flatten_tree(src)[key]
  ).max()
  assert 0 < moved < 0.05
