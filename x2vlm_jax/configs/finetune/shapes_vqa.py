"""VQA fine-tuning on the embedded `shapes` scenes (tools/finetune_shapes.py, tests).

The same task, decoder initialisation, loss, pipeline and evaluator as VQA v2 (vqa2_base.py), on the
official-format files of x2vlm_jax/data/shapes_tasks.py, starting from the `shapes_tiny` pre-training
export. The tiny stack has one fusion layer, so the decoder has one layer (a copy of it). Our choices
for a tiny model on 2 CPU cores: 64 px, global batch 32, lr 3e-4 (decoder 6e-4), no dropout, 3
epochs, no RandAugment; A = 2 answers per question (the most any shapes question has), answers of at
most 2 wordpieces; evaluation: the official ranking over answer_list.json (k_test 128 ≥ the list:
every answer is re-scored).

  python tools/build_tfds.py --kind vqa --input artifacts/data/shapes_tasks/vqa_train.json \
      --image_root artifacts/data/shapes_tasks --data_dir artifacts/data --name shapes_vqa
  python main.py --config=configs/finetune/shapes_vqa.py --workdir=artifacts/shapes_vqa \
      --config.init_from=artifacts/demo/export
"""

from x2vlm_jax.configs.finetune import common, vqa2_base


def get_config(arg=None):
  a = common.parse_arg(arg, epochs=3, batch=32, data_dir="artifacts/data", lr=3e-4, res=64, mode="rank")
  c = common.base_config("tiny", "vqa", a.res, a.batch)
  tasks = common.shapes_setup(c, a.data_dir)
  c.model.heads.decoder_layers = 1
  c.large_lr_for_dec = True
  vqa2_base.vqa_data(c, data_dir=a.data_dir, train=[("shapes_vqa", "train")], max_answers=2, max_answer_tokens=4)
  c.data.max_tokens = 16
  c.num_epochs = a.epochs
  c.optim.lr = a.lr
  c.checkpoint_every = 500
  c.evals.test = vqa2_base.vqa_eval(
    annotations=f"{tasks}/vqa_test.json",
    image_root=tasks,
    answer_list=f"{tasks}/answer_list.json",
    mode=a.mode,
    batch_size=64,
    max_tokens=16,
    max_answer_tokens=4,
    at_start=True,
  )
  c.best_metric = "test/acc"
  return c
