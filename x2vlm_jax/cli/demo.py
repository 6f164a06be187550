"""`make demo`: build the embedded `shapes` data, pre-train `shapes_tiny`, fine-tune it, report.

Stages (each resumes/reuses a finished run in its workdir; `--fresh` starts over):
  1. data: the `shapes` TFDS datasets (pre-training) and the fine-tuning tasks in the official
     annotation formats (x2vlm_jax/data/shapes_tasks.py), built into TFDS like a user's COCO files;
  2. pre-training (configs/pretrain/shapes_tiny.py): every loss term at the start vs the end, and
     zero-shot retrieval on held-out scenes (the official two-stage protocol) next to chance;
  3. retrieval fine-tuning (configs/finetune/shapes_retrieval.py) from the pre-training export:
     R@1 before (zero-shot) and after, next to chance;
  4. grounding fine-tuning (configs/finetune/shapes_grounding.py) from the same export: acc@0.5 on
     held-out referring expressions before (zero-shot) and after, next to constant-box references
     (6 epochs by default; `make demo-tasks` = 16 epochs, ≥ 50%, and stage 5);
  5. NLVR2 fine-tuning (configs/finetune/shapes_nlvr2.py; off by default): dev / test accuracy next to
     the majority class.
Exits non-zero if a pre-training loss did not fall, zero-shot retrieval is not clearly above chance,
or a fine-tuning stage did not clearly improve on its starting point.
"""

import argparse
import json
import os
import sys
import time

from x2vlm_jax import fs

# Fine-tuning stages beyond retrieval, sized so that the whole demo stays within ~15 min on the 2-core
# box including install: 6 grounding epochs show the box head learning (acc@0.5 1.7% → 22.9% on val with
# the official crop and RandAugment, README; 4 epochs reached only 10.9%, short of the report's +10-point
# bar); the config's 16 epochs reach ≥ 50% (`make demo-tasks`; docs/grounding.md).
GROUNDING_EPOCHS = 6
NLVR2_EPOCHS = 0


