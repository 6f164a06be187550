"""MaRVL (official MARVL.py, docs/reference.md §5.7): zero-shot from English NLVR2 (the NLVR2 task and TFDS
set `nlvr2`), tested on MaRVL's languages (files from tools/marvl_preproc.py) and NLVR2's English test
set, as CCLM's NLVR.yaml; per-language accuracy, `marvl/acc` (their mean, the official selection) and
`acc_non_en` (IGLUE: MaRVL's own languages).

Hyper-parameters: CCLM's configs/cclm-base-ft/NLVR.yaml: 384 px, 10 per GPU (8 GPUs assumed), AdamW lr
3e-5, wd 0.01, lr_mult 2, 10 epochs, 10% warm-up.

  python tools/marvl_preproc.py --input iglue/datasets/marvl/zero_shot/annotations --output data/marvl
  python main.py --config=configs/finetune/marvl.py --workdir=... --config.init_from=ckpt/cclm_base_384
"""

from x2vlm_jax.configs.finetune import common, multilingual


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="cclm_base",
    res=384,
    gpus=8,
    per_gpu=10,
    mode="zero_shot",
    test="gs://YOUR_BUCKET/marvl/marvl-{lang}.json",
    nlvr2_test="gs://YOUR_BUCKET/finetune/nlvr_test.json",
    image_root="gs://YOUR_BUCKET/marvl_and_nlvr2_images",
  )
  languages = multilingual.LANGUAGES["marvl"]
  c = common.base_config(a.model, "marvl", a.res, a.gpus * a.per_gpu)
  c.model.heads.nlvr = True
  c.data.vocab_file = "gs://YOUR_BUCKET/xlm-roberta-base/sentencepiece.bpe.model"
  # zero-shot: English NLVR2; translate_train: plus `marvl_<lang>` sets (NLVR2-format translations)
  c.data.train = [("nlvr2", "train", None)] + (
    [] if a.mode == "zero_shot" else multilingual.train_sets("marvl", a.mode, languages)[1:]
  )
  c.num_epochs = 10
  c.optim.lr = 3e-5
  c.optim.lr_mult = 2.0
  c.evals.marvl = dict(
    type="marvl",
    annotations=",".join([a.nlvr2_test, multilingual.test_files(a.test, languages)]),
    languages=",".join(["en", *languages]),
    image_root=a.image_root,
    batch_size=a.per_gpu,
    every=0,
    at_end=True,
  )
  c.best_metric = "marvl/acc"
  return c
