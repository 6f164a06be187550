"""Tiny retrieval fine-tuning on contract-shaped synthetic batches (trainer/task tests, no tensorflow)."""

from x2vlm_jax.configs.finetune import common


def get_config(arg=None):
  a = common.parse_arg(arg, steps=4, batch=8, res=32)
  c = common.base_config("tiny", "retrieval", a.res, a.batch)
  c.data.source = "synthetic"
  c.data.max_tokens = 12
  c.data.vocab_file = "x2vlm_jax/data/shapes_vocab.txt"
  c.itm_group_size = 4
  c.num_epochs = 0
  c.total_steps = a.steps
  c.log_every = 1
  c.checkpoint_every = 2
  c.keep_checkpoints = 1
  c.async_checkpoints = False
  c.optim.lr = 1e-3
  c.optim.warmup_fraction = 0.0
  c.optim.warmup_steps = 1
  return c


def sweep(add, arg=None):
  """Two trials for tests/test_sweep.py. They differ in the seed only (a runtime value), so the second
  trial reuses the first one's compiled programs through the sweep's compilation cache."""
  del arg
  for seed in (1, 2):
    add(seed=seed)
