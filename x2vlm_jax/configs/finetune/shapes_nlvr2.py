"""NLVR2 fine-tuning on pairs of embedded `shapes` scenes (the demo's NLVR2 numbers, tests).

The NLVR2 task, pipeline and evaluator (nlvr2_base.py) on the statements of
x2vlm_jax/data/shapes_tasks.py ("the left image has more red objects than the right image", "both
images contain a circle", ...: labels computed from the scenes, balanced), starting from the
`shapes_tiny` pre-training export. Our choices for a tiny model on 2 CPU cores (common.shapes_config:
64 px with the absolute position table of the export it loads, no dropout, no RandAugment), global
batch 32, lr 5e-4 (the new head at lr × 2), 12 epochs (1,500 steps; 4 epochs at lr 1e-4 stay at chance,
docs/grounding.md); selected on dev.

  python tools/build_tfds.py --kind nlvr2 --input artifacts/data/shapes_tasks/nlvr_train.json \
      --image_root artifacts/data/shapes_tasks --data_dir artifacts/data --name shapes_nlvr2
  python main.py --config=configs/finetune/shapes_nlvr2.py --workdir=artifacts/demo_nlvr2 \
      --config.init_from=artifacts/demo/export
"""

from x2vlm_jax.configs.finetune import common


def get_config(arg=None):
  a = common.parse_arg(arg, epochs=12, batch=32, data_dir="artifacts/data", lr=5e-4, res=64)
  c = common.shapes_config("nlvr2", a)
  c.model.heads.nlvr = True
  c.data.train = [("shapes_nlvr2", "train", 1.0)]
  tasks = f"{a.data_dir}/shapes_tasks"
  c.evals.nlvr2 = dict(
    type="nlvr2",
    annotations=f"{tasks}/nlvr_dev.json,{tasks}/nlvr_test.json",
    splits="dev,test",
    image_root=tasks,
    batch_size=64,
    at_start=True,
    at_end=True,
  )
  c.best_metric = "nlvr2/dev_acc"
  return c
