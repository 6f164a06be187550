"""Project boundaries: GPU hosts have jax/flax/optax/orbax but no tensorflow, and torch is only a
test/conversion dependency. Everything a training host runs on prepared data must import without them."""

import subprocess
import sys

CODE = r"""
import sys
for blocked in ("tensorflow", "tensorflow_text", "tensorflow_datasets", "torch"):
  sys.modules[blocked] = None  # any import of these now raises ImportError
import x2vlm_jax.models, x2vlm_jax.inference, x2vlm_jax.params_io, x2vlm_jax.batch
import x2vlm_jax.training.losses, x2vlm_jax.training.optimizer, x2vlm_jax.training.objectives
import x2vlm_jax.training.train_step, x2vlm_jax.training.trainer, x2vlm_jax.training.synthetic
import x2vlm_jax.convert.x2vlm, x2vlm_jax.convert.relpos
import x2vlm_jax.tasks.pretrain, x2vlm_jax.tasks.retrieval, x2vlm_jax.training.init_from, x2vlm_jax.experiment
import x2vlm_jax.evaluation.registry, x2vlm_jax.evaluation.retrieval, x2vlm_jax.inference.tokenizer
import x2vlm_jax.models.decoder, x2vlm_jax.inference.decoding
import x2vlm_jax.evaluation.caption_metrics, x2vlm_jax.evaluation.vqa_metrics
import x2vlm_jax.data.embedded, x2vlm_jax.progress, x2vlm_jax.console
from configs.pretrain import x2vlm_base_4m, x2vlm_base_1b_stage2, shapes_tiny
from configs.finetune import coco_retrieval, flickr_retrieval, shapes_retrieval
for m in (x2vlm_base_4m, x2vlm_base_1b_stage2, shapes_tiny, coco_retrieval, flickr_retrieval, shapes_retrieval):
  m.get_config()
print("ok")
"""


def test_training_path_imports_without_tensorflow_or_torch():
  out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
