"""The embedded default experiment (`make demo`): a tiny X²-VLM pre-trained on `shapes` on one CPU.

Same objectives and code path as the published runs: image–caption + region streams (ITC, ITM, MLM,
box L1 + GIoU), AdamW with warm-up and linear decay. Geometry: the `tiny` preset at 64 px with 16 px
patches (a 4×4 grid, so regions are meaningful), a 200-word vocabulary shipped with the dataset.
Sized to finish in a few minutes on 2 CPU cores; `--config=...:steps=N` trains longer.
"""

from x2vlm_jax.configs.pretrain import common


def get_config(arg=None):
  a = common.parse_arg(
    arg, steps=1500, batch=32, data_dir="artifacts/data", video=False, abs_pos=True, pos_init="sincos"
  )
  c = common.base_config("tiny")
  c.model.image_res = 64
  # BEiT's absolute position embedding (off in every released model): trained from scratch, the tower
  # has no other position signal than zero-initialised rel-pos tables, and the box head cannot learn
  # where things are (docs/grounding.md: zero-shot grounding acc@0.5 ... without, ... with).
  c.model.vision.abs_pos_emb = a.abs_pos
  c.model.vision.pos_embed_init = a.pos_init
  c.model.text.hidden_dropout = 0.0  # a tiny model on a tiny vocabulary needs no regularisation
  c.model.text.attention_dropout = 0.0
  c.model.vision.drop_path_rate = 0.0
  c.data.data_dir = a.data_dir
  c.data.max_tokens = 16
  c.data.max_masks = 4
  c.data.mask_prob = 0.25
  c.data.randaug = False
  common.set_stream(c, "image", [("shapes", "train")], a.batch)
  common.set_stream(
    c, "region", [("shapes", "train")], a.batch, num_images=a.batch // 2, group_images=a.batch // 2, group_texts=a.batch
  )
  common.set_stream(
    c, "video", [("shapes_video", "train")] if a.video else [], a.batch // 4 if a.video else 0, num_frames=3
  )
  if a.video:
    c.model.num_frames = 3
  c.itm_group_size.update(image=a.batch, region=a.batch, video=a.batch // 4)

  c.total_steps = a.steps
  c.log_every = 25
  c.checkpoint_every = 200
  c.keep_checkpoints = 2
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.optim.lr_mult = 1.0

  # Zero-shot retrieval on held-out scenes in the official test format (x2vlm_jax/data/shapes_tasks.py).
  tasks = f"{a.data_dir}/shapes_tasks"
  c.evals.retrieval = dict(
    type="retrieval",
    annotations=f"{tasks}/retrieval_test.json",
    image_root=tasks,
    k_test=16,
    batch_size=64,
    rerank_pairs=256,
    max_tokens=c.data.max_tokens,
    at_end=True,
  )
  # Zero-shot grounding: held-out referring expressions with unique referents, the official box
  # evaluation (acc@0.5 of the box scaled to the original image), next to constant-box references.
  c.evals.grounding = dict(
    type="grounding", annotations=f"{tasks}/grounding_test.json", image_root=tasks, batch_size=64, at_end=True
  )
  return c


def sweep(add, arg=None):
  """Learning rate × warm-up (tools/sweep.py; 6 trials of 400 steps, a few minutes each on 2 CPU cores).
  The grid brackets this config's lr 1e-3 / 50 warm-up steps (our choices for the demo)."""
  del arg  # the sweep's own `:arg` (e.g. data_dir=...) is merged into every trial by tools/sweep.py
  for lr in (3e-4, 1e-3, 3e-3):
    for warmup in (25, 100):
      add(arg="steps=400", **{"optim.lr": lr, "optim.warmup_steps": warmup})