def loss_trend(metrics_file: str):
  by_step = {}
  for line in fs.path(metrics_file).read_text().splitlines():
    r = json.loads(line)
    if "train/loss" in r:  # training lines (evaluation lines carry only eval metrics)
      by_step[r["step"]] = r  # a resumed run logs some steps twice: keep the last
  steps = sorted(by_step)
  k = max(1, len(steps) // 5)
  first, last = [by_step[s] for s in steps[:k]], [by_step[s] for s in steps[-k:]]
  keys = [key for key in by_step[steps[-1]] if key.split("/")[-1] in ("loss", "itc", "itm", "mlm", "bbox", "giou")]
  mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
  return {key: (mean(first, key), mean(last, key)) for key in sorted(keys)}, (steps[0], steps[-1])


def eval_results(workdir: str, name: str):
  """{step: metrics} of an evaluator, from WORKDIR/eval/<name>/step_<n>/metrics.json."""
  root = fs.path(workdir) / "eval" / name
  out = {}
  for d in sorted(root.iterdir()) if root.is_dir() else []:
    out[int(d.name.split("_")[1])] = json.loads((d / "metrics.json").read_text())
  return out


def _retrieval_line(label: str, r) -> str:
  return (
    f"  {label:<28s} image->text R@1 {r['txt_r1']:6.2f}%  R@5 {r['txt_r5']:6.2f}%   "
    f"text->image R@1 {r['img_r1']:6.2f}%  R@5 {r['img_r5']:6.2f}%   (chance R@1 {r['chance_r1']:.2f}%)"
  )


def _grounding_report(zero, tuned) -> bool:
  """acc@0.5 (official box evaluation) zero-shot and fine-tuned, next to constant-box references."""
  zs = zero[max(zero)]
  print("grounding on held-out referring expressions (acc@0.5 of the box on the original image):")
  line = lambda label, r: print(  # noqa: E731
    f"  {label:<28s} val {100 * r['val_d']:6.2f}%  test {100 * r['test_d']:6.2f}%   (mean-GT-box "
    f"{100 * r['val_mean_box_d']:.2f}% / {100 * r['test_mean_box_d']:.2f}%, whole image "
    f"{100 * r['val_whole_image_d']:.2f}%)"
  )
  line("zero-shot after pre-training", zs)
  if tuned is None:
    return True
  after = tuned[max(tuned)]
  line(f"fine-tuned ({max(tuned)} steps)", after)
  improved = after["val_d"] > max(zs["val_d"], after["val_mean_box_d"]) + 0.10
  print(f"  val {100 * zs['val_d']:.2f}% -> {100 * after['val_d']:.2f}% ({'improved' if improved else 'NOT IMPROVED'})")
  return improved


def _nlvr2_report(tuned) -> bool:
  before, after = tuned[min(tuned)], tuned[max(tuned)]
  print("NLVR2-style statements about held-out scene pairs (accuracy):")
  for label, r in (("before (new head)", before), (f"fine-tuned ({max(tuned)} steps)", after)):
    print(
      f"  {label:<28s} dev {100 * r['dev_acc']:6.2f}%  test {100 * r['test_acc']:6.2f}%   "
      f"(majority class {100 * r['dev_majority_acc']:.2f}% / {100 * r['test_majority_acc']:.2f}%)"
    )
  above = after["dev_acc"] > after["dev_majority_acc"] + 0.10
  print(f"  dev {'clearly above' if above else 'NOT clearly above'} the majority class")
  return above


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--workdir", default="artifacts/demo")
  p.add_argument("--data_dir", default="artifacts/data")
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--finetune_epochs", type=int, default=2)
  p.add_argument("--grounding_epochs", type=int, default=GROUNDING_EPOCHS, help="0 skips the grounding stage")
  p.add_argument("--nlvr2_epochs", type=int, default=NLVR2_EPOCHS, help="0 skips the NLVR2 stage")
  p.add_argument(
    "--fresh",
    action="store_true",
    help="delete the workdirs first (otherwise finished runs are reported again and interrupted ones resume)",
  )
  args = p.parse_args(argv)

  pretrain_dir = args.workdir
  # A stage's workdir names its length: a longer run must not resume a shorter one's finished schedule.
  stage_dir = {
    "retrieval": args.workdir.rstrip("/") + "_retrieval",
    "grounding": args.workdir.rstrip("/") + f"_grounding_{args.grounding_epochs}ep",
    "nlvr2": args.workdir.rstrip("/") + f"_nlvr2_{args.nlvr2_epochs}ep",
  }
  retrieval_dir = stage_dir["retrieval"]
  if args.fresh:
    for d in (pretrain_dir, *stage_dir.values()):
      fs.path(d).rmtree(missing_ok=True)

  t0 = time.time()
  from x2vlm_jax import embedded

  print(f"[demo] the embedded shapes datasets in {args.data_dir} (built on first use) ...", flush=True)
  names = [embedded.SHAPES, embedded.SHAPES_VIDEO, embedded.TASKS, embedded.RETRIEVAL]
  names += [f"shapes_{k}" for k, e in (("grounding", args.grounding_epochs), ("nlvr2", args.nlvr2_epochs)) if e > 0]
  embedded.ensure(args.data_dir, names)
  print(f"[demo] data ready ({time.time() - t0:.0f} s)", flush=True)

  from x2vlm_jax import experiment
  from x2vlm_jax.configs.finetune import shapes_grounding, shapes_nlvr2, shapes_retrieval
  from x2vlm_jax.configs.pretrain import shapes_tiny
  from x2vlm_jax.training import trainer

  config = shapes_tiny.get_config(f"steps={args.steps},data_dir={args.data_dir}")
  t1 = time.time()
  print(
    f"[demo] pre-training shapes_tiny for {config.total_steps} steps on {os.cpu_count()} CPU cores; "
    f"checkpoints, metrics.jsonl and TensorBoard events in {pretrain_dir}",
    flush=True,
  )
  state, _, _ = experiment.train(config, pretrain_dir)
  export = trainer.export(config, state["params"], pretrain_dir)
  pretrain_s = time.time() - t1

  ft = shapes_retrieval.get_config(f"data_dir={args.data_dir},epochs={args.finetune_epochs}")
  ft.init_from = export
  t2 = time.time()
  print(f"[demo] fine-tuning retrieval from {export} in {retrieval_dir}", flush=True)
  state, _, _ = experiment.train(ft, retrieval_dir)
  trainer.export(ft, state["params"], retrieval_dir)
  finetune_s = time.time() - t2

  stage_s = {}
  for kind, module, epochs in (
    ("grounding", shapes_grounding, args.grounding_epochs),
    ("nlvr2", shapes_nlvr2, args.nlvr2_epochs),
  ):
    if epochs <= 0:
      continue
    c = module.get_config(f"data_dir={args.data_dir},epochs={epochs}")
    c.init_from = export
    t = time.time()
    print(f"[demo] fine-tuning {kind} from {export} in {stage_dir[kind]}", flush=True)
    experiment.train(c, stage_dir[kind])
    stage_s[kind] = time.time() - t

  trend, (s0, s1) = loss_trend(os.path.join(pretrain_dir, "metrics.jsonl"))
  extra = "".join(f", {v / 60:.1f} min {k}" for k, v in stage_s.items())
  print(
    f"\n=== x2vlm-jax demo report ({pretrain_s / 60:.1f} min pre-training, {finetune_s / 60:.1f} min "
    f"retrieval fine-tuning{extra}, {(time.time() - t0) / 60:.1f} min in all) ==="
  )
  print(f"pre-training loss terms, mean of the first vs the last fifth of logged steps ({s0}..{s1}):")
  ok = True
  for key, (a, b) in trend.items():
    falling = b < a
    ok &= falling
    print(f"  {key:<16s} {a:8.4f} -> {b:8.4f}  {'falling' if falling else 'NOT FALLING'}")

  zero = eval_results(pretrain_dir, "retrieval")
  tuned = eval_results(retrieval_dir, "test")
  zs, before, after = zero[max(zero)], tuned[min(tuned)], tuned[max(tuned)]
  print("retrieval on 300 held-out scenes (official two-stage protocol: ITC top-k, ITM rerank):")
  print(_retrieval_line("zero-shot after pre-training", zs))
  print(_retrieval_line(f"fine-tuned ({max(tuned)} steps)", after))
  chance = zs["chance_r1"]
  above = min(zs["txt_r1"], zs["img_r1"]) > 5 * chance
  improved = after["r_mean"] > before["r_mean"] + 5.0
  print(f"  r_mean {before['r_mean']:.2f} -> {after['r_mean']:.2f} ({'improved' if improved else 'NOT IMPROVED'})")
  ok &= above and improved
  ok &= _grounding_report(
    eval_results(pretrain_dir, "grounding"),
    eval_results(stage_dir["grounding"], "grounding") if "grounding" in stage_s else None,
  )
  if "nlvr2" in stage_s:
    ok &= _nlvr2_report(eval_results(stage_dir["nlvr2"], "nlvr2"))
  print(f"exported weights: {export}, {os.path.join(retrieval_dir, 'export')}  (x2vlm_jax.inference.load(...))")
  if args.grounding_epochs < 16 or args.nlvr2_epochs <= 0:
    print("grounding to acc@0.5 >= 50% (16 epochs) and NLVR2: make demo-tasks (reuses this pre-training)")
  print(
    f"VQA and captioning from this export (≈ 3–4 min each, not part of the demo's budget): "
    f"python tools/finetune_shapes.py --task vqa|captioning --pretrained {export} --data_dir {args.data_dir}"
  )
  print("demo: OK" if ok else "demo: FAILED (see above)")
  return 0 if ok else 1


def run():
  """The `x2vlm-demo` console script (x2vlm_jax/cli/__init__.py: launch)."""
  sys.exit(main())
