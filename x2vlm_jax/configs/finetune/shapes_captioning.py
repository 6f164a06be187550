"""Captioning fine-tuning on the embedded `shapes` scenes (tools/finetune_shapes.py, tests).

The same task, FG-free input, loss, beam search and metrics as COCO (coco_captioning_large.py), on
the Karpathy-format files of x2vlm_jax/data/shapes_tasks.py, starting from the `shapes_tiny`
pre-training export. Our choices for a tiny model on 2 CPU cores: 64 px, global batch 32, lr 3e-4,
no dropout, 3 epochs, no RandAugment; 24 tokens ([CLS] + prompt + the longest scene caption + [SEP])
with up to 10 masks; generation with the released beam search (3 beams, trigram blocking, length
penalty 0) but min_length 3 and max_length 20, as shapes captions are 3–15 words.

  python tools/build_tfds.py --kind captioning --input artifacts/data/shapes_tasks/captioning_train.json \
      --image_root artifacts/data/shapes_tasks --data_dir artifacts/data --name shapes_captioning
  python main.py --config=configs/finetune/shapes_captioning.py --workdir=artifacts/shapes_captioning \
      --config.init_from=artifacts/demo/export
"""

from x2vlm_jax.configs.finetune import coco_captioning_large, common


def get_config(arg=None):
  a = common.parse_arg(arg, epochs=3, batch=32, data_dir="artifacts/data", lr=3e-4, res=64)
  c = common.base_config("tiny", "captioning", a.res, a.batch)
  tasks = common.shapes_setup(c, a.data_dir)
  c.prompt = "a picture of "
  c.label_smoothing = 0.1
  coco_captioning_large.captioning_data(c, data_dir=a.data_dir, train=[("shapes_captioning", "train")])
  c.data.max_tokens = 24
  c.data.max_masks = 10
  c.num_epochs = a.epochs
  c.optim.lr = a.lr
  c.checkpoint_every = 500
  c.evals.test = coco_captioning_large.captioning_eval(
    annotations=f"{tasks}/captioning_test.json",
    image_root=tasks,
    gt_file=f"{tasks}/captioning_test_gt.json",
    prompt=c.prompt,
    batch_size=64,
    min_length=3,
    max_length=20,
    at_start=True,
  )
  c.best_metric = "test/CIDEr"
  return c
