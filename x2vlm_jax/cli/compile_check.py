"""Compile-only check (like MaxText's train_compile.py): lower and compile the REAL train step and the
evaluation programs of a config for a target device set, without running them or touching data, and say
whether they fit: per-device memory (arguments / outputs / temporaries from XLA's memory analysis) against
the chip's HBM, FLOPs per step (cost analysis), and the shardings of the largest tensors.

  # Cloud TPU slices, compiled by libtpu on this machine (needs `pip install libtpu==0.0.42.*`, the
  # version jax[tpu]==0.10.2 pins; no TPU attached):
  python tools/compile_check.py --config=configs/pretrain/x2vlm_base_4m.py --topology=v5p:2x2x2 \
      --config.mesh='(1,-1,1)'
  # NVIDIA GPUs, compiled by XLA's CUDA compiler without a GPU (needs `pip install jax-cuda12-plugin==0.10.2
  # jax-cuda12-pjrt==0.10.2`, no CUDA libraries; x2vlm_jax/cli/gpu_targets.py): one host of 8 H100s
  python tools/compile_check.py --config=configs/pretrain/x2vlm_base_4m.py --topology=h100:8
  # N fake local (CPU) devices, memory compared with a chip's HBM (no plugin, no libtpu):
  python tools/compile_check.py --config=configs/pretrain/x2vlm_large_4m.py --topology=cpu:8 --chip=h100

Topologies: `cpu:N`; `h100:N` (N GPUs on one host) or `h100:HxN` (H hosts); or libtpu names `v4:2x2x2`,
`v5p:2x2x2` (8 chips = v5p-16), `v5e:4x4` (v5litepod-16), `v6e:4x4`, ... (chips per dimension; v4/v5p
chips are megacore devices). The train
step is `training/train_step.py` over `train_state.abstract` (the sharded state, nothing allocated) and
the task's global batch contract (`Task.batch_spec`); the evaluation programs are each configured
evaluator's (`Evaluator.compile_targets`), or those of the task's own evaluation (`Task.EVALUATION`,
e.g. retrieval's encoders, ITC top-k and ITM rerank at --eval_images / --eval_texts) when the config
has none.
Fine-tuning configs size their schedule by epochs from the dataset; here the schedule length is a
placeholder (it changes constants, not shapes, memory or FLOPs).
"""

import json
import os
import sys
import time
from typing import List

# None of these imports jax: run() sets the device environment of --topology before jax loads.
from absl import app, flags
from ml_collections import config_flags

from x2vlm_jax import configs  # the shipped configs by name
from x2vlm_jax.cli import gpu_targets

# Documented HBM per chip (vendor figures: Cloud TPU system-architecture pages, NVIDIA data sheets).
# The usable part is smaller: the runtime reserves some, and JAX on GPU preallocates 75% by default
# (XLA_PYTHON_CLIENT_MEM_FRACTION).
GIB, GB = 2**30, 10**9
HBM = {
  "v4": (32 * GIB, "32 GiB HBM2"),
  "v5e": (16 * GIB, "16 GiB HBM2"),
  "v5p": (95 * GB, "95 GB HBM2e"),
  "v6e": (32 * GB, "32 GB HBM"),
  "h100": (80 * GB, "80 GB HBM3 (H100 SXM)"),
  "h200": (141 * GB, "141 GB HBM3e"),
}
DEVICE_KINDS = {"TPU v4": "v4", "TPU v5 lite": "v5e", "TPU v5": "v5p", "TPU v6 lite": "v6e"}
MEGACORE = ("v4", "v5p")


