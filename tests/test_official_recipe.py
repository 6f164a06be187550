"""The released fine-tuning configs against the official recipe, value by value, and the official
per-epoch evaluation with its best-epoch selection.

OFFICIAL holds the values of the released YAMLs (configs/finetune/*.yaml of the official repository),
written here by hand with their source; the configs must reproduce them. SELECTION holds what each
official script evaluates after every epoch and which epoch it keeps.
"""

import importlib
import math

import ml_collections
import pytest

from x2vlm_jax.evaluation import schedule
from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.training.trainer import resolve_total_steps

# config path in our ConfigDict → the official value. "evals" means the config's only evaluation.
_SHARED_LARGE = {  # config_beit2_large.json + bert-large-uncased, text_num_hidden_layers 18, fusion at 12
  "model.name": "large",
  "model.patch_size": 16,
  "model.text.num_layers": 18,
  "model.text.fusion_start": 12,
}
OFFICIAL = {
  # configs/finetune/coco_captioning_large.yaml
  "coco_captioning_large": {
    **_SHARED_LARGE,
    "model.image_res": 384,
    "data.max_tokens": 40,
    "label_smoothing": 0.1,
    "data.mask_prob": 0.6,
    "data.max_masks": 18,
    "data.mask_whole_word": True,
    "data.skipgram_prb": 0.2,
    "data.skipgram_size": 3,
    "evals.max_length": 50,
    "evals.min_length": 5,
    "evals.num_beams": 3,
    "evals.length_penalty": 0.0,
    "evals.batch_size": 20,  # batch_size_test
    "prompt": "a picture of ",
    "optim.lr": 5e-6,
    "optim.weight_decay": 0.01,
    "optim.lr_mult": 2.0,
    "optim.vision_lr": 1e-5,
    "optim.text_lr": 5e-6,
    "num_epochs": 5,
    "optim.warmup_fraction": 0.05,
    "evals.start_eval": 0,
  },
  # configs/finetune/refcoco_grounding_large.yaml
  "refcoco_grounding_large": {
    **_SHARED_LARGE,
    "model.image_res": 384,
    "data.careful_hflip": True,
    "model.text.drop_path_rate": 0.1,
    "model.text.cross_drop_path_rate": 0.1,
    "data.max_tokens": 40,
    "optim.lr": 1e-5,
    "optim.weight_decay": 0.01,
    "optim.lr_mult": 2.0,
    "num_epochs": 10,
    "optim.warmup_fraction": 0.1,
  },
  # configs/finetune/vqa2_base.yaml (batch_size_train 8 "x16 a100")
  "vqa2_base": {
    "model.name": "base",
    "model.patch_size": 16,
    "model.text.num_layers": 18,
    "model.text.fusion_start": 12,
    "model.image_res": 768,
    "model.heads.decoder_layers": 6,
    "large_lr_for_dec": True,
    "data.batch_size": 8 * 16,
    "optim.grad_accum_steps": 1,
    "evals.batch_size": 32,
    "data.max_tokens": 40,
    "evals.k_test": 128,
    "optim.lr": 4e-5,
    "optim.weight_decay": 0.01,
    "optim.lr_mult": 2.0,
    "optim.vision_lr": 2e-5,
    "optim.text_lr": 4e-5,
    "num_epochs": 5,
    "optim.warmup_fraction": 0.1,
    "evals.start_eval": 2,
  },
  # configs/finetune/vqa2_large.yaml (batch_size_train 2 "x32 a100", accumulate_steps 2)
  "vqa2_large": {
    **_SHARED_LARGE,
    "model.image_res": 768,
    "model.heads.decoder_layers": 6,
    "large_lr_for_dec": True,
    "data.batch_size": 2 * 32,
    "optim.grad_accum_steps": 2,
    "evals.batch_size": 32,
    "data.max_tokens": 40,
    "evals.k_test": 128,
    "optim.lr": 4e-5,
    "optim.weight_decay": 0.01,
    "optim.lr_mult": 2.0,
    "optim.vision_lr": 2e-5,
    "optim.text_lr": 2e-5,
    "num_epochs": 5,
    "optim.warmup_fraction": 0.05,
    "evals.start_eval": 2,
  },
}

# config → (what the official script evaluates after every epoch from `start_eval`, the metric it keeps
# the best epoch by, as our `<eval>/<metric>`; None where it keeps none).
SELECTION = {
  "coco_retrieval": "test/r_mean",  # Retrieval.py: score = test_result['r_mean']
  "flickr_retrieval": "test/r_mean",
  "msrvtt_retrieval": "test/r_mean",
  "nlvr2_base": "nlvr2/dev_test_mean_acc",  # NLVR.py: (val acc + test acc) / 2
  "nlvr2_large": "nlvr2/dev_test_mean_acc",
  "refcoco_grounding_large": "refcoco/val_d",  # Grounding_bbox.py: grounding_acc['val_d']
  "refcoco_grounding_base": "refcoco/val_d",
  "coco_captioning_large": "test/score",  # Captioning_MLM.py: Bleu_4 + CIDEr
  "coco_captioning_base": "test/score",
  "msrvtt_qa": "test/acc",  # VQA_msrvtt.py: test_stats['acc']
  "msvd_qa": "test/acc",  # VQA_msvd.py
  "vqa2_base": None,  # VQA.py: test answers every epoch for the server, no local selection
  "vqa2_large": None,
}


