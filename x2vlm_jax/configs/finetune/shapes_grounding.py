"""Grounding fine-tuning on the embedded `shapes` scenes (the demo's grounding stage, tests).

The RefCOCO+ task, pipeline and evaluator (refcoco_grounding_large.py) on the referring expressions of
x2vlm_jax/data/shapes_tasks.py ("the red circle", "the square left of the blue triangle", ...: each
picks out exactly one object), starting from the `shapes_tiny` pre-training export. Our choices for a
tiny model on 2 CPU cores (common.shapes_config: 64 px with the absolute position table of the export
it loads, no dropout, no RandAugment), global batch 32, careful_hflip as officially, lr 5e-4 and 16
epochs (9,440 steps): the box head needs a few thousand steps before it localises (docs/grounding.md:
held-out acc@0.5 val / test 18% / 17% after 4 epochs, 37% / 38% after 8, 53% / 48% after 12, 58% / 54%
after 16). `make demo` runs 4 epochs, `make demo-tasks` these 16.

  python tools/build_tfds.py --kind grounding --input artifacts/data/shapes_tasks/grounding_train.json \
      --image_root artifacts/data/shapes_tasks --data_dir artifacts/data --name shapes_grounding
  python main.py --config=configs/finetune/shapes_grounding.py --workdir=artifacts/demo_grounding \
      --config.init_from=artifacts/demo/export
"""

from x2vlm_jax.configs.finetune import common


def get_config(arg=None):
  a = common.parse_arg(arg, epochs=16, batch=32, data_dir="artifacts/data", lr=5e-4, res=64)
  c = common.shapes_config("grounding", a)
  c.data.train = [("shapes_grounding", "train", 1.0)]
  c.data.careful_hflip = True
  tasks = f"{a.data_dir}/shapes_tasks"
  c.evals.grounding = dict(
    type="grounding",
    annotations=f"{tasks}/grounding_test.json",
    image_root=tasks,
    batch_size=64,
    at_start=True,
    at_end=True,
  )
  c.best_metric = "grounding/val_d"
  return c