def _scan_flag(argv, name):
  for i, a in enumerate(argv):
    if a.startswith(f"--{name}="):
      return a.split("=", 1)[1]
    if a == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def prepare_environment(topology: str) -> None:
  """Before jax loads (the configs import it while flags are parsed): fake CPU devices, or libtpu told
  that it is not on a TPU VM (no metadata-server lookups)."""
  if topology.startswith("cpu:"):
    n = int(topology.split(":")[1])
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
    os.environ["JAX_PLATFORMS"] = "cpu"
  elif gpu_targets.parse(topology):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host backend; the GPUs are abstract
    # The plugin checks the CUDA libraries' versions when it loads; a compile-only run needs none of them.
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    # Without a device XLA cannot autotune Triton GEMM tilings, and its default tiling fails on small dots
    # ("Couldn't find output tile sizes"): matmuls go to cuBLAS, as they do where autotuning prefers it.
    if "xla_gpu_enable_triton_gemm" not in os.environ.get("XLA_FLAGS", ""):
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_enable_triton_gemm=false").strip()
  else:
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5p-16")  # any valid type; the topology decides
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host backend; TPU devices are abstract


_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=False)
_TOPOLOGY = flags.DEFINE_string("topology", "cpu:1", "cpu:N, h100:N, or a libtpu topology (v5p:2x2x2, v5e:4x4, ...)")
_CHIP = flags.DEFINE_enum("chip", None, list(HBM), "HBM to compare with (default: the topology's chip)")
_EVAL = flags.DEFINE_bool("eval", True, "also compile the evaluation programs")
_EVAL_IMAGES = flags.DEFINE_integer("eval_images", 5000, "evaluation set size (COCO Karpathy test: 5000)")
_EVAL_TEXTS = flags.DEFINE_integer("eval_texts", 25010, "evaluation texts (COCO Karpathy test: 25010)")
_TOP = flags.DEFINE_integer("top", 8, "largest tensors listed")
_JSON = flags.DEFINE_string("json", None, "also write the report to this JSON file")


# ------------------------------------------------------------------------------------------ targets
def target_devices(topology: str):
  """→ (devices, chip name or None)."""
  import jax

  if topology.startswith("cpu:"):
    n = int(topology.split(":")[1])
    if jax.device_count() < n:
      raise ValueError(f"--topology {topology}: only {jax.device_count()} CPU devices (XLA_FLAGS set too late?)")
    return jax.devices()[:n], None
  gpu = gpu_targets.parse(topology)
  if gpu:
    return gpu_targets.devices(topology), gpu[0]
  from jax.experimental import topologies

  version = topology.split(":")[0]
  kwargs = {"chip_config_name": "megacore"} if version in MEGACORE else {}
  try:
    topo = topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs)
  except Exception as e:  # noqa: BLE001 — libtpu missing or an unknown name: say which
    raise ValueError(
      f"--topology {topology}: libtpu could not describe it ({type(e).__name__}: {e}). "
      "TPU topologies need libtpu (pip install 'libtpu==0.0.42.*' for jax 0.10.2); "
      "use --topology=cpu:N otherwise"
    ) from None
  kind = topo.devices[0].device_kind
  return list(topo.devices), DEVICE_KINDS.get(kind, kind)


def _sds_tree(spec_tree, sharding_fn):
  import jax

  is_spec = lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple)  # noqa: E731
  return jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s[0], s[1], sharding=sharding_fn(len(s[0]))), spec_tree, is_leaf=is_spec
  )


def train_target(config, mesh):
  """(jitted step, abstract args, the abstract state) of the real train step."""
  from flax import nnx

  from x2vlm_jax import params_io, tasks
  from x2vlm_jax import sharding as shd
  from x2vlm_jax.training import optimizer, train_state
  from x2vlm_jax.training.train_step import jit_train_step

  task = tasks.build(config)
  steps = int(config.total_steps) if int(config.total_steps) > 0 else 1000  # placeholder for epoch-sized runs
  tx, lr_fn = optimizer.build_optimizer(config.optim, total_steps=steps)
  rules = [tuple(r) for r in config.sharding_rules]
  abstract, shardings = train_state.abstract(config.model, tx, mesh, rules, config.seed)
  state = train_state.abstract_like(abstract, shardings)
  batch = _sds_tree(task.batch_spec(), lambda ndim: shd.batch_sharding(mesh, ndim))
  graphdef = nnx.graphdef(params_io.abstract_model(config.model))
  step = jit_train_step(graphdef, tx, lr_fn, task, config, shardings)
  return graphdef, step, (state, batch), state


