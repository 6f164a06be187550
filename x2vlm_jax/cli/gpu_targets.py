"""NVIDIA GPUs described for XLA's deviceless compile: jax-cuda12-plugin builds a CUDA topology from this
description instead of asking a driver, so `tools/compile_check.py --topology=h100:8` compiles the GPU
program (fusions, buffer assignment, collectives) on a machine without a GPU or CUDA libraries.

The fields are XLA's `stream_executor.GpuTargetConfigProto` (text format). Figures of an H100 SXM 80GB
(compute capability 9.0): NVIDIA's H100 data sheet (132 SMs, 50 MB L2, 3.35 TB/s) and the per-capability
limits of the CUDA C++ Programming Guide ("Technical Specifications per Compute Capability": 1,024
threads per block, 2,048 per SM, 64 K registers, 228 KB shared memory per SM, 227 KB per block opt-in);
the memory size is what the device reports (79.1 GiB of its 80 GB), the same values as XLA's own
`xla/tools/hlo_opt/gpu_specs/h100_sxm.txtpb`. Autotuning needs a device and is skipped in such a
compile: kernels are the compiler's defaults, which changes speed, not the buffers' sizes much.
"""

# name in --topology → (device kind the plugin reports, the description)
_H100_SXM_80GB = """
gpu_device_info {
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 84929347584
  shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 minor: 0 }
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 8 }
runtime_version { major: 12 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""

TARGETS = {"h100": ("NVIDIA H100 80GB HBM3", _H100_SXM_80GB)}


def parse(topology: str):
  """`h100:8` (one host, 8 GPUs) or `h100:2x8` (2 hosts × 8) → (chip name, plugin topology "1xHxN",
  device count), or None for a name that is not a GPU target."""
  name, _, shape = topology.partition(":")
  if name not in TARGETS:
    return None
  parts = shape.split("x")
  if not shape or len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"--topology {topology}: GPU targets are {name}:N (GPUs on one host) or {name}:HxN (hosts × GPUs)")
  hosts, per_host = (1, int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
  return name, f"1x{hosts}x{per_host}", hosts * per_host


def devices(topology: str):
  """The abstract GPU devices of a parsed `h100:...` topology (needs jax-cuda12-plugin; no GPU)."""
  import jax
  from jax.experimental import topologies

  name, shape, count = parse(topology)
  try:
    topo = topologies.get_topology_desc(platform="cuda", topology=shape, target_config=TARGETS[name][1])
  except Exception as e:  # noqa: BLE001 — the plugin missing or refusing: say what to install
    raise ValueError(
      f"--topology {topology}: the CUDA plugin could not describe it ({type(e).__name__}: {e}). GPU targets "
      f"need `pip install jax-cuda12-plugin=={jax.__version__} jax-cuda12-pjrt=={jax.__version__}` "
      "(no GPU and no CUDA libraries are needed to compile); use --topology=cpu:N otherwise"
    ) from None
  if len(topo.devices) != count:
    raise ValueError(f"--topology {topology}: the plugin made {len(topo.devices)} devices, not {count}")
  return list(topo.devices)
