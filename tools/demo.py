"""`make demo`: build the embedded `shapes` data, pre-train `shapes_tiny` on CPU, report.

The report shows every loss term at the start and at the end of training (each should fall) and
zero-shot retrieval / grounding on the held-out `shapes` test split next to the chance level.
Exits non-zero if a loss did not fall or retrieval is not clearly above chance.
"""

import argparse
import json
import logging as pylogging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _QuietOrbax(pylogging.Filter):
  def filter(self, record):
    return "orbax" not in record.pathname


def loss_trend(metrics_file: str):
  rows = [json.loads(line) for line in open(metrics_file)]
  by_step = {r["step"]: r for r in rows}  # a resumed run logs some steps twice: keep the last
  steps = sorted(by_step)
  k = max(1, len(steps) // 5)
  first, last = [by_step[s] for s in steps[:k]], [by_step[s] for s in steps[-k:]]
  keys = [key for key in by_step[steps[-1]] if key.split("/")[-1] in ("loss", "itc", "itm", "mlm", "bbox", "giou")]
  mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
  return {key: (mean(first, key), mean(last, key)) for key in sorted(keys)}, (steps[0], steps[-1])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--workdir", default="artifacts/demo")
  p.add_argument("--data_dir", default="artifacts/data")
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--fresh", action="store_true", help="delete the workdir first (otherwise a finished run "
                 "is reported again and an interrupted one resumes)")
  args = p.parse_args(argv)

  from absl import logging
  logging.set_verbosity(logging.INFO)
  pylogging.getLogger("absl").addFilter(_QuietOrbax())  # orbax logs through absl at INFO
  if args.fresh and os.path.exists(args.workdir):
    import shutil
    shutil.rmtree(args.workdir)

  t0 = time.time()
  from x2vlm_jax.data import shapes
  print(f"[demo] building the shapes dataset in {args.data_dir} ...", flush=True)
  shapes.build(args.data_dir)
  print(f"[demo] data ready ({time.time() - t0:.0f} s)", flush=True)

  from configs.pretrain import shapes_tiny
  from x2vlm_jax.training import evaluate, trainer
  config = shapes_tiny.get_config(f"steps={args.steps},data_dir={args.data_dir}")
  t1 = time.time()
  print(f"[demo] pre-training shapes_tiny for {config.total_steps} steps on {os.cpu_count()} CPU cores; "
        f"checkpoints, metrics.jsonl and TensorBoard events in {args.workdir}", flush=True)
  state, _, _ = trainer.train(config, args.workdir)
  train_s = time.time() - t1
  export = trainer.export(config, state, args.workdir)
  results = evaluate.run(config, state["params"])
  evaluate.write(results, args.workdir)

  trend, (s0, s1) = loss_trend(os.path.join(args.workdir, "metrics.jsonl"))
  print(f"\n=== x2vlm-jax demo report ({train_s / 60:.1f} min of training, {(time.time() - t0) / 60:.1f} min "
        f"in all) ===")
  print(f"loss terms, mean of the first vs the last fifth of logged steps ({s0}..{s1}):")
  ok = True
  for key, (a, b) in trend.items():
    falling = b < a
    ok &= falling
    print(f"  {key:<16s} {a:8.4f} -> {b:8.4f}  {'falling' if falling else 'NOT FALLING'}")
  pre = "shapes_test/"
  r = {k[len(pre):]: v for k, v in results.items() if k.startswith(pre)}
  chance = r["retrieval/chance_r1"]
  print(f"zero-shot retrieval on held-out shapes (chance R@1 = {chance:.2f}%):")
  print(f"  image->text R@1 {r['retrieval/txt_r1']:6.2f}%  R@5 {r['retrieval/txt_r5']:6.2f}%  R@10 {r['retrieval/txt_r10']:6.2f}%")
  print(f"  text->image R@1 {r['retrieval/img_r1']:6.2f}%  R@5 {r['retrieval/img_r5']:6.2f}%  R@10 {r['retrieval/img_r10']:6.2f}%")
  if "grounding/acc@0.5" in r:
    print(f"zero-shot grounding (box head) acc@IoU0.5 {r['grounding/acc@0.5']:.2f}%, mean IoU {r['grounding/mean_iou']:.3f}")
  print(f"exported weights: {export}  (x2vlm_jax.inference.load(...) reads them)")
  above = min(r["retrieval/txt_r1"], r["retrieval/img_r1"]) > 5 * chance
  ok &= above
  print("demo: OK" if ok else "demo: FAILED (see above)")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
