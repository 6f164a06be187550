"""Tiny VQA / captioning fine-tuning on contract-shaped synthetic batches (task and trainer tests, no
tensorflow). The tiny stack is deepened to 4 layers (2 fusion layers) so that both official decoder
initialisations exist (2 layers ← text layers 2, 3; 1 layer ← the odd one, 3), and its vision width
is made 32 ≠ H = 64 so that the cross-attention keys/values of the decoder cannot be copied."""

from x2vlm_jax.configs.finetune import common


def get_config(arg=None):
  a = common.parse_arg(arg, task="vqa", steps=2, batch=4, res=32, decoder_layers=2)
  c = common.base_config("tiny", a.task, a.res, a.batch)
  c.model.text.num_layers = 4
  c.model.vision.width = 32
  c.model.vision.mlp_dim = 128
  c.model.text.hidden_dropout = 0.0
  c.model.text.attention_dropout = 0.0
  c.model.vision.drop_path_rate = 0.0
  c.data.source = "synthetic"
  c.data.max_tokens = 8
  c.data.vocab_file = "x2vlm_jax/data/shapes_vocab.txt"
  if a.task == "vqa":
    c.model.heads.decoder_layers = a.decoder_layers
    c.large_lr_for_dec = True
    c.data.max_answers = 3
    c.data.max_answer_tokens = 5
  else:
    c.prompt = "a picture of "
    c.data.max_masks = 4
  c.num_epochs = 0
  c.total_steps = a.steps
  c.log_every = 1
  c.checkpoint_every = 100
  c.async_checkpoints = False
  c.optim.lr = 1e-3
  c.optim.vision_lr = 5e-4
  c.optim.text_lr = 2e-4
  c.optim.warmup_fraction = 0.0
  c.optim.warmup_steps = 0
  return c
