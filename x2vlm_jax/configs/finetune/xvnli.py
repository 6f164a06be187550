"""XVNLI (official XVNLI.py, docs/reference.md §5.7): 3-way visual NLI on Flickr30K, per-language accuracy
(`xvnli/acc` = the official "Test average accuracy", `acc_non_en` IGLUE's).

Hyper-parameters: CCLM's configs/cclm-base-ft/XVNLI.yaml: 384 px, 12 per GPU (8 GPUs assumed), max_tokens
80 (also the reader's word limit), num_labels 3, AdamW lr 3e-5, wd 0.01, lr_mult 2, 10 epochs, 10% warm-up.

  python tools/build_tfds.py --kind xvnli --input iglue/datasets/XVNLI/annotations/en/train.jsonl \
      --image_root images/flickr30k-images --data_dir gs://bucket/tfds --name xvnli_en --max_words 80
  python main.py --config=configs/finetune/xvnli.py:mode=zero_shot --workdir=... --config.init_from=ckpt/cclm_base_384
"""

from x2vlm_jax.configs.finetune import common, multilingual


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="cclm_base",
    res=384,
    gpus=8,
    per_gpu=12,
    mode="zero_shot",
    test="gs://YOUR_BUCKET/iglue/XVNLI/annotations/{lang}/test.jsonl",
    image_root="gs://YOUR_BUCKET/flickr30k-images",
  )
  languages = multilingual.LANGUAGES["xvnli"]
  c = common.base_config(a.model, "xvnli", a.res, a.gpus * a.per_gpu)
  c.model.heads.num_labels = 3
  c.data.vocab_file = "gs://YOUR_BUCKET/xlm-roberta-base/sentencepiece.bpe.model"
  c.data.train = multilingual.train_sets("xvnli", a.mode, languages)
  c.data.max_tokens = 80
  c.data.max_words = 80
  c.num_epochs = 10
  c.optim.lr = 3e-5
  c.optim.lr_mult = 2.0
  c.evals.xvnli = dict(
    type="xvnli",
    annotations=multilingual.test_files(a.test, languages),
    languages=",".join(languages),
    image_root=a.image_root,
    max_tokens=80,
    max_words=80,
    batch_size=a.per_gpu,
    every=0,
    at_end=True,
  )
  c.best_metric = "xvnli/acc"
  return c
