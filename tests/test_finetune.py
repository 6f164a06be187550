"""The tasks layer on the one trainer (issue "Fine-tuning and evaluation core"):

* evaluators run every N steps, their results are logged, and the best step is kept besides the newest;
* init_from an export at another resolution / with other heads loads what exists, resizes rel-pos
  tables, initialises the rest and puts it into the lr × lr_mult group; another model size is refused;
* resuming a fine-tuning run mid-way reproduces the uninterrupted run exactly;
* a pre-training stage-1 export starts stage 2 (video: frame embeddings added), end to end;
* after `stop_calc_itm` the ITM fusion is skipped, not computed and multiplied by zero.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.configs import synthetic_retrieval, synthetic_tiny
from tests.helpers import scripted_eval
from x2vlm_jax import experiment, params_io, tasks
from x2vlm_jax.convert.relpos import resize_rel_pos_table
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.training import init_from, optimizer, trainer


def _jsonl(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_evaluators_run_every_n_steps_and_the_best_step_is_kept(tmp_path, monkeypatch):
  monkeypatch.setitem(tasks._TASKS, "scripted", "tests.helpers.scripted_eval:ScriptedTask")
  scripted_eval.CALLS.clear()
  c = synthetic_retrieval.get_config("steps=8")
  c.checkpoint_every = 100  # only evaluated steps and the last one are saved
  c.evals.val = dict(type="scripted", every=2, values=(3.0, 9.0, 4.0, 5.0))
  c.best_metric = "val/score"
  state, _, _ = experiment.train(c, str(tmp_path))
  assert scripted_eval.CALLS == [3.0, 9.0, 4.0, 5.0]  # steps 2, 4, 6, 8 (at_end = step 8, run once)
  evals = [(e["step"], e["val/score"]) for e in _jsonl(tmp_path) if "val/score" in e]
  assert evals == [(2, 3.0), (4, 9.0), (6, 4.0), (8, 5.0)]
  assert json.loads((tmp_path / "eval" / "val" / "step_4" / "metrics.json").read_text()) == {"score": 9.0}
  assert json.loads((tmp_path / "eval" / "val" / "step_4" / "predictions.json").read_text()) == {"call": 2}
  kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert kept == [4, 8], kept  # the best (9.0 at step 4) and the newest (keep_checkpoints=1)
  best, step = experiment.best_params(c, str(tmp_path))
  assert step == 4
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(state["params"])))


@pytest.mark.slow
def test_init_from_another_resolution_and_new_heads(tmp_path):
  src_cfg = get_preset("tiny", image_res=48)  # a 3×3 patch grid
  src = nnx.to_pure_dict(nnx.state(X2VLM(src_cfg, rngs=nnx.Rngs(5)), nnx.Param))
  params_io.save(str(tmp_path / "export"), src_cfg, src)

  dst_cfg = get_preset("tiny", image_res=64, num_frames=2)  # 4×4 grid, video frames
  dst_cfg.heads.nlvr = True
  p = init_from.plan(str(tmp_path / "export"), dst_cfg)
  assert p.actions["vision/blocks/0/attn/rel_pos_table"] == "resize"
  assert p.actions["text/layers/0/self_attn/query/kernel"] == "load"
  assert {k for k, a in p.actions.items() if a == "fresh"} == set(p.new_params)
  assert set(p.new_params) == {k for k in p.actions if k.startswith(("nlvr_head/", "frame_pos"))}

  tx, _ = optimizer.build_optimizer(dict(lr=1.0, lr_mult=2.0, warmup_steps=0), new_params=p.new_params, total_steps=10)
  peaks = optimizer.peak_learning_rates(dict(lr=1.0, lr_mult=2.0))
  assert peaks[optimizer.param_group("nlvr_head/fc0/kernel", {}, frozenset(p.new_params))] == 2.0
  assert peaks[optimizer.param_group("text/layers/0/output/kernel", {}, frozenset(p.new_params))] == 1.0

  from x2vlm_jax import sharding as shd
  from x2vlm_jax.training import train_state

  mesh = shd.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  with jax.set_mesh(mesh):
    _, fresh, shardings = train_state.create(dst_cfg, tx, mesh, [tuple(r) for r in shd.DEFAULT_RULES], 0)
    fresh_nlvr = np.asarray(fresh["params"]["nlvr_head"]["fc0"]["kernel"])
    state = init_from.apply(p, fresh, shardings, dst_cfg)
  got = jax.device_get(state["params"])
  np.testing.assert_array_equal(
    got["text"]["layers"][2]["cross_attn"]["key"]["kernel"], src["text"]["layers"][2]["cross_attn"]["key"]["kernel"]
  )
  table = got["vision"]["blocks"][1]["attn"]["rel_pos_table"]
  assert table.shape == ((2 * 4 - 1) ** 2 + 3, 4)
  np.testing.assert_allclose(
    table, resize_rel_pos_table(src["vision"]["blocks"][1]["attn"]["rel_pos_table"], 4)[0], rtol=1e-6
  )
  np.testing.assert_array_equal(got["nlvr_head"]["fc0"]["kernel"], fresh_nlvr)  # kept its fresh init

  with pytest.raises(ValueError, match=r"(?s)another model.*vision.width: checkpoint 64, model 768"):
    init_from.plan(str(tmp_path / "export"), get_preset("base"))


def test_resume_mid_fine_tuning_is_exact(tmp_path):
  c = synthetic_retrieval.get_config("steps=4")
  c.checkpoint_every = 100  # the split run saves where --max_steps stops it; the steps' program is the same
  whole, _, _ = experiment.train(c, str(tmp_path / "whole"))
  experiment.train(c, str(tmp_path / "split"), max_steps=2)
  resumed, _, _ = experiment.train(c, str(tmp_path / "split"))
  losses = lambda d: {e["step"]: e["train/loss"] for e in _jsonl(d) if "train/loss" in e}  # noqa: E731
  assert losses(tmp_path / "whole") == losses(tmp_path / "split")
  assert sorted(losses(tmp_path / "split")) == [1, 2, 3, 4]
  for a, b in zip(jax.tree.leaves(whole["params"]), jax.tree.leaves(resumed["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_stage1_export_starts_stage2_with_frame_embeddings(tmp_path):
  # Stage 1's export: the trainer's export of the image-only model's params (training them first would
  # add a compile and test nothing more here), marked so that "started from stage 1" cannot be
  # mistaken for a fresh initialisation.
  stage1 = synthetic_tiny.get_config("steps=2")
  params = nnx.to_pure_dict(nnx.state(X2VLM(stage1.model, rngs=nnx.Rngs(1)), nnx.Param))
  params["itm_head"]["fc1"]["kernel"] = np.asarray(params["itm_head"]["fc1"]["kernel"]) + 0.25
  export = trainer.export(stage1, params, str(tmp_path / "stage1"))
  stage2 = synthetic_tiny.get_config("steps=2,video=True")  # num_frames 2, a video stream
  stage2.async_checkpoints, stage2.optim.warmup_steps = False, 1
  stage2.init_from = export
  state2, _, last = experiment.train(stage2, str(tmp_path / "stage2"))
  record = json.loads((tmp_path / "stage2" / "init.json").read_text())
  assert record["new_params"] == ["frame_pos"] and record["actions"]["fresh"] == ["frame_pos"]
  assert np.isfinite(last["video/itc"])
  # Everything but the frame embedding started from stage 1 (then took two optimizer steps).
  moved = np.abs(np.asarray(state2["params"]["itm_head"]["fc1"]["kernel"]) - params["itm_head"]["fc1"]["kernel"]).max()
  assert 0 < moved < 0.05


@pytest.mark.slow
def test_itm_fusion_is_skipped_after_stop_calc_itm(monkeypatch):
  from x2vlm_jax.batch import stream_spec, synthetic_stream
  from x2vlm_jax.tasks.pretrain import PretrainTask

  calls = []
  original = X2VLM.itm_logits

  def counting(self, *a, **k):
    jax.debug.callback(lambda: calls.append(1))
    return original(self, *a, **k)

  monkeypatch.setattr(X2VLM, "itm_logits", counting)
  c = synthetic_tiny.get_config()
  c.data.region.enabled = False
  c.stop_calc_itm = 3
  task = PretrainTask(c)
  model = X2VLM(c.model, rngs=nnx.Rngs(0))
  spec = stream_spec("image", batch_size=4, image_res=32, patch_size=16, max_tokens=8, max_masks=2)
  batch = {"image": {k: jnp.asarray(v) for k, v in synthetic_stream("image", spec, vocab_size=200).items()}}
  graphdef, params = nnx.split(model)
  loss = jax.jit(lambda p, step: task.loss(nnx.merge(graphdef, p), batch, jax.random.key(0), step))
  _, on = jax.block_until_ready(loss(params, jnp.asarray(2)))
  assert len(calls) == 1 and float(on["image/itm"]) > 0
  _, off = jax.block_until_ready(loss(params, jnp.asarray(3)))
  assert len(calls) == 1, "the ITM fusion ran although stop_calc_itm had passed"
  assert float(off["image/itm"]) == 0.0


def test_a_checkpoint_of_the_same_preset_with_other_geometry_says_what_differs_and_what_to_do(tmp_path):
  """A converted tiny checkpoint (no absolute position table) under a `shapes` config (which adds one):
  the refusal used to name preset 'tiny' twice as if they were two models."""
  converted = get_preset("tiny")
  (tmp_path / "ckpt").mkdir()
  (tmp_path / "ckpt" / params_io.CONFIG_FILE).write_text(json.dumps(converted.to_dict()))
  run = get_preset("tiny")
  run.vision.abs_pos_emb = True
  with pytest.raises(ValueError) as e:
    init_from.plan(str(tmp_path / "ckpt"), run)
  msg = str(e.value)
  assert "both are preset 'tiny'" in msg and "the run uses 'tiny'" not in msg
  assert "vision.abs_pos_emb: checkpoint False, model True" in msg
  assert "--config.model.vision.abs_pos_emb=False" in msg and "no absolute position table" in msg
  with pytest.raises(ValueError) as e:
    init_from.plan(str(tmp_path / "ckpt"), get_preset("base"))
  msg = str(e.value)
  assert "preset 'tiny', the run's is 'base'" in msg and "vision.width: checkpoint 64, model 768" in msg
  assert "--config.model.vision.width=64" in msg and "or use a config of preset 'tiny'" in msg
