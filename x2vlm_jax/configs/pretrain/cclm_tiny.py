"""Tiny CCLM (the `cclm_tiny` preset) on one CPU: image, region and parallel-text streams in one step.

`:data=synthetic` (default) trains on contract-shaped random batches (tests, no tensorflow).
`:data=shapes_ml` reads the embedded multilingual `shapes` scenes (English, German, French captions and
parallel pairs, x2vlm_jax/data/shapes_ml.py) with their SentencePiece model, at the geometry of the
English demo (configs/pretrain/shapes_tiny.py: 64 px, BEiT's absolute position table from sin-cos, no
dropout) and 48 tokens (the longest German caption has 41 pieces); `:mtext=false` drops the
parallel-text stream, `:images=en` gives the image and region streams the English captions only
(`shapes_ml_en`: German and French then come from the parallel text alone) — the A/Bs of
docs/multilingual_model.md. Our sizes, not an official recipe: the released configs are
cclm_x2vlm_{base,large}.py.

  python main.py --config=configs/pretrain/cclm_tiny.py:data=shapes_ml,steps=800 --workdir=artifacts/cclm_tiny
"""

from x2vlm_jax.configs.pretrain import cclm_common, common


def get_config(arg=None):
  a = common.parse_arg(
    arg, data="synthetic", steps=6, batch=8, data_dir="artifacts/data", vocab_file="", vocab_size=200, mtext=True, images="all"
  )
  c = cclm_common.cclm_config("cclm_tiny")
  c.data.vocab_file = a.vocab_file  # "" (synthetic): the export carries no tokenizer
  c.model.text.hidden_dropout = 0.0
  c.model.text.attention_dropout = 0.0
  c.model.cross.hidden_dropout = 0.0
  c.model.cross.attention_dropout = 0.0
  if a.data == "synthetic":
    c.data.source = "synthetic"
    c.model.text.vocab_size = a.vocab_size
    c.data.max_tokens = tokens = 12
    c.data.max_masks = masks = 4
    sets = mtext_sets = [("synthetic", "train", 1.0)]
  else:
    from x2vlm_jax.data import shapes_ml  # the data side's embedded multilingual scenes
    from x2vlm_jax.inference.tokenizer import Tokenizer

    c.data.data_dir = a.data_dir
    c.data.vocab_file = a.vocab_file or shapes_ml.SPM_MODEL
    c.model.text.vocab_size = Tokenizer(c.data.vocab_file).vocab_size
    c.model.image_res = 64
    c.model.vision.abs_pos_emb = True
    c.model.vision.pos_embed_init = "sincos"
    c.model.vision.drop_path_rate = 0.0
    c.data.randaug = False
    c.data.max_tokens = tokens = 48
    c.data.max_masks = masks = 8
    if a.images not in ("all", "en"):
      raise ValueError(f"cclm_tiny: images={a.images!r}: 'all' (every language's captions) or 'en'")
    images = a.data if a.images == "all" else shapes_ml.EN_NAME
    sets, mtext_sets = [(images, "train")], [(a.data + "_mtext", "train")]
  common.set_stream(c, "image", sets, a.batch)
  common.set_stream(c, "region", sets, a.batch, num_images=a.batch // 2, group_images=a.batch // 2, group_texts=a.batch)
  common.set_stream(c, "video", [], 0)
  cclm_common.mtext_stream(c, mtext_sets if a.mtext else [], a.batch, max_tokens=tokens, max_masks=masks)
  group = a.batch // 2 if a.data == "synthetic" else a.batch
  c.itm_group_size.update(image=group, region=group, mtext=group)
  c.total_steps = a.steps
  c.log_every = 1 if a.data == "synthetic" else 25
  c.checkpoint_every = 1000
  c.keep_checkpoints = 2
  c.optim.warmup_steps = 2 if a.data == "synthetic" else 50
  c.optim.lr = 1e-3
  c.optim.lr_mult = 1.0
  c.optim.update(vision_lr=None, text_lr=None, cross_lr=None)
  return c
