"""Retrieval fine-tuning on the embedded `shapes` scenes (the demo's fine-tuning stage, tests).

The same task, loss, pipeline and evaluator as COCO (coco_retrieval.py), on the official-format files
of x2vlm_jax/data/shapes_tasks.py, starting from the `shapes_tiny` pre-training export. Our choices
for a tiny model on 2 CPU cores (common.shapes_config): 64 px, global batch 32 (ITM negatives from the
whole batch), lr 1e-4, no dropout, 3 epochs; evaluation with k_test 16.

  python tools/build_tfds.py --kind retrieval --input artifacts/data/shapes_tasks/retrieval_train.json \
      --image_root artifacts/data/shapes_tasks --data_dir artifacts/data --name shapes_retrieval
  python main.py --config=configs/finetune/shapes_retrieval.py --workdir=artifacts/demo_retrieval \
      --config.init_from=artifacts/demo/export
"""

from x2vlm_jax.configs.finetune import common


def get_config(arg=None):
  a = common.parse_arg(arg, epochs=3, batch=32, data_dir="artifacts/data", lr=1e-4, res=64)
  c = common.shapes_config("retrieval", a)
  c.data.train = [("shapes_retrieval", "train", 1.0)]
  c.itm_group_size = a.batch
  tasks = f"{a.data_dir}/shapes_tasks"
  c.evals.test = dict(
    type="retrieval",
    annotations=f"{tasks}/retrieval_test.json",
    image_root=tasks,
    k_test=16,
    batch_size=64,
    rerank_pairs=256,
    max_tokens=16,
    at_start=True,
    at_end=True,
  )
  c.best_metric = "test/r_mean"
  return c
