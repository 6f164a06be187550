"""The tasks' own `loss` (not only the objectives they call): what each task feeds the objective.

* retrieval: ITC uses the batch's `image_ids` (captions of one image are all positives: X-VLM
  get_contrastive_loss with idx, sim_targets = (idx == idx.T) / row sums, (i2t + t2i) / 2), and the
  ITM hard negatives are drawn within `itm_group_size` rows (the official per-GPU batch);
* NLVR2: cross-entropy of the pair logits (NLVR.py: F.cross_entropy(prediction, targets));
* video QA: cross-entropy of the classifier with label −100 ignored (XVLMForClassification:
  F.cross_entropy(prediction, targets, ignore_index=-100)).
Each reference is numpy on the model's own forward outputs.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from tests.configs import synthetic_retrieval
from x2vlm_jax import tasks
from x2vlm_jax.models import X2VLM


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _retrieval(group_size=4):
  c = synthetic_retrieval.get_config()
  c.itm_group_size = group_size
  # No dropout / drop path: the task's training forward then equals the deterministic one used below.
  c.model.vision.drop_path_rate = 0.0
  c.model.text.hidden_dropout = c.model.text.attention_dropout = 0.0
  task = tasks.build(c)
  model = X2VLM(c.model, rngs=nnx.Rngs(2))
  batch = {k: jnp.asarray(v) for k, v in task.synthetic_batch(3, 8).items()}
  return c, task, model, batch


def test_retrieval_itc_uses_the_image_ids():
  c, task, model, batch = _retrieval()
  ids = np.asarray(batch["image_ids"])
  assert len(set(ids.tolist())) < len(ids)  # captions share images: the ids matter
  batch["captions_cut"] = jnp.asarray([0, 1, 0, 1, 1, 0, 0, 0], jnp.int32)  # rows the stream cut to max_tokens
  _, metrics = nnx.jit(lambda m, b: task.loss(m, b, jax.random.key(0), 0))(model, batch)
  assert int(metrics["train/captions_cut"]) == 3  # logged per step (README deviations: not cut officially)
  _, vf = model.encode_image(batch["images"])
  _, tf_ = model.encode_text(batch["text_ids"], batch["text_mask"])
  temp = float(np.clip(float(model.temp[...]), 0.001, 0.5))
  sim = np.asarray(vf, np.float64) @ np.asarray(tf_, np.float64).T / temp
  targets = (ids[:, None] == ids[None, :]).astype(np.float64)
  targets /= targets.sum(1, keepdims=True)
  i2t = -(_log_softmax(sim) * targets).sum(1).mean()
  t2i = -(_log_softmax(sim.T) * targets).sum(1).mean()
  assert float(metrics["train/itc"]) == pytest.approx((i2t + t2i) / 2, rel=1e-4)
  # Without ids (each row its own image) the loss would differ: the test can see a dropped `ids`.
  diag = -np.diag(_log_softmax(sim)).mean() / 2 - np.diag(_log_softmax(sim.T)).mean() / 2
  assert abs(diag - (i2t + t2i) / 2) > 1e-3


def test_retrieval_itm_negatives_come_from_the_configured_group():
  """With groups of 2 rows that are captions of ONE image, no in-group negative exists for either
  side, so every negative pair is invalid and the ITM loss is that of the positives alone; with groups
  of 4 the negatives are real."""
  c, task2, model, batch = _retrieval(group_size=2)
  ids = np.asarray(batch["image_ids"])
  assert (ids[0::2] == ids[1::2]).all()
  _, m2 = nnx.jit(lambda m, b: task2.loss(m, b, jax.random.key(1), 0))(model, batch)
  vis, _ = model.encode_image(batch["images"])
  txt, _ = model.encode_text(batch["text_ids"], batch["text_mask"])
  pos = model.itm_logits(vis, jnp.ones(vis.shape[:2], jnp.int32), txt, batch["text_mask"])
  want = -_log_softmax(pos)[:, 1].mean()
  assert float(m2["train/itm"]) == pytest.approx(want, rel=1e-4)
  task4 = tasks.build(ml_collections.ConfigDict({**c.to_dict(), "itm_group_size": 4}))
  _, m4 = nnx.jit(lambda m, b: task4.loss(m, b, jax.random.key(1), 0))(model, batch)
  assert abs(float(m4["train/itm"]) - want) > 1e-4


def _classification_task(name):
  c = synthetic_retrieval.get_config()
  c.task = name
  c.model.vision.drop_path_rate = 0.0
  c.model.text.hidden_dropout = c.model.text.attention_dropout = 0.0
  if name == "nlvr2":
    c.model.heads.nlvr = True
  else:
    c.model.heads.num_labels = 5
    c.model.num_frames = 2
    c.data.num_frames = 2
  task = tasks.build(c)
  return task, X2VLM(c.model, rngs=nnx.Rngs(4))


@pytest.mark.parametrize("name", ["nlvr2", "video_qa"])
def test_classification_tasks_loss_is_the_official_cross_entropy(name):
  task, model = _classification_task(name)
  batch = task.synthetic_batch(5, 4)
  batch["labels"] = np.array([1, 0, 1, 0] if name == "nlvr2" else [3, -100, 0, 4], np.int32)
  batch["valid"] = np.array([1, 1, 1, 0], np.float32)  # the last row is padding
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  loss, metrics = nnx.jit(lambda m, b: task.loss(m, b, jax.random.key(0), 0))(model, batch)
  fwd = task.PREDICT_FNS["nlvr_logits" if name == "nlvr2" else "answer_logits"]
  vision = batch["images"] if name == "nlvr2" else batch["frames"]
  logits = np.asarray(fwd(model, vision, batch["text_ids"], batch["text_mask"]))
  labels = np.asarray(batch["labels"])
  keep = (np.asarray(batch["valid"]) > 0) & (labels != -100)  # ignore_index=-100, padding rows out
  logp = _log_softmax(logits)
  want = -np.mean([logp[i, labels[i]] for i in np.flatnonzero(keep)])
  assert float(loss) == pytest.approx(want, rel=1e-4)
  assert float(metrics["train/ce"]) == pytest.approx(want, rel=1e-4)
