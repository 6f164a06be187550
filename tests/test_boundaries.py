"""Project boundaries: GPU hosts have jax/flax/optax/orbax but no tensorflow, and torch is only a
test/conversion dependency. Everything a training host runs on prepared data must import without them."""

import subprocess
import sys

CODE = r"""
import sys
for blocked in ("tensorflow", "tensorflow_text", "tensorflow_datasets", "torch"):
  sys.modules[blocked] = None  # any import of these now raises ImportError
import x2vlm_jax.models, x2vlm_jax.inference, x2vlm_jax.params_io, x2vlm_jax.batch, x2vlm_jax.fs
import x2vlm_jax.objectives, x2vlm_jax.training.optimizer, x2vlm_jax.training.events, x2vlm_jax.training.metrics
import x2vlm_jax.training.train_step, x2vlm_jax.training.trainer, x2vlm_jax.tasks.synthetic
import x2vlm_jax.convert.x2vlm, x2vlm_jax.convert.relpos
import x2vlm_jax.tasks.pretrain, x2vlm_jax.tasks.retrieval, x2vlm_jax.training.init_from, x2vlm_jax.experiment
import x2vlm_jax.tasks.nlvr2, x2vlm_jax.tasks.grounding
import x2vlm_jax.evaluation.schedule, x2vlm_jax.evaluation.retrieval, x2vlm_jax.inference.tokenizer
import x2vlm_jax.evaluation.nlvr2, x2vlm_jax.evaluation.grounding
import x2vlm_jax.models.decoder, x2vlm_jax.inference.decoding
import x2vlm_jax.evaluation.caption_metrics, x2vlm_jax.evaluation.vqa_metrics
import x2vlm_jax.embedded, x2vlm_jax.progress, x2vlm_jax.console, x2vlm_jax.data.annotations, x2vlm_jax.sharding
import x2vlm_jax.tasks.vqa, x2vlm_jax.tasks.captioning, x2vlm_jax.inference.generation
import x2vlm_jax.evaluation.vqa, x2vlm_jax.evaluation.captioning
from x2vlm_jax.configs.pretrain import x2vlm_base_4m, x2vlm_base_1b_stage2, shapes_tiny
import x2vlm_jax.tasks.video_qa, x2vlm_jax.evaluation.video_qa, x2vlm_jax.data.video_files
from x2vlm_jax.configs.finetune import coco_retrieval, flickr_retrieval, shapes_retrieval
from x2vlm_jax.configs.finetune import msrvtt_qa, msvd_qa, msrvtt_retrieval, shapes_video
from x2vlm_jax.configs.finetune import vqa2_base, vqa2_large, shapes_vqa, coco_captioning_large, coco_captioning_base
from x2vlm_jax.configs.finetune import shapes_captioning
from x2vlm_jax.configs.finetune import nlvr2_base, nlvr2_large, shapes_nlvr2
from x2vlm_jax.configs.finetune import refcoco_grounding_base, refcoco_grounding_large, shapes_grounding
from x2vlm_jax import tasks
tasks.evaluator_types(), tasks.data_kinds(), tasks.evaluation_names()  # imports every task module
for m in (x2vlm_base_4m, x2vlm_base_1b_stage2, shapes_tiny, coco_retrieval, flickr_retrieval, shapes_retrieval,
          msrvtt_qa, msvd_qa, msrvtt_retrieval, shapes_video,
          vqa2_base, vqa2_large, shapes_vqa, coco_captioning_large, coco_captioning_base, shapes_captioning,
          nlvr2_base, nlvr2_large, shapes_nlvr2, refcoco_grounding_base, refcoco_grounding_large, shapes_grounding):
  c = m.get_config()
  if m not in (coco_captioning_large, coco_captioning_base):  # these read a vocabulary not on this machine
    tasks.build(c).batch_spec()  # the task objects and their batch contract (tools/compile_check.py) too
print("ok")
"""


def test_training_path_imports_without_tensorflow_or_torch():
  out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
