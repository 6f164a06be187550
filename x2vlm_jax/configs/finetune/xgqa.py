"""xGQA (official XGQA.py, docs/reference.md §5.7): the VQA task with the generative decoder on GQA,
answers ranked over GQA's trainval_ans2label.json keys, per-language accuracy (exact match) and the
IGLUE mean over the non-English languages (`xgqa/acc_non_en`, XGQA.py's selection, "following iglue").

Hyper-parameters: CCLM's configs/cclm-base-ft/GQA.yaml: 384 px, 32 per GPU (8 GPUs assumed), max_tokens
40, 6 decoder layers, k_test 128, AdamW lr 3e-5, wd 0.01, lr_mult 2, 5 epochs, 10% warm-up.

  python tools/build_tfds.py --kind xgqa --input iglue/datasets/gqa/annotations/train.json --image_root images/gqa \
      --data_dir gs://bucket/tfds --name xgqa_en
  python main.py --config=configs/finetune/xgqa.py --workdir=... --config.init_from=ckpt/cclm_base_384
"""

from x2vlm_jax.configs.finetune import common, multilingual


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="cclm_base",
    res=384,
    gpus=8,
    per_gpu=32,
    mode="zero_shot",
    test="gs://YOUR_BUCKET/iglue/xGQA/annotations/few_shot/{lang}/test.json",
    image_root="gs://YOUR_BUCKET/gqa/images",
    answer_list="gs://YOUR_BUCKET/iglue/gqa/annotations/trainval_ans2label.json",
  )
  languages = multilingual.LANGUAGES["xgqa"]
  c = common.base_config(a.model, "xgqa", a.res, a.gpus * a.per_gpu)
  c.model.heads.decoder_layers = 6
  c.data.vocab_file = "gs://YOUR_BUCKET/xlm-roberta-base/sentencepiece.bpe.model"
  c.data.train = multilingual.train_sets("xgqa", a.mode, languages)
  c.data.max_tokens = 40
  c.num_epochs = 5
  c.optim.lr = 3e-5
  c.optim.lr_mult = 2.0
  c.evals.xgqa = dict(
    type="xgqa",
    annotations=multilingual.test_files(a.test, languages),
    languages=",".join(languages),
    image_root=a.image_root,
    answer_list=a.answer_list,
    k_test=128,
    batch_size=4,  # official batch_size_test
    every=0,
    at_end=True,
  )
  c.best_metric = "xgqa/acc_non_en"
  return c
