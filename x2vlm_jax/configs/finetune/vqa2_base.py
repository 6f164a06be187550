"""VQA v2 with the generative answer decoder, base model (docs/reference.md §5.2).

Released X²-VLM config `configs/finetune/vqa2_base.yaml` [x2vlm]: 768 px (for base AND large), train
on vqa_train + vqa_val + vg_qa, 6 decoder layers initialised from the fusion layers,
large_lr_for_dec, 8 per GPU × 16 A100 (global 128), no accumulation, max_tokens 40, AdamW lr 4e-5
(decoder × lr_mult 2 = 8e-5), vision_lr 2e-5, text_lr 4e-5, wd 0.01, 5 epochs, 10% warm-up, test batch
32 per GPU, k_test 128, evaluation from epoch 2. Our choices (the release pads per batch instead):
max_answers 10 answers per question (the most VQA's 10 annotators can give, so no answer is ever
dropped; padding answers weigh 0), max_answer_tokens 12 ([CLS] + 10 wordpieces + [SEP]; longer
answers are cut and counted as `train/answers_cut`); evaluation at the end only.

  python tools/build_tfds.py --kind vqa --input vqa_train.json --image_root coco/ --data_dir D --name vqa_train
  python tools/build_tfds.py --kind vqa --input vqa_val.json --image_root coco/ --data_dir D --name vqa_val
  python tools/build_tfds.py --kind vqa --input vg_qa.json --image_root visualgenome/ --data_dir D --name vg_qa
  python main.py --config=configs/finetune/vqa2_base.py --workdir=... --config.init_from=ckpt/base_4m \
      --config.data.data_dir=D --config.evals.test.image_root=coco/
"""

import ml_collections

from x2vlm_jax.configs.finetune import common


def vqa_data(c, *, data_dir: str, train, max_answers: int = 10, max_answer_tokens: int = 12):
  d = c.data
  d.data_dir = data_dir
  d.train = list(train)
  d.max_tokens = 40  # official question max_tokens
  d.max_words = 30  # official pre_question word limit at training (50 at test)
  d.max_answers = max_answers  # A answers per question (our choice, see the module doc)
  d.max_answer_tokens = max_answer_tokens


def vqa_eval(*, annotations: str, image_root: str, answer_list: str, **extra) -> ml_collections.ConfigDict:
  e = dict(
    type="vqa",
    annotations=annotations,
    image_root=image_root,
    answer_list=answer_list,
    mode="rank",
    k_test=128,
    batch_size=32,
    every_epochs=1,  # VQA.py: test answers after every epoch from `start_eval` (no local selection: server)
    start_eval=2,  # vqa2_base.yaml / vqa2_large.yaml: start_eval 2 (epoch index)
    at_end=True,
  )
  e.update(extra)
  return ml_collections.ConfigDict(e)


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="base",
    res=768,
    gpus=16,
    per_gpu=8,
    accum=1,
    decoder_layers=6,
    data_dir="gs://YOUR_BUCKET/tfds",
    annotations="gs://YOUR_BUCKET/finetune/vqa_test.json",
    answer_list="gs://YOUR_BUCKET/finetune/answer_list.json",
    image_root="gs://YOUR_BUCKET/coco",
  )
  c = common.base_config(a.model, "vqa", a.res, a.gpus * a.per_gpu)
  c.model.heads.decoder_layers = a.decoder_layers
  c.large_lr_for_dec = True  # all decoder params at lr × lr_mult
  vqa_data(c, data_dir=a.data_dir, train=[("vqa_train", "train"), ("vqa_val", "train"), ("vg_qa", "train")])
  c.num_epochs = 5
  c.optim.lr = 4e-5
  c.optim.vision_lr = 2e-5
  c.optim.text_lr = 4e-5
  c.optim.lr_mult = 2.0
  c.optim.warmup_fraction = 0.1
  c.optim.grad_accum_steps = a.accum
  c.evals.test = vqa_eval(annotations=a.annotations, image_root=a.image_root, answer_list=a.answer_list)
  return c