def eval_targets(config, mesh, graphdef, params, num_images, num_texts):
  from x2vlm_jax import tasks

  # The config's evaluators, or without any its task's own evaluation with the evaluator's defaults.
  evaluators = tasks.build_evaluators(config, mesh) or tasks.default_evaluators(config, mesh)
  out = []
  for name, evaluator in evaluators:
    try:
      targets = evaluator.compile_targets(graphdef, params, num_images=num_images, num_texts=num_texts)
    except ValueError as e:  # e.g. a vocabulary or answer list the programs' shapes depend on is missing
      print(f"evaluator {name} ({type(evaluator).__name__}): not compiled: {e}", flush=True)
      continue
    if not targets:
      print(
        f"evaluator {name} ({type(evaluator).__name__}): its programs are not described for a compile-only "
        "check (Evaluator.compile_targets); they compile at its first evaluation",
        flush=True,
      )
    out += targets
  return out


# ------------------------------------------------------------------------------------------ analysis
def compile_one(name, fn, args, mesh):
  import jax

  from x2vlm_jax import hlo_flops

  t0 = time.time()
  with jax.set_mesh(mesh):
    lowered = fn.lower(*args)
    t1 = time.time()
    compiled = lowered.compile()
  t2 = time.time()
  mem = compiled.memory_analysis()
  flops = hlo_flops.compiled_report(compiled)
  m = (
    {
      k: int(getattr(mem, f"{k}_size_in_bytes", 0) or 0)
      for k in ("argument", "output", "alias", "temp", "generated_code")
    }
    if mem is not None
    else {}
  )
  # Donated arguments alias their outputs: the live peak is arguments + outputs − aliased + temporaries.
  peak = m.get("argument", 0) + m.get("output", 0) - m.get("alias", 0) + m.get("temp", 0) + m.get("generated_code", 0)
  import resource

  return {
    "name": name,
    # The compiler runs in this process: its peak RSS so far (Linux reports KiB).
    "host_max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    "lower_s": round(t1 - t0, 1),
    "compile_s": round(t2 - t1, 1),
    "memory": m,
    "peak_bytes": peak,
    # XLA's own count: a loop body (a scanned layer stack) counted once, not once per layer.
    "flops_per_device": flops["xla_flops"],
    # Matmul + convolution FLOPs with every loop counted per trip: the step's arithmetic (x2vlm_jax/hlo_flops.py).
    "matmul_flops_per_device": flops["matmul_flops"],
    "loop_trip_counts": flops["loop_trip_counts"],
    "loops_without_trip_count": flops["loops_without_trip_count"],
  }


def largest_tensors(tree, top: int):
  """[(path, global shape, per-device shape, dtype, PartitionSpec, bytes per device)] of the `top`
  leaves with the most bytes per device."""
  import jax
  import numpy as np

  rows = []
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    shard = tuple(x.sharding.shard_shape(x.shape))
    rows.append(
      (
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path),
        tuple(x.shape),
        shard,
        str(np.dtype(x.dtype)),
        str(x.sharding.spec),
        int(np.prod(shard)) * np.dtype(x.dtype).itemsize,
      )
    )
  return sorted(rows, key=lambda r: -r[5])[:top]


def tensor_lines(title: str, tree, top: int) -> List[str]:
  """A table of `largest_tensors`: the global shape (what the config describes: a batch's global rows)
  and the shape and MiB one device holds under the sharding, each labelled as such."""
  head = f"    {'path':<50s} {'global shape':<20s} {'per-device shape':<20s} {'dtype':<8s} {'sharding':<28s} MiB/device"
  lines = [f"  {title}:", head]
  for path, shape, shard, dtype, spec, b in largest_tensors(tree, top):
    lines.append(f"    {path:<50s} {str(shape):<20s} {str(shard):<20s} {dtype:<8s} {spec:<28s} {b / 2**20:10.2f}")
  return lines


def _gib(b):
  return f"{b / GIB:.2f} GiB"