def _config(name):
  return importlib.import_module(f"x2vlm_jax.configs.finetune.{name}").get_config()


def _get(c, path):
  if path.startswith("evals."):
    (ev,) = c.evals.values()
    return ev[path[len("evals.") :]]
  for part in path.split("."):
    c = c[part]
  return c


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_released_config_values_are_the_official_yaml(name):
  c = _config(name)
  for path, want in OFFICIAL[name].items():
    value = _get(c, path)
    if isinstance(want, float):
      assert value == pytest.approx(want, rel=1e-9), (name, path)
    else:
      assert value == want, (name, path)


@pytest.mark.parametrize("name", sorted(SELECTION))
def test_released_configs_evaluate_every_epoch_and_keep_the_official_best(name):
  c = _config(name)
  assert c.num_epochs >= 1 and c.evals
  for ev in c.evals.values():
    assert ev.get("every_epochs") == 1, name
  assert (c.get("best_metric") or None) == SELECTION[name]
  if SELECTION[name]:
    assert SELECTION[name].split("/")[0] in c.evals


def _evaluator(**schedule_fields):
  class Probe(Evaluator):
    pass

  config = ml_collections.ConfigDict({"model": {"heads": {"nlvr": False}}})
  return Probe("probe", config, {"type": "probe", **schedule_fields}, mesh=None)


@pytest.mark.parametrize("epochs,per_epoch,start_eval,every_epochs", [(5, 7, 2, 1), (10, 3, 0, 1), (6, 4, 1, 2)])
def test_every_epochs_evaluates_after_the_epochs_the_official_loop_does(epochs, per_epoch, start_eval, every_epochs):
  # The official loop: for epoch in range(E): train one epoch; if epoch >= start_eval: evaluate.
  want = [(e + 1) * per_epoch for e in range(epochs) if e >= start_eval and (e + 1) % every_epochs == 0]
  ev = _evaluator(every_epochs=every_epochs, start_eval=start_eval, at_end=False)
  total = epochs * per_epoch
  assert schedule.epoch_steps(total, epochs) == per_epoch
  assert [s for s in range(1, total + 1) if ev.due(s, total, per_epoch)] == want


def test_every_epochs_needs_whole_epochs():
  ev = _evaluator(every_epochs=1)
  assert schedule.epoch_steps(10, 2.5) == 0 and schedule.epoch_steps(10, 0) == 0
  with pytest.raises(ValueError, match="num_epochs"):
    ev.due(3, 10, 0)


def test_run_due_passes_the_epoch_length(tmp_path):
  from etils import epath

  class Counting(Evaluator):
    def __call__(self, graphdef, params):
      return {"x": 1.0}, None

  config = ml_collections.ConfigDict({"model": {"heads": {"nlvr": False}}})
  ev = Counting("c", config, {"type": "c", "every_epochs": 1, "at_end": False}, mesh=None)
  due = [
    s
    for s in range(1, 13)
    if schedule.run_due([("c", ev)], None, None, s, 12, epath.Path(tmp_path), num_epochs=3) == {"c/x": 1.0}
  ]
  assert due == [4, 8, 12]


class _Task:
  name = "fake"

  def __init__(self, size, per_step):
    self.size, self.per_step = size, per_step

  def train_size(self):
    return self.size

  def examples_per_step(self):
    return self.per_step


RUNS = [(1000, 64, 2, 3), (1000, 64, 1, 5), (128, 64, 1, 1), (999, 10, 4, 10)]


@pytest.mark.parametrize("size,batch,accum,epochs", RUNS)
def test_resolve_total_steps_is_the_official_schedule_length(size, batch, accum, epochs):
  """scheduler.py: num_training_steps = epochs × step_per_epoch, with (VQA.py and the other scripts)
  step_per_epoch = ceil(train_dataset_size / (batch_size_train × world_size) / accumulate_steps)."""
  config = ml_collections.ConfigDict({"num_epochs": epochs, "total_steps": 0, "optim": {"grad_accum_steps": accum}})
  assert resolve_total_steps(config, _Task(size, batch)) == epochs * math.ceil(size / batch / accum)
  config.num_epochs = 0
  config.total_steps = 17
  assert resolve_total_steps(config, _Task(size, batch)) == 17
