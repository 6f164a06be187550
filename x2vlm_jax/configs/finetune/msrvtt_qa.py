"""Video QA on MSRVTT-QA (1,500 answers, ClipBERT's protocol), docs/reference.md §5.6.

X²-VLM released no video fine-tuning config (docs/reference.md §5.6 [UNVERIFIED]); the fixed parts are the official
code's: `XVLMForClassification` (frame-pooled video → multi_modal fusion → cls_head), the "train w/o
flip" transform, pre_question (40 words in training, 50 at test), answers outside ans2label ignored in
training and wrong at test. Our choices, stated as such: 5 frames per video (the dataset code's
default `frame_len`), 224 px (the pre-training resolution: the video tower then needs no resize),
the VQA recipe's learning rates (vqa2_base: lr 4e-5 for the new head ×2, vision 2e-5, text 4e-5),
global batch 64, 8 epochs with 10% warm-up. Evaluation and selection as the official script: val and
test after every epoch (its `start_eval` is in no released config: 0 here), the epoch with the best
TEST accuracy kept (`best_metric = "test/acc"`; --config.best_metric=val/acc selects on val).

  python tools/build_tfds.py --kind video_qa --input msrvtt_qa/train.jsonl --image_root msrvtt/frames \
      --option ans2label=msrvtt_qa/train_ans2label.json --option video_pattern=video_{num}.json \
      --data_dir data --name msrvtt_qa
  python main.py --config=configs/finetune/msrvtt_qa.py --workdir=runs/msrvtt_qa --config.init_from=ckpt/base_1b
"""

from x2vlm_jax.configs.finetune import common


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="base",
    res=224,
    frames=5,
    batch=64,
    labels=1500,
    dataset="msrvtt_qa",
    pattern="video_{num}.json",
    root="gs://YOUR_BUCKET/msrvtt",
  )
  c = common.base_config(a.model, "video_qa", a.res, a.batch)
  c.model.num_frames = a.frames
  c.model.heads.num_labels = a.labels
  c.data.train = [(a.dataset, "train")]
  c.data.num_frames = c.model.get_ref("num_frames")
  c.data.max_words = 40  # pre_question's training limit (official max_ques_words)
  c.num_epochs = 8
  c.optim.lr = 4e-5
  c.optim.vision_lr = 2e-5
  c.optim.text_lr = 4e-5
  ans2label = f"{a.root}/{a.dataset}/train_ans2label.json"
  for split in ("val", "test"):
    c.evals[split] = dict(
      type="video_qa",
      annotations=f"{a.root}/{a.dataset}/{split}.jsonl",
      image_root=f"{a.root}/frames",
      ans2label=ans2label,
      video_pattern=a.pattern,
      batch_size=8,
      every_epochs=1,
      at_end=True,
    )
  c.best_metric = "test/acc"  # VQA_msrvtt.py / VQA_msvd.py: the best test accuracy
  return c
