"""Shared skeleton of the fine-tuning configs. Each task file states its hyper-parameters and where
each comes from: the released X²-VLM config, X-VLM's (when X²-VLM never released one), or our choice.

General rules of the official fine-tuning scripts (docs/reference.md §5 general, §6): fp32, no gradient clipping,
AdamW (β 0.9/0.98, wd 0.01) with linear warm-up and decay per step over `num_epochs`, freshly created
parameters at lr × lr_mult, dropout as in pre-training.
"""

import ml_collections

from x2vlm_jax.configs.pretrain.common import parse_arg  # noqa: F401  (the `:key=value` parser, re-exported)
from x2vlm_jax.models import presets


def finetune_data(image_res_ref, batch_size: int) -> ml_collections.ConfigDict:
  """The input of a fine-tuning task (one stream; batch sizes are GLOBAL)."""
  d = ml_collections.ConfigDict()
  d.source = "tfds"  # "synthetic": contract-shaped random batches (tests, benchmarks)
  d.data_dir = "gs://YOUR_BUCKET/tfds"
  d.vocab_file = "gs://YOUR_BUCKET/bert-base-uncased/vocab.txt"
  d.train = [("TRAIN_DATASET", "train", 1.0)]  # [(name, split, weight)] built by tools/build_tfds.py
  d.image_res = image_res_ref  # follows config.model.image_res
  d.batch_size = batch_size
  d.max_tokens = 40  # official fine-tuning `max_tokens`
  d.max_words = 30  # official pre_caption word limit of retrieval/NLVR2/grounding
  d.randaug = True
  d.crop_scale = (0.5, 1.0)  # the official fine-tuning "train" transform (docs/reference.md §4.3)
  d.strict = False  # a corrupt image is dropped and counted; True raises
  d.num_parallel_calls = -1
  d.prefetch = 2
  d.threadpool_size = 0
  return d


def base_config(model: str, task: str, image_res: int, batch_size: int) -> ml_collections.ConfigDict:
  from x2vlm_jax.sharding import DEFAULT_RULES
  from x2vlm_jax.training import optimizer

  c = ml_collections.ConfigDict()
  c.task = task
  c.model = presets.get_preset(model)
  c.model.image_res = image_res
  c.data = finetune_data(c.model.get_ref("image_res"), batch_size)

  c.seed = 42
  c.num_epochs = 10  # total_steps = epochs × ceil(train records / batch) when > 0
  c.total_steps = -1
  c.log_every = 50
  c.checkpoint_every = 1000
  # Ours: also every 30 minutes of wall clock (x2vlm_jax/training/preemption.py); 0 turns it off.
  c.checkpoint_every_minutes = 30.0
  c.keep_checkpoints = 1
  c.async_checkpoints = True
  c.init_from = ""  # a pre-trained checkpoint dir (convert_checkpoint output or export)

  c.optim = optimizer.default_config()
  c.optim.lr = 3e-5
  c.optim.weight_decay = 0.01
  c.optim.lr_mult = 2.0
  c.optim.warmup_fraction = 0.1  # official `num_warmup_steps: 0.1` (10% of the run)
  c.optim.clip_norm = 0.0  # fine-tuning scripts do not clip (docs/reference.md §6.3)

  c.mesh = (-1, 1, 1)
  c.sharding_rules = [list(r) for r in DEFAULT_RULES]
  c.itc_grad_scale = 1.0
  c.evals = ml_collections.ConfigDict()
  c.best_metric = ""  # "<eval name>/<metric>": that step is kept besides the newest
  c.best_mode = "max"
  c.profile = False
  c.profile_start = 10
  c.profile_steps = 5
  return c


def shapes_setup(c, data_dir: str) -> str:
  """The `shapes` fine-tuning runs (demo, tools/finetune_shapes.py), our choices for a tiny model on a
  tiny vocabulary: the geometry of the `shapes_tiny` export they start from (BEiT's absolute position
  table, sin-cos start: without it the from-scratch tower has no position signal, docs/grounding.md),
  no regularisation (no dropout, drop-path or RandAugment). Returns the directory of the
  official-format task files (x2vlm_jax/data/shapes_tasks.py)."""
  from x2vlm_jax.data.config import SHAPES_VOCAB

  c.model.vision.abs_pos_emb = True
  c.model.vision.pos_embed_init = "sincos"
  c.model.text.hidden_dropout = 0.0
  c.model.text.attention_dropout = 0.0
  c.model.vision.drop_path_rate = 0.0
  c.data.data_dir = data_dir
  c.data.vocab_file = SHAPES_VOCAB
  c.data.randaug = False
  c.log_every = 25
  return f"{data_dir}/shapes_tasks"


def shapes_config(task: str, a) -> ml_collections.ConfigDict:
  """A `shapes` fine-tuning config: the `tiny` preset at a.res set up by `shapes_setup`, 16 tokens,
  global batch a.batch, lr a.lr over a.epochs epochs, TFDS under a.data_dir."""
  c = base_config("tiny", task, a.res, a.batch)
  shapes_setup(c, a.data_dir)
  c.data.max_tokens = 16
  c.num_epochs = a.epochs
  c.optim.lr = a.lr
  c.checkpoint_every = 200
  return c