def report_lines(result, hbm, devices):
  m = result["memory"]
  lines = [
    f"{result['name']}: lower {result['lower_s']} s, compile {result['compile_s']} s",
    f"  per device: arguments {_gib(m.get('argument', 0))}, outputs {_gib(m.get('output', 0))} "
    f"(aliased {_gib(m.get('alias', 0))}), temporaries {_gib(m.get('temp', 0))}, "
    f"code {_gib(m.get('generated_code', 0))} -> peak {_gib(result['peak_bytes'])}",
  ]
  if hbm:
    frac = result["peak_bytes"] / hbm[0]
    lines.append(f"  {'FITS' if frac <= 1 else 'DOES NOT FIT'} in {hbm[1]} per chip ({100 * frac:.0f}% used)")
  f, mm = result["flops_per_device"], result["matmul_flops_per_device"]
  lines.append(
    f"  matmul FLOPs per device {mm:.3e} (loops per trip), per call (x{devices} devices) {mm * devices:.3e}; "
    + (f"XLA cost analysis {f:.3e} per device (loop bodies once)" if f else "no XLA cost analysis from this backend")
  )
  if result["loops_without_trip_count"]:
    lines.append(f"  ({result['loops_without_trip_count']} loop(s) without a known trip count: counted once)")
  return lines


def main(argv):
  del argv
  import jax

  from x2vlm_jax import sharding as shd
  from x2vlm_jax.models.presets import remat_policy

  config = _CONFIG.value
  devices, chip = target_devices(_TOPOLOGY.value)
  chip = _CHIP.value or chip
  hbm = HBM.get(chip) if chip else None
  mesh = shd.create_mesh(config.mesh, devices=devices)
  print(
    f"target {_TOPOLOGY.value}: {len(devices)} x {devices[0].device_kind}"
    f"{f' (HBM {hbm[1]})' if hbm else ''}; mesh {dict(mesh.shape)}; jax {jax.__version__}; "
    f"scan_layers {bool(config.model.get('scan_layers', False))}, remat "
    f"{ {t: remat_policy(config.model, t) for t in ('vision', 'text')} }",
    flush=True,
  )

  graphdef, step, args, state = train_target(config, mesh)
  results = [compile_one("train_step", step, args, mesh)]
  print("\n".join(report_lines(results[0], hbm, len(devices))), flush=True)
  print("\n".join(tensor_lines("largest state tensors", state, _TOP.value)))
  print("\n".join(tensor_lines("batch (the global batch, split over the data axes)", args[1], 4)))
  if _EVAL.value:
    for name, fn, eargs in eval_targets(config, mesh, graphdef, state["params"], _EVAL_IMAGES.value, _EVAL_TEXTS.value):
      results.append(compile_one(name, fn, eargs, mesh))
      print("\n".join(report_lines(results[-1], hbm, len(devices))), flush=True)
  fits = all(r["peak_bytes"] <= hbm[0] for r in results) if hbm else None
  if _JSON.value:
    from etils import epath

    epath.Path(_JSON.value).write_text(
      json.dumps(
        {
          "topology": _TOPOLOGY.value,
          "devices": len(devices),
          "device_kind": devices[0].device_kind,
          "chip": chip,
          "mesh": dict(mesh.shape),
          "scan_layers": bool(config.model.get("scan_layers", False)),
          "remat": {t: remat_policy(config.model, t) for t in ("vision", "text")},
          "hbm_bytes": hbm[0] if hbm else None,
          "fits": fits,
          "results": results,
        },
        indent=2,
      )
    )
  if hbm:
    print(f"verdict: {'fits' if fits else 'DOES NOT FIT'} in {hbm[1]} per chip")
  return 0 if fits is not False else 3


def run():
  """The `x2vlm-compile-check` console script (x2vlm_jax/cli/__init__.py: launch): the device
  environment of --topology first (the configs import jax while absl parses the flags)."""
  prepare_environment(_scan_flag(sys.argv, "topology") or "cpu:1")
  flags.mark_flags_as_required(["config"])
  sys.argv = [sys.argv[0], *configs.resolve_argv(sys.argv[1:])]
  app.run(main)
