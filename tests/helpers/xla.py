"""XLA flags of the test session (tests/conftest.py) and of the processes the tests start.

Compilation dominates the suite on a small CPU box. Skipping LLVM's expensive optimisation passes on the
CPU backend roughly halves each compile; emitting the fused loops with XLA's older CPU emitter instead of
its MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`) takes another ~27 % off the compile's CPU
time (the tiny pre-training step) and ~18 % off the fast tier (docs/testing.md). The tests check values
and shapes, not speed, and every side of a comparison (in-process, a CLI subprocess, a second host) runs
under the same flags.
"""

FAST_COMPILE_FLAGS = " ".join(
  [
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_use_fusion_emitters=false",
  ]
)


def with_fast_compile(flags: str) -> str:
  """`flags` plus the fast-compile flags it does not set itself (a caller's own choice wins)."""
  extra = [f for f in FAST_COMPILE_FLAGS.split() if f.split("=")[0] not in flags]
  return " ".join([flags, *extra]).strip()


def cpu_flags(devices: int) -> str:
  """XLA_FLAGS for a process with `devices` fake CPU devices, compiled like the test session."""
  return with_fast_compile(f"--xla_force_host_platform_device_count={devices}")
