"""Tiny CCLM (the `cclm_tiny` preset) on one CPU: image, region and parallel-text streams in one step.

`:data=synthetic` (default) trains on contract-shaped random batches (tests, no tensorflow);
`:data=shapes_ml` reads the embedded multilingual `shapes` data (built by the data side) with its
SentencePiece model (`:vocab_file=...`, `:vocab_size=N` = that model's piece count). Our sizes, not
an official recipe: the released configs are cclm_x2vlm_{base,large}.py.
"""

from configs.pretrain import cclm_common, common


def get_config(arg=None):
  a = common.parse_arg(
    arg, data="synthetic", steps=6, batch=8, data_dir="artifacts/data", vocab_file="", vocab_size=200, mtext=True
  )
  c = cclm_common.cclm_config("cclm_tiny")
  c.model.text.vocab_size = a.vocab_size
  c.data.max_tokens = 12
  c.data.max_masks = 4
  sets = [("synthetic", "train", 1.0)] if a.data == "synthetic" else [(a.data, "train")]
  mtext_sets = [("synthetic", "train", 1.0)] if a.data == "synthetic" else [(a.data + "_mtext", "train")]
  c.data.vocab_file = a.vocab_file  # "" (synthetic): the export carries no tokenizer
  if a.data == "synthetic":
    c.data.source = "synthetic"
  else:
    c.data.data_dir = a.data_dir
    c.data.randaug = False
  common.set_stream(c, "image", sets, a.batch)
  common.set_stream(c, "region", sets, a.batch, num_images=a.batch // 2, group_images=a.batch // 2, group_texts=a.batch)
  common.set_stream(c, "video", [], 0)
  cclm_common.mtext_stream(c, mtext_sets if a.mtext else [], a.batch, max_tokens=12, max_masks=4)
  c.itm_group_size.update(image=a.batch // 2, region=a.batch // 2, mtext=a.batch // 2)
  c.total_steps = a.steps
  c.log_every = 1
  c.checkpoint_every = 1000
  c.optim.warmup_steps = 2
  c.optim.lr = 1e-3
  c.optim.update(vision_lr=None, text_lr=None, cross_lr=None)
  c.model.text.hidden_dropout = 0.0
  c.model.text.attention_dropout = 0.0
  return c
