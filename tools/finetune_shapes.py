#!/usr/bin/env python
"""Fine-tune the `shapes_tiny` pre-training export on the shapes VQA or captioning task and compare
with a trivial baseline (the demo's generative-task stage, run on its own: it does not fit in the
demo's 15 minutes on 2 CPU cores).

  python tools/demo.py                                    # once: pre-training export artifacts/demo/export
  python tools/finetune_shapes.py --task vqa          [--pretrained artifacts/demo/export --epochs 3]
  python tools/finetune_shapes.py --task captioning

Builds the official-format files (x2vlm_jax/data/shapes_tasks.py) and their TFDS dataset when
missing, fine-tunes with configs/finetune/shapes_{vqa,captioning}.py through the one trainer, and
reports the held-out metrics next to the baseline:
  vqa         VQA accuracy (official normalisation, 10 annotators) vs the most frequent training answer
  captioning  CIDEr (and BLEU-4, ROUGE-L) vs the most frequent training caption for every image
Exits non-zero unless the fine-tuned model beats the baseline clearly (VQA by 20 points, CIDEr ×2).
"""

import argparse
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATASETS = {"vqa": "shapes_vqa", "captioning": "shapes_captioning"}  # x2vlm_jax.embedded names


def vqa_baseline(tasks_dir: str):
  from x2vlm_jax.evaluation.vqa import VQASet, accuracy_metrics

  train = json.load(open(os.path.join(tasks_dir, "vqa_train.json")))
  counts = collections.Counter(
    a for r in train for a in ([r["answer"]] if isinstance(r["answer"], str) else r["answer"])
  )
  top = counts.most_common(1)[0][0]
  test = VQASet.from_file(os.path.join(tasks_dir, "vqa_test.json"), tasks_dir)
  return top, accuracy_metrics({q: top for q in test.question_ids}, test)


def captioning_baseline(tasks_dir: str, tokenizer: str):
  from x2vlm_jax.evaluation.caption_metrics import caption_scores
  from x2vlm_jax.evaluation.captioning import read_references

  train = json.load(open(os.path.join(tasks_dir, "captioning_train.json")))
  top = collections.Counter(r["caption"] for r in train).most_common(1)[0][0]
  refs = read_references(os.path.join(tasks_dir, "captioning_test_gt.json"))
  return top, caption_scores({i: top for i in refs}, refs, tokenizer=tokenizer, meteor="off")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--task", required=True, choices=sorted(DATASETS))
  p.add_argument("--pretrained", default="artifacts/demo/export")
  p.add_argument("--data_dir", default="artifacts/data")
  p.add_argument("--workdir", default=None, help="default: artifacts/shapes_<task>")
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--lr", type=float, default=None, help="default: the config's")
  p.add_argument("--fresh", action="store_true", help="delete the workdir first")
  args = p.parse_args(argv)
  if not os.path.exists(os.path.join(args.pretrained, "model_config.json")):
    print(
      f"error: no pre-training export at {args.pretrained} (run `make demo` / tools/demo.py first)", file=sys.stderr
    )
    return 2
  workdir = args.workdir or f"artifacts/shapes_{args.task}"
  if args.fresh:
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)

  from absl import logging

  logging.set_verbosity(logging.INFO)
  t0 = time.time()
  from x2vlm_jax import embedded

  embedded.ensure(args.data_dir, [DATASETS[args.task]])  # the official-format files and their TFDS dataset
  tasks_dir = os.path.join(args.data_dir, embedded.TASKS)
  data_s = time.time() - t0

  from x2vlm_jax import experiment
  from x2vlm_jax.training import trainer

  if args.task == "vqa":
    from x2vlm_jax.configs.finetune import shapes_vqa as cfg_module
  else:
    from x2vlm_jax.configs.finetune import shapes_captioning as cfg_module
  config = cfg_module.get_config(
    f"data_dir={args.data_dir},epochs={args.epochs}" + (f",lr={args.lr}" if args.lr else "")
  )
  config.init_from = args.pretrained
  t1 = time.time()
  state, _, _ = experiment.train(config, workdir)
  trainer.export(config, state["params"], workdir)
  train_s = time.time() - t1

  evals = os.path.join(workdir, "eval", "test")
  last = max(os.listdir(evals), key=lambda d: int(d.split("_")[1]))
  got = json.load(open(os.path.join(evals, last, "metrics.json")))
  print(
    f"\n=== shapes {args.task}: fine-tuned {args.epochs} epochs from {args.pretrained} "
    f"({train_s / 60:.1f} min training + evaluation, {data_s:.0f} s data, {os.cpu_count()} CPU cores) ==="
  )
  if args.task == "vqa":
    top, base = vqa_baseline(tasks_dir)
    print(f"VQA accuracy on {int(got['num_questions'])} held-out questions (official metric, 10 annotators):")
    for key in sorted(k for k in got if k.startswith("acc")):
      print(
        f"  {key:<14s} fine-tuned {got[key]:6.2f}%   most frequent answer {top!r}: {base.get(key, float('nan')):6.2f}%"
      )
    ok = got["acc"] > base["acc"] + 20.0
  else:
    top, base = captioning_baseline(tasks_dir, config.evals.test.get("metrics_tokenizer", "auto"))
    print(f"caption metrics on {int(got['num_images'])} held-out images (COCO toolkit scorers):")
    for key in ("CIDEr", "Bleu_4", "ROUGE_L"):
      print(f"  {key:<8s} fine-tuned {got[key]:7.4f}   constant caption {top!r}: {base[key]:7.4f}")
    ok = got["CIDEr"] > 2 * base["CIDEr"]
  print(f"predictions: {os.path.join(evals, last, 'predictions.json')}; export: {os.path.join(workdir, 'export')}")
  print("shapes", args.task, "OK: clearly above the baseline" if ok else "FAILED: not clearly above the baseline")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
