#!/usr/bin/env python
"""Scan on vs off, side by side: every row of docs/performance.md's "Scan over layers" section.

Each row is one fresh process (so its peak RSS is that compile's): `tools/compile_check.py` (compile
wall time, compiler peak RSS, per-device peak memory, FLOPs per step: x2vlm_jax/hlo_flops.py's count with
loops per trip, and XLA's, which counts a loop body once) or `tools/benchmark_train.py`
(CPU step time), with `--config.model.scan_layers` / remat policy set per row.

  python tools/scan_report.py --groups tiny,base_small,bench --output /tmp/scan_rows.md
  # the long rows (a machine with more cores; libtpu for the TPU ones, see docs/performance.md):
  python tools/scan_report.py --groups base_official_cpu,tpu_base,tpu_large --output rows.md

Groups:
  tiny                synthetic_tiny on cpu:4 (its 4 region images), data parallel and FSDP, scan off / on
  base_small          base 4M on cpu:8 at 8 + 8 texts (3 region images) per device, DP and FSDP, scan off / on
  fsdp_unconstrained  base_small's FSDP rows with model.constrain_activations=False (GSPMD decides)
  base_official_cpu   base 4M on cpu:8 at the official batch (128 + 128 texts per device), DP and FSDP
  tpu_base            (a) base 4M, official batch, v5p:2x2x2 (8 chips), FSDP, through libtpu
  tpu_large           (b) large 4M, official batch, v5p:4x2x2 (16 chips), FSDP, through libtpu
  policies_cpu        base_small's DP row, scan on, remat full and dots_with_no_batch_dims_saveable
  policies            base 4M, official batch, v5p:2x2x2 FSDP, scan on, each remat policy (libtpu)
  bench               CPU step time of base 4M at a small batch, scan off / on (benchmark_train.py)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from x2vlm_jax import fs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "configs/pretrain/x2vlm_base_4m.py"
LARGE = "configs/pretrain/x2vlm_large_4m.py"
TINY = "tests/configs/synthetic_tiny.py"
DP, FSDP = "(-1,1,1)", "(1,-1,1)"
# 8 + 8 texts and 3 region images per device on 8 devices (ITM groups within a device's rows).
SMALL_BATCH = [
  "--config.data.image.batch_size=64",
  "--config.data.region.batch_size=64",
  "--config.data.region.num_images=24",
  "--config.itm_group_size.image=8",
  "--config.itm_group_size.region=8",
]
# The CPU backend at LLVM level 0: same memory and FLOP figures, much shorter compiles (docs/performance.md).
CPU_ENV = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}


def _compile_rows(label, config, topology, mesh, extra=(), chip=None, policies=("none",), scans=(False, True)):
  rows = []
  for policy in policies:
    for scan in scans:
      args = [
        f"--config={config}",
        f"--topology={topology}",
        f"--config.mesh={mesh}",
        f"--config.model.scan_layers={scan}",
        "--noeval",
        *extra,
      ]
      if policy != "none":
        args += [f"--config.model.remat.vision={policy}", f"--config.model.remat.text={policy}"]
      if chip:
        args.append(f"--chip={chip}")
      name = f"{label}, {'FSDP' if mesh == FSDP else 'DP'}, scan {'on' if scan else 'off'}, remat {policy}"
      env = CPU_ENV if topology.startswith("cpu:") else {}
      rows.append(dict(name=name, kind="compile", args=args, env=env))
  return rows


def groups():
  g = {}
  g["tiny"] = _compile_rows("tiny", TINY, "cpu:4", DP) + _compile_rows("tiny", TINY, "cpu:4", FSDP)
  g["base_small"] = _compile_rows("base 4M 8+8/dev", BASE, "cpu:8", DP, SMALL_BATCH, "h100") + _compile_rows(
    "base 4M 8+8/dev", BASE, "cpu:8", FSDP, SMALL_BATCH, "h100"
  )
  g["base_official_cpu"] = _compile_rows("base 4M official", BASE, "cpu:8", DP, chip="h100") + _compile_rows(
    "base 4M official", BASE, "cpu:8", FSDP, chip="h100"
  )
  # FSDP with the activations left to GSPMD (before constrain_activations): isolates that fix.
  g["fsdp_unconstrained"] = _compile_rows(
    "base 4M 8+8/dev, activations unconstrained",
    BASE,
    "cpu:8",
    FSDP,
    SMALL_BATCH + ["--config.model.constrain_activations=False"],
    "h100",
  )
  g["tpu_base"] = _compile_rows("(a) base 4M official", BASE, "v5p:2x2x2", FSDP)
  g["tpu_large"] = _compile_rows("(b) large 4M official", LARGE, "v5p:4x2x2", FSDP)
  g["policies"] = _compile_rows(
    "base 4M official",
    BASE,
    "v5p:2x2x2",
    FSDP,
    policies=("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"),
    scans=(True,),
  )
  g["policies_cpu"] = _compile_rows(
    "base 4M 8+8/dev",
    BASE,
    "cpu:8",
    DP,
    SMALL_BATCH,
    "h100",
    policies=("full", "dots_with_no_batch_dims_saveable"),
    scans=(True,),
  )
  g["bench"] = [
    dict(
      name=f"base 4M step time, 4+4 texts, 2 region images, float32, scan {s}",
      kind="bench",
      args=[
        f"--config={BASE}",
        "--steps=3",
        "--per_device=image=4,region=4,images=2",
        "--dtype=float32",
        f"--scan={s}",
      ],
      env={},
    )
    for s in ("off", "on")
  ]
  return g


def run_row(row, timeout):
  tool = "tools/compile_check.py" if row["kind"] == "compile" else "tools/benchmark_train.py"
  fd, out_json = tempfile.mkstemp(suffix=".json")
  os.close(fd)
  cmd = [sys.executable, tool, *row["args"], f"--json={out_json}"]
  env = {**os.environ, **row["env"]}
  t0 = time.time()
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    out, _ = proc.communicate(timeout=timeout)
    status = "ok" if proc.returncode in (0, 3) else f"exit {proc.returncode}"
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
    status = f"stopped after {timeout} s"
  wall = time.time() - t0
  result = {}
  if os.path.getsize(out_json):
    with open(out_json) as f:
      result = json.load(f)
  os.unlink(out_json)
  prefix = "".join(f"{k}={v} " for k, v in row["env"].items())
  return dict(
    row,
    status=status,
    wall_s=round(wall, 1),
    result=result,
    command=prefix + "python " + " ".join([tool] + row["args"]),
    tail=out[-2000:],
  )


def markdown(records):
  lines = [
    "| row | status | process wall | compile | compiler peak RSS | peak per device | temporaries "
    "| matmul TFLOP per device (loops per trip) | XLA cost analysis TFLOP (loop bodies once) |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in records:
    res = r["result"]
    if r["kind"] == "compile" and res.get("results"):
      t = res["results"][0]
      lines.append(
        f"| {r['name']} | {r['status']} | {r['wall_s']:.0f} s | lower {t['lower_s']} s + compile {t['compile_s']} s "
        f"| {t.get('host_max_rss_gib', float('nan')):.2f} GiB | {t['peak_bytes'] / 2**30:.2f} GiB "
        f"| {t['memory'].get('temp', 0) / 2**30:.2f} GiB | {t.get('matmul_flops_per_device', float('nan')) / 1e12:.3f} "
        f"| {t['flops_per_device'] / 1e12:.3f} |"
      )
    elif r["kind"] == "bench" and res:
      lines.append(
        f"| {r['name']} | {r['status']} | {r['wall_s']:.0f} s | compile {res['compile_s']:.1f} s "
        f"| {res['host_max_rss_gib']:.2f} GiB (process) | step **{res['step_time_s']:.3f} s** (median of 3) | "
        f"| {res['tflops_per_step_per_device']:.3f} | {res.get('xla_cost_analysis_tflops', float('nan')):.3f} |"
      )
    else:
      lines.append(f"| {r['name']} | {r['status']} | {r['wall_s']:.0f} s | not measured | | | | | |")
  lines.append("")
  lines.append("Commands (from the repository root):")
  lines.append("```")
  lines += [r["command"] for r in records]
  lines.append("```")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--groups", default="tiny,base_small,bench")
  p.add_argument("--timeout", type=int, default=3600, help="seconds per row")
  p.add_argument("--output", default=None, help="markdown table to this file (also printed)")
  p.add_argument("--jsonl", default=None, help="every row's full record")
  p.add_argument("--only", default="", help="substrings separated by |: keep rows whose name has one")
  p.add_argument("--print", action="store_true", help="only print the commands")
  args = p.parse_args()
  table = groups()
  rows = [r for g in args.groups.split(",") for r in table[g]]
  if args.only:
    rows = [r for r in rows if any(o in r["name"] for o in args.only.split("|"))]
  if args.print:
    for r in rows:
      print(r["name"], "::", " ".join(r["args"]))
    return
  records = []
  # --jsonl accumulates over runs (rows of earlier runs are kept); rewritten whole per row, since an
  # object in gs:// cannot be appended to
  earlier = fs.path(args.jsonl).read_text() if args.jsonl and fs.path(args.jsonl).exists() else ""
  for r in rows:
    print(f"[{time.strftime('%H:%M:%S')}] {r['name']} ...", flush=True)
    rec = run_row(r, args.timeout)
    records.append(rec)
    print(f"  {rec['status']}, {rec['wall_s']} s", flush=True)
    if rec["status"] != "ok":
      print(rec["tail"], flush=True)
    if args.jsonl:
      done = "".join(json.dumps({k: v for k, v in done_row.items() if k != "tail"}) + "\n" for done_row in records)
      fs.path(args.jsonl).write_text(earlier + done)
    md = markdown(records)
    if args.output:
      fs.path(args.output).write_text(md + "\n")  # may be gs://
  print(markdown(records))


if __name__ == "__main__":
  main()
