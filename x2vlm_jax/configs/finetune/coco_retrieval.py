"""Image–text retrieval on COCO (Karpathy 5K test), docs/reference.md §5.1.

X²-VLM never released its retrieval config (github.com/zengyan-97/X2-VLM/issues/7 and /20), so the hyper-parameters are
X-VLM's `configs/Retrieval_coco.yaml` [x-vlm]: 384 px, 20 pairs per GPU on one 8-GPU node (global
160), max_tokens 40, AdamW lr 3e-5, wd 0.01, lr_mult 2, 10 epochs, 10% linear warm-up, k_test 256.
384 px is also the resolution of the released COCO re-run checkpoints (their 2212-row tables).

  python main.py --config=configs/finetune/coco_retrieval.py:model=base --workdir=... \
      --config.init_from=ckpt/base_384 --config.data.data_dir=... --config.evals.test.image_root=...
"""

from x2vlm_jax.configs.finetune import common


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="base",
    res=384,
    gpus=8,
    per_gpu=20,
    k_test=256,
    dataset="coco",
    annotations="gs://YOUR_BUCKET/finetune/coco_test.json",
    image_root="gs://YOUR_BUCKET/coco",
  )
  c = common.base_config(a.model, "retrieval", a.res, a.gpus * a.per_gpu)
  c.data.train = [(f"{a.dataset}_retrieval", "train", 1.0)]
  c.itm_group_size = a.per_gpu  # hard negatives from each GPU's own batch, as officially
  c.num_epochs = 10
  c.optim.lr = 3e-5
  c.evals.test = dict(
    type="retrieval",
    annotations=a.annotations,
    image_root=a.image_root,
    k_test=a.k_test,
    every_epochs=1,  # after every epoch and keep the best r_mean, as Retrieval.py
    at_end=True,
    batch_size=12,
    rerank_pairs=a.k_test,
  )
  c.best_metric = "test/r_mean"  # the official selection (on test: its val evaluation is commented out)
  if a.model == "large":
    c.model.remat_vision = True
  return c


def sweep(add, arg=None):
  """The fine-tuning learning rate around the published 3e-5 (X-VLM Retrieval_coco.yaml; X²-VLM released
  none), everything else as the recipe; the grid is our choice. Select by `test/r_mean` (best_metric).
    tools/sweep.py configs/finetune/coco_retrieval.py:model=base --workdir_root gs://bucket/sweeps/coco --print \\
        --config.init_from=gs://bucket/ckpt/base_384 --config.data.data_dir=gs://bucket/tfds
  """
  del arg
  for lr in (1e-5, 2e-5, 3e-5, 5e-5):
    add(**{"optim.lr": lr})
