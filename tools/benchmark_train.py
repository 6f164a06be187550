"""Training-step benchmark on synthetic, contract-shaped batches (no tensorflow needed).

  python tools/benchmark_train.py --config configs/pretrain/x2vlm_base_4m.py --steps 10 \
      [--per_device image=64,region=64,images=25] [--dtype bfloat16] [--attention cudnn] [--remat]
      [--scan on|off] [--remat_policy none|full|dots_saveable|dots_with_no_batch_dims_saveable]

Reports step time, examples/s, FLOPs per step (the compiled program's matmuls and convolutions, a
scanned layer stack counted once per layer: x2vlm_jax/hlo_flops.py; XLA's cost analysis, which counts a
loop body once, beside it), utilisation against the device's peak (bf16 dense; H100/H200 SXM 989
TFLOP/s, or --peak_tflops; the count includes a remat policy's recomputation, so it is hardware, not
model, FLOPs), and peak device memory.
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
  from x2vlm_jax import console

  console.quiet()  # before jax/tensorflow load: expected CPU-machine noise off, warnings and errors kept

import jax  # noqa: E402

PEAK_TFLOPS = {
  "H100": 989.0,
  "H200": 989.0,
  "A100": 312.0,
  "TPU v4": 275.0,
  "TPU v5 lite": 197.0,
  "TPU v5p": 459.0,
  "TPU v6 lite": 918.0,
}


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("bench_config", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


def peak_tflops(device, override):
  if override:
    return override
  for name, tf in PEAK_TFLOPS.items():
    if name.lower() in device.device_kind.lower():
      return tf
  return None


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--per_device", default="", help="image=N,region=N,images=N,video=N per device")
  p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16"])
  p.add_argument("--attention", default=None, choices=[None, "xla", "cudnn"])
  p.add_argument("--remat", action="store_true", help="remat both towers (policy full; the older flag)")
  p.add_argument(
    "--remat_policy",
    default=None,
    choices=[None, "none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"],
    help="remat policy of both towers (x2vlm_jax/models/scan.py)",
  )
  p.add_argument("--scan", default=None, choices=[None, "on", "off"], help="scan over layers (default: the preset's)")
  p.add_argument("--no_dropout", action="store_true", help="text dropout off (lets cuDNN take attention)")
  p.add_argument("--peak_tflops", type=float, default=None)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)

  from x2vlm_jax import hlo_flops, tasks
  from x2vlm_jax import sharding as shd
  from x2vlm_jax.models.presets import remat_policy
  from x2vlm_jax.training import optimizer, train_state
  from x2vlm_jax.training.train_step import jit_train_step

  config = load_config(args.config)
  n_dev = jax.device_count()
  config.data.source = "synthetic"
  if args.per_device:
    kv = dict(item.split("=") for item in args.per_device.split(","))
    for stream in ("image", "region", "video"):
      if stream in kv:
        config.data[stream].batch_size = int(kv[stream]) * n_dev
        config.data[stream].enabled = int(kv[stream]) > 0
        config.itm_group_size[stream] = int(kv[stream])
    if "images" in kv:
      config.data.region.num_images = int(kv["images"]) * n_dev
  if args.dtype:
    config.model.dtype = args.dtype
  if args.attention:
    config.model.attention_impl = args.attention
  if args.remat:
    config.model.remat_vision = config.model.remat_text = True
  if args.remat_policy:
    config.model.remat.update(vision=args.remat_policy, text=args.remat_policy)
  if args.scan:
    config.model.scan_layers = args.scan == "on"
  if args.no_dropout:
    config.model.text.hidden_dropout = config.model.text.attention_dropout = 0.0
  config.mesh = (-1, 1, 1)

  mesh = shd.create_mesh(config.mesh)
  tx, lr_fn = optimizer.build_optimizer(config.optim, total_steps=int(config.total_steps))
  with jax.set_mesh(mesh):
    graphdef, state, shardings = train_state.create(
      config.model, tx, mesh, [tuple(r) for r in config.sharding_rules], 0
    )
    task = tasks.build(config)
    batch = task.global_batch(mesh, next(task.train_iterator(0, jax.process_index(), jax.process_count())))
    step = jit_train_step(graphdef, tx, lr_fn, task, config, shardings)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    # XLA's count sees a loop body once; the step's FLOPs count a scanned stack once per layer.
    counts = hlo_flops.compiled_report(compiled)
    flops = counts["matmul_flops"]
    state, m = compiled(state, batch)  # warm-up
    jax.block_until_ready(m["train/loss"])
    times = []
    for _ in range(args.steps):
      t = time.perf_counter()
      state, m = compiled(state, batch)
      jax.block_until_ready(m["train/loss"])
      times.append(time.perf_counter() - t)

  dev = jax.devices()[0]
  dt = statistics.median(times)
  examples = task.examples_per_step()
  peak = peak_tflops(dev, args.peak_tflops)
  mem = dev.memory_stats() or {}
  peak_mem = mem.get("peak_bytes_in_use")
  res = dict(
    device=f"{n_dev} x {dev.device_kind}",
    model=config.model.name,
    dtype=config.model.dtype,
    attention=config.model.attention_impl,
    remat=bool(config.model.remat_vision),
    remat_policy={t: remat_policy(config.model, t) for t in ("vision", "text")},
    scan_layers=bool(config.model.scan_layers),
    batch={s: int(config.data[s].batch_size) for s in ("image", "region", "video") if config.data[s].enabled},
    region_images=int(config.data.region.num_images),
    step_time_s=dt,
    examples_per_s=examples / dt,
    compile_s=compile_s,
    tflops_per_step_per_device=flops / 1e12,
    xla_cost_analysis_tflops=counts["xla_flops"] / 1e12,
    loop_trip_counts=counts["loop_trip_counts"],
    achieved_tflops_per_device=flops / dt / 1e12,
    mfu=(flops / dt / 1e12 / peak) if peak and flops else None,
    peak_device_memory_gib=(peak_mem / 2**30) if peak_mem else None,
    host_max_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    loss=float(m["train/loss"]),
  )
  for k, v in res.items():
    print(f"{k:<28s} {v:.4g}" if isinstance(v, float) else f"{k:<28s} {v}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(res, f, indent=2)


if __name__ == "__main__":
  main()
