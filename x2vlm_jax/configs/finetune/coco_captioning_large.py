"""COCO captioning (Karpathy splits) with the MLM head, large model (docs/reference.md §5.5).

Released X²-VLM config `configs/finetune/coco_captioning_large.yaml` [x2vlm]: 384 px, apply_FG_free,
16 per GPU, max_tokens 40, max_masks 18, mask_prob 0.6, whole-word masking, skipgram 0.2 / 3, label
smoothing 0.1, prompt "a picture of ", AdamW lr 5e-6, vision_lr 1e-5, text_lr 5e-6 (the stack and its
MLM head), wd 0.01, lr_mult 2, 5 epochs, 5% warm-up; generation: 3 beams, min_length 5, max_length 50,
length_penalty 0, test batch 20 per GPU; evaluation every epoch from epoch 0, the best by
Bleu_4 + CIDEr kept. The GPU count is not stated ("8 or 16 A100s"): 8 here (global 128), our choice.
The official output-length bug (docs/reference.md §10 item 14) is not reproduced: captions get max_length tokens.

  python tools/build_tfds.py --kind captioning --input coco_karpathy_train.json --image_root coco/ \
      --data_dir D --name coco_captioning
  python main.py --config=configs/finetune/coco_captioning_large.py --workdir=... \
      --config.init_from=ckpt/large_4m --config.data.data_dir=D --config.evals.test.image_root=coco/
"""

import ml_collections

from x2vlm_jax.configs.finetune import common


def captioning_data(c, *, data_dir: str, train):
  d = c.data
  d.data_dir = data_dir
  d.train = list(train)
  d.max_tokens = 40  # [CLS] + prompt + caption + [SEP], cut (official max_tokens)
  d.max_masks = 18
  d.mask_prob = 0.6
  d.mask_whole_word = True
  d.skipgram_prb = 0.2
  d.skipgram_size = 3


def captioning_eval(*, annotations: str, image_root: str, gt_file: str, prompt: str, **extra):
  e = dict(
    type="captioning",
    annotations=annotations,
    image_root=image_root,
    gt_file=gt_file,
    prompt=prompt,
    batch_size=20,
    num_beams=3,
    min_length=5,
    max_length=50,
    length_penalty=0.0,
    every_epochs=1,  # Captioning_MLM.py: after every epoch from `start_eval`
    start_eval=0,  # coco_captioning_large.yaml: start_eval 0 (epoch index)
    at_end=True,
  )
  e.update(extra)
  return ml_collections.ConfigDict(e)


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="large",
    res=384,
    gpus=8,
    per_gpu=16,
    data_dir="gs://YOUR_BUCKET/tfds",
    annotations="gs://YOUR_BUCKET/finetune/coco_karpathy_test.json",
    gt_file="gs://YOUR_BUCKET/finetune/coco_karpathy_test_gt.json",
    image_root="gs://YOUR_BUCKET/coco",
  )
  c = common.base_config(a.model, "captioning", a.res, a.gpus * a.per_gpu)
  c.prompt = "a picture of "
  c.label_smoothing = 0.1
  captioning_data(c, data_dir=a.data_dir, train=[("coco_captioning", "train")])
  c.num_epochs = 5
  c.optim.lr = 5e-6
  c.optim.vision_lr = 1e-5
  c.optim.text_lr = 5e-6
  c.optim.lr_mult = 2.0
  c.optim.warmup_fraction = 0.05
  c.evals.test = captioning_eval(annotations=a.annotations, image_root=a.image_root, gt_file=a.gt_file, prompt=c.prompt)
  c.best_metric = "test/score"  # Bleu_4 + CIDEr, the official selection
  if a.model == "large":
    c.model.remat_vision = True
  return c
