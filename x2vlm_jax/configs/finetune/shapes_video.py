"""Video QA and video–text retrieval on the embedded `shapes` clips (x2vlm_jax/data/shapes_tasks.py:
objects moving left/right/up/down; official MSRVTT-QA / retrieval formats), starting from the
shapes_tiny pre-training export (image-only: its frame embeddings are new, lr × lr_mult).

  :task=video_qa (default) or :task=video_retrieval. Our choices for a tiny model on 2 CPU cores:
  64 px, 3 frames, global batch 32, lr 1e-4 (frame embeddings and the new head ×2), and common.shapes_setup
  (the export's absolute position table, no dropout).

  python tools/build_tfds.py --kind video_qa --input artifacts/data/shapes_tasks/video_qa_train.jsonl \
      --image_root artifacts/data/shapes_tasks/videos \
      --option ans2label=artifacts/data/shapes_tasks/video_qa_ans2label.json \
      --data_dir artifacts/data --name shapes_video_qa
  python main.py --config=configs/finetune/shapes_video.py --workdir=artifacts/video_qa \
      --config.init_from=artifacts/demo/export
"""

import json

from etils import epath

from x2vlm_jax.configs.finetune import common


def get_config(arg=None):
  a = common.parse_arg(arg, task="video_qa", epochs=3, batch=32, data_dir="artifacts/data", lr=1e-4, res=64, frames=3)
  if a.task not in ("video_qa", "video_retrieval"):
    raise ValueError(f"shapes_video: task must be video_qa or video_retrieval, got {a.task!r}")
  c = common.shapes_config(a.task, a)
  c.model.num_frames = a.frames
  c.data.num_frames = c.model.get_ref("num_frames")
  tasks = f"{a.data_dir}/shapes_tasks"
  if a.task == "video_qa":
    ans2label = f"{tasks}/video_qa_ans2label.json"
    # The answer vocabulary decides the head; read it when it exists (the data is built on first use).
    vocab = epath.Path(ans2label)
    c.model.heads.num_labels = len(json.loads(vocab.read_text())) if vocab.exists() else 13
    c.data.train = [("shapes_video_qa", "train")]
    c.evals.test = dict(
      type="video_qa",
      annotations=f"{tasks}/video_qa_test.jsonl",
      image_root=f"{tasks}/videos",
      ans2label=ans2label,
      video_pattern="{id}.json",
      batch_size=16,
      max_tokens=16,
      at_start=True,
      at_end=True,
    )
    c.best_metric = "test/acc"
  else:
    c.data.train = [("shapes_video_retrieval", "train")]
    c.itm_group_size = a.batch
    c.evals.test = dict(
      type="retrieval",
      annotations=f"{tasks}/video_retrieval_test.json",
      image_root=tasks,
      video=True,
      vision_key="video",
      k_test=16,
      batch_size=16,
      rerank_pairs=64,
      max_tokens=16,
      at_start=True,
      at_end=True,
    )
    c.best_metric = "test/r_mean"
  return c
