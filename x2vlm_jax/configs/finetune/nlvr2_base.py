"""NLVR2, docs/reference.md §5.3: is a statement true of a pair of images? (dev and test-P accuracy)

X²-VLM never released its NLVR2 config or checkpoint
(github.com/zengyan-97/X2-VLM/issues/14), so the hyper-parameters are
X-VLM's `configs/NLVR.yaml` [x-vlm]: 384 px, 10 pairs per GPU (8 GPUs assumed: global 80), AdamW
lr 3e-5, wd 0.01, lr_mult 2 (the new `cls_head`), 10 epochs, 10% linear warm-up; max_tokens 40 and
30 words per sentence (X²-VLM's NLVR.py / nlvr_dataset.py).

Model selection, as the official NLVR.py: both splits are evaluated after every epoch and the epoch
with the best MEAN of dev and test accuracy is kept (`best_metric = "nlvr2/dev_test_mean_acc"`), i.e.
test data leaks into the choice; select on dev alone with --config.best_metric=nlvr2/dev_acc.

  python tools/build_tfds.py --kind nlvr2 --input nlvr_train.json --image_root nlvr2/images \
      --data_dir gs://bucket/tfds --name nlvr2
  python main.py --config=configs/finetune/nlvr2_base.py --workdir=... --config.init_from=ckpt/base_384 \
      --config.data.data_dir=gs://bucket/tfds --config.evals.nlvr2.image_root=...
"""

from x2vlm_jax.configs.finetune import common


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="base",
    res=384,
    gpus=8,
    per_gpu=10,
    dev="gs://YOUR_BUCKET/finetune/nlvr_dev.json",
    test="gs://YOUR_BUCKET/finetune/nlvr_test.json",
    image_root="gs://YOUR_BUCKET/nlvr2",
  )
  c = common.base_config(a.model, "nlvr2", a.res, a.gpus * a.per_gpu)
  c.model.heads.nlvr = True
  c.data.train = [("nlvr2", "train", 1.0)]
  c.num_epochs = 10
  c.optim.lr = 3e-5
  c.optim.lr_mult = 2.0
  # Both splits every epoch, as NLVR.py does (`dev_acc`, `test_acc`, `dev_test_mean_acc`).
  c.evals.nlvr2 = dict(
    type="nlvr2",
    annotations=f"{a.dev},{a.test}",
    splits="dev,test",
    image_root=a.image_root,
    batch_size=a.per_gpu,
    every_epochs=1,
    at_end=True,
  )
  c.best_metric = "nlvr2/dev_test_mean_acc"  # NLVR.py: (val acc + test acc) / 2
  if a.model == "large":
    c.model.remat_vision = True
  return c
