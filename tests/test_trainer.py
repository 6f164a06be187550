"""Acceptance tests of the pre-training loop (issue "Pre-training at scale").

  * sharding equivalence: one step on data / fsdp / data×tensor meshes equals the 1-device step;
  * preemption: SIGKILL + restart reproduces the uninterrupted run step for step; SIGTERM and SIGINT
    (Ctrl-C) save the current step and exit 0; `checkpoint_every_minutes` saves on wall-clock time;
  * TensorBoard: the events hold the values of metrics.jsonl;
  * multi-host: 2 processes × 2 CPU devices train, save, and a second launch restores and continues;
  * non-finite loss: the run stops with a clear error and the last good checkpoint stays the newest.

The end-to-end tests drive `main.py` in subprocesses. Each compile costs ~30-60 s on a 2-core box, so
every launch of the same program shares one persistent XLA compilation cache (JAX_COMPILATION_CACHE_DIR):
only the first launch of each (config, topology) compiles. That also means the interrupted and the
reference runs execute the very same executable, so their losses must agree bit for bit.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.configs import synthetic_tiny

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "synthetic_tiny.py"

# One program for every single-device launch that shares the compilation cache: anything that changes
# the traced step (total_steps, lr, warmup: the schedule is baked in as constants) must stay fixed
# across them; workdir, checkpoint_every and log_every only steer the Python loop.
STEPS = 16
CKPT_EVERY = 2

# These tests check equivalence and determinism, not speed: skipping LLVM's expensive optimisation
# passes roughly halves each compile on CPU. Every side of every comparison uses the same options.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
FAST_COMPILE_FLAGS = " ".join(f"--{k}={str(v).lower()}" for k, v in FAST_COMPILE.items())


# ------------------------------------------------------------------------------------------- helpers


def _tiny_config(arg=None):
  return synthetic_tiny.get_config(arg)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Launch:
  """`python main.py` on the tiny synthetic config, output to a log file (a pipe could fill and block)."""

  def __init__(self, workdir, cache_dir, *flags, devices=1, steps=STEPS, name="run"):
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.log_path = self.workdir.parent / f"{self.workdir.name}.{name}.log"
    env = dict(os.environ)
    env.update(
      {
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE_FLAGS}",
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        # Cache every executable, however quick to compile or small.
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
      }
    )
    cmd = [
      sys.executable,
      "main.py",
      f"--config={TINY}:steps={steps}",
      f"--workdir={self.workdir}",
      f"--config.checkpoint_every={CKPT_EVERY}",
      "--config.log_every=1",
      *flags,
    ]
    self._log = open(self.log_path, "w")
    self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

  def log_tail(self, n=40) -> str:
    lines = self.log_path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])

  def wait(self, timeout) -> int:
    try:
      rc = self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
      pytest.fail(f"{self.log_path.name}: no exit within {timeout}s\n{self.log_tail()}")
    finally:
      self._log.close()
    return rc

  def wait_ok(self, timeout):
    rc = self.wait(timeout)
    assert rc == 0, f"{self.log_path.name} exited {rc}\n{self.log_tail()}"

  def poll_until(self, predicate, timeout, what):
    """Polls (no fixed sleeps: compile time on a loaded box varies a lot) until predicate() holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if predicate():
        return
      if self.proc.poll() is not None:
        pytest.fail(f"{self.log_path.name} exited ({self.proc.returncode}) before {what}\n{self.log_tail()}")
      time.sleep(0.02)
    self.proc.kill()
    pytest.fail(f"{self.log_path.name}: {what} not reached within {timeout}s\n{self.log_tail()}")


def _entries(workdir):
  """metrics.jsonl lines (a line may be cut short by SIGKILL: dropped)."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      pass
  return out


def _by_step(workdir):
  """step → the last logged entry of that step (a resumed run re-logs the steps after its checkpoint),
  without the wall-clock dependent perf/* scalars."""
  out = {}
  for e in _entries(workdir):
    out[e["step"]] = {k: v for k, v in e.items() if not k.startswith("perf/")}
  return out


def _committed_steps(workdir):
  """Orbax writes `<step>.orbax-checkpoint-tmp-*` and renames it to `<step>` once committed."""
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _input_states(workdir, step):
  """The input-pipeline states saved with a checkpoint step: {"process_<i>": state}."""
  return json.loads((pathlib.Path(workdir) / "checkpoints" / str(step) / "input" / "metadata").read_text())


def _max_logged(workdir):
  steps = [e["step"] for e in _entries(workdir)]
  return max(steps) if steps else 0


@pytest.fixture(scope="module")
def cache_dir(compilation_cache_dir):
  """The session's compilation cache (tests/conftest.py): the launches here share it with each other."""
  return compilation_cache_dir


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, cache_dir):
  """The uninterrupted single-device run, started in the background as soon as the first test asks
  for it (its compile overlaps the in-process sharding test); `.result()` waits for it."""
  workdir = tmp_path_factory.mktemp("reference") / "wd"
  launch = Launch(workdir, cache_dir, name="reference")

  class Handle:
    done = False

    def result(self):
      if not self.done:
        launch.wait_ok(timeout=420)
        self.done = True
      return workdir

  handle = Handle()
  yield handle
  if launch.proc.poll() is None:
    launch.proc.kill()
    launch.proc.wait()


# ------------------------------------------------------------------------------ sharding equivalence


def _one_step(config, mesh, batch_np):
  import jax

  from x2vlm_jax import sharding as shd
  from x2vlm_jax.tasks.pretrain import PretrainTask
  from x2vlm_jax.training import optimizer, train_state
  from x2vlm_jax.training.train_step import make_train_step

  tx, lr_fn = optimizer.build_optimizer(config.optim, new_params=[], total_steps=int(config.total_steps))
  rules = [tuple(r) for r in config.sharding_rules]
  with jax.set_mesh(mesh):
    graphdef, state, shardings = train_state.create(config.model, tx, mesh, rules, config.seed)
    specs = {str(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(shardings["params"])[0]}
    batch = shd.global_batch(mesh, batch_np)
    step = jax.jit(make_train_step(graphdef, tx, lr_fn, PretrainTask(config), config), out_shardings=(shardings, None))
    step = step.lower(state, batch).compile(compiler_options=FAST_COMPILE)
    new_state, metrics = step(state, batch)
    # Block here: back-to-back collectives on fake CPU devices can deadlock a 2-core box.
    new_state, metrics = jax.block_until_ready((new_state, metrics))
    placed = [tuple(s) for s in {x.sharding.spec for x in jax.tree.leaves(new_state["params"])}]
  return jax.device_get(metrics), jax.device_get(new_state["params"]), specs, placed


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sharding_equivalence(reference_run):
  import jax

  from x2vlm_jax import sharding as shd
  from x2vlm_jax.tasks.synthetic import SyntheticIterator

  assert jax.device_count() == 4, "conftest sets 4 fake CPU devices"
  config = _tiny_config("steps=6")
  # No warmup, so the step's update is a full-lr one (a warmup from 0 makes the first update zero and
  # the parameter comparison vacuous).
  config.optim.warmup_steps = 0
  batch = next(SyntheticIterator(config.data, config.model, seed=7))

  ref_metrics, ref_params, _, _ = _one_step(config, shd.create_mesh((1, 1, 1), devices=jax.devices()[:1]), batch)
  assert np.isfinite(ref_metrics["train/loss"])
  ref_leaves = jax.tree_util.tree_flatten_with_path(ref_params)[0]
  # The update is not trivially zero: the params moved (lr 1e-3, Adam's first step ~ lr·sign(g)).
  lr = float(ref_metrics["train/lr"])
  assert lr > 0

  # FSDP alone, and data parallelism with tensor parallelism (a pure data-parallel mesh is one more
  # compile and adds nothing the (2, 1, 2) mesh does not cover: the batch split and the gradient mean).
  for shape, must_shard in (((1, 4, 1), "fsdp"), ((2, 1, 2), "tensor")):
    metrics, params, specs, placed = _one_step(config, shd.create_mesh(shape), batch)
    if must_shard:
      # The mesh axis really splits parameters: in the planned shardings and on the live arrays.
      assert any(must_shard in tuple(s) for s in specs.values()), f"{shape}: no param sharded over {must_shard}"
      assert any(must_shard in s for s in placed), f"{shape}: updated params not sharded over {must_shard}"
    for k, v in ref_metrics.items():
      np.testing.assert_allclose(metrics[k], v, rtol=1e-5, atol=1e-6, err_msg=f"mesh {shape}: {k}")
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    assert [p for p, _ in leaves] == [p for p, _ in ref_leaves]
    worst = max(float(np.max(np.abs(a - b))) for (_, a), (_, b) in zip(leaves, ref_leaves))
    print(f"mesh {shape}: max |param diff| = {worst:.3g} (lr {lr:.0e})")
    for (path, a), (_, b) in zip(leaves, ref_leaves):
      # Adam's first update is lr·g/(|g|+eps): for a gradient entry of size ~eps, the few-ulp noise that
      # a different reduction order puts into g moves the update by a visible fraction of lr (seen:
      # 5e-6 = 0.5% of lr, on 3 of 49152 patch-embedding entries; 2.6e-5 on 2 of them once each stream's
      # passes ran batched). So params get atol = 5% of lr on top of rtol 1e-5 (a wrong or missing
      # gradient moves an entry by ~lr or 2·lr); losses and the other metrics, which have no such
      # amplifier, keep 1e-5/1e-6.
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=0.05 * lr, err_msg=f"mesh {shape}: {jax.tree_util.keystr(path)}")


# --------------------------------------------------------------------------------------- TensorBoard


def _tensorboard_scalars(workdir):
  """{tag: {step: value}} of the event files under workdir, read by TensorBoard's own reader."""
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  acc = event_accumulator.EventAccumulator(str(workdir), size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  return {
    tag: {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
    for tag in acc.Tags()["tensors"]
  }


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_tensorboard_events_hold_the_values_of_metrics_jsonl(reference_run):
  wd = reference_run.result()
  assert list(wd.glob("events.out.tfevents.*")), f"no TensorBoard event file in {wd}"
  events = _tensorboard_scalars(wd)
  rows = _entries(wd)
  assert [e["step"] for e in rows] == list(range(1, STEPS + 1))
  tags = set().union(*(set(e) - {"step"} for e in rows))
  assert {"train/loss", "image/itc", "region/giou", "train/lr"} <= tags
  assert tags <= set(events), sorted(tags - set(events))
  for e in rows:
    for tag, value in e.items():
      if tag != "step":
        # Events hold float32 scalars, metrics.jsonl the float64 of the same number.
        assert events[tag][e["step"]] == np.float32(value), (tag, e["step"], events[tag][e["step"]], value)


# ---------------------------------------------------------------------------------------- preemption


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_then_restart_reproduces_uninterrupted_run(tmp_path, cache_dir, reference_run):
  reference = _by_step(reference_run.result())  # also fills the compilation cache for the launches below
  assert sorted(reference) == list(range(1, STEPS + 1))

  wd = tmp_path / "wd"
  killed = Launch(wd, cache_dir, name="killed")

  def past_a_checkpoint():
    committed = _committed_steps(wd)
    return bool(committed) and _max_logged(wd) > committed[-1]

  killed.poll_until(past_a_checkpoint, timeout=300, what="a logged step past a committed checkpoint")
  killed.proc.send_signal(signal.SIGKILL)
  killed.wait(timeout=60)
  at_kill = _max_logged(wd)
  lines_at_kill = len(_entries(wd))
  resume_from = _committed_steps(wd)[-1]
  assert resume_from < at_kill < STEPS, "the kill must land mid-run, after a checkpoint"

  killed_rows = _entries(wd)
  assert len(killed_rows) == lines_at_kill

  resumed = Launch(wd, cache_dir, name="resumed")
  resumed.wait_ok(timeout=300)
  assert f"at step {resume_from}" in resumed.log_path.read_text(), "the restart did not resume the checkpoint"
  # The restart re-runs the steps after its checkpoint; their rows from the killed launch move to
  # metrics.superseded.jsonl, so metrics.jsonl holds each step once (readers, sweep --table).
  assert [e["step"] for e in _entries(wd)] == list(range(1, STEPS + 1)), [e["step"] for e in _entries(wd)]
  superseded = [json.loads(line) for line in (wd / "metrics.superseded.jsonl").read_text().splitlines()]
  assert superseded == [e for e in killed_rows if e["step"] > resume_from]
  assert [e["step"] for e in superseded] == list(range(resume_from + 1, at_kill + 1))

  got = _by_step(wd)
  assert sorted(got) == sorted(reference)
  for step in sorted(reference):
    # Same executable (shared cache), restored state and input position: bit-identical.
    assert got[step] == reference[step], f"step {step}: resumed {got[step]} != uninterrupted {reference[step]}"


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_sigint_then_sigterm_save_the_current_step_exit_zero_and_the_resumed_steps_match_the_uninterrupted_run(
  tmp_path, cache_dir, reference_run
):
  """Ctrl-C is a stop request like SIGTERM (it used to print a traceback, exit 130 and save nothing).
  One launch stopped by SIGINT, its resume stopped by SIGTERM: each saves the step it reached with its
  input position and exits 0, and every step run equals the uninterrupted run's."""
  reference = _by_step(reference_run.result())  # the compile happens once, there
  wd = tmp_path / "wd"

  def stop(run, sig, after):
    run.poll_until(lambda: _max_logged(wd) >= after, timeout=300, what=f"step {after} in metrics.jsonl")
    seen = _max_logged(wd)
    run.proc.send_signal(sig)
    run.wait_ok(timeout=120)
    last = _max_logged(wd)
    # The handler only sets a flag that the loop reads after the step in flight; by the time the signal
    # lands the run may be one step past what we read, and that step may finish too.
    assert seen <= last <= seen + 2, (sig, seen, last)
    assert last < STEPS, f"the run finished before {sig!r} arrived: nothing was tested"
    assert _committed_steps(wd)[-1] == last, (_committed_steps(wd), last)
    assert (wd / "checkpoints" / str(last)).is_dir()
    assert _input_states(wd, last)["process_0"]["position"] == last
    return last

  interrupted = Launch(wd, cache_dir, name="sigint")
  first = stop(interrupted, signal.SIGINT, after=3)
  log = interrupted.log_path.read_text(errors="replace")
  assert "KeyboardInterrupt" not in log and "SIGINT received" in log, interrupted.log_tail()

  terminated = Launch(wd, cache_dir, name="sigterm")
  second = stop(terminated, signal.SIGTERM, after=first + 2)
  assert f"at step {first}" in terminated.log_path.read_text(), terminated.log_tail()

  got = _by_step(wd)
  assert sorted(got) == list(range(1, second + 1))
  for step in sorted(got):
    assert got[step] == reference[step], f"step {step}: resumed {got[step]} != uninterrupted {reference[step]}"


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_checkpoint_every_minutes_saves_on_wall_clock_time_between_step_checkpoints(tmp_path, cache_dir, reference_run):
  reference_run.result()  # the compile happens once, there
  wd = tmp_path / "wd"
  # A step-based interval the run never reaches and a 6 ms time interval: every step is past it.
  run = Launch(
    wd,
    cache_dir,
    "--config.checkpoint_every=1000",
    "--config.checkpoint_every_minutes=0.0001",
    "--config.keep_checkpoints=100",
    steps=STEPS,
    name="timed",
  )
  run.wait_ok(timeout=300)
  assert _committed_steps(wd) == list(range(1, STEPS + 1)), _committed_steps(wd)


def test_timed_checkpoints_follow_the_clock(monkeypatch):
  from x2vlm_jax.training import preemption

  now = [100.0]
  monkeypatch.setattr(preemption.time, "monotonic", lambda: now[0])
  timed = preemption.TimedCheckpoints(2.0)  # 120 s
  now[0] = 219.0
  assert not timed.due(logged=True)
  now[0] = 220.0
  assert timed.due(logged=False)  # one process: every step checks
  timed.saved()
  now[0] = 339.0
  assert not timed.due(logged=True)
  assert not preemption.TimedCheckpoints(0).due(logged=True)


# ------------------------------------------------------------------------------------ run records


def _history(workdir):
  return [json.loads(line) for line in (pathlib.Path(workdir) / "config_history.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_resuming_with_a_changed_config_warns_refuses_what_breaks_exact_resume_and_keeps_the_history(
  tmp_path, cache_dir, reference_run
):
  import shutil

  wd = tmp_path / "wd"
  shutil.copytree(reference_run.result(), wd)
  assert [(h["start_step"], h["changed"]) for h in _history(wd)] == [(0, {})]
  lr = json.loads((wd / "config.json").read_text())["optim"]["lr"]

  refused = Launch(wd, cache_dir, "--config.optim.lr=0.5", "--config.data.image.batch_size=4", name="refused")
  assert refused.wait(timeout=300) != 0
  log = refused.log_path.read_text(errors="replace")
  assert f"optim.lr: {lr} -> 0.5" in log and "data.image.batch_size: 8 -> 4" in log, refused.log_tail()
  assert "--force" in log and log.count("Traceback") == 0, refused.log_tail()
  assert json.loads((wd / "config.json").read_text())["optim"]["lr"] == lr
  assert len(_history(wd)) == 1

  harmless = Launch(wd, cache_dir, "--config.log_every=2", "--config.keep_checkpoints=5", name="harmless")
  harmless.wait_ok(timeout=300)
  assert "log_every: 1 -> 2" in harmless.log_path.read_text(errors="replace"), harmless.log_tail()
  last = _history(wd)[-1]
  assert (last["start_step"], last["forced"]) == (STEPS, False)
  assert last["changed"] == {"log_every": [1, 2], "keep_checkpoints": [3, 5]}

  forced = Launch(wd, cache_dir, "--config.optim.lr=0.5", "--force", name="forced")
  forced.wait_ok(timeout=300)
  last = _history(wd)[-1]
  assert last["forced"] and last["changed"]["optim.lr"] == [lr, 0.5], last["changed"]
  assert json.loads((wd / "config.json").read_text())["optim"]["lr"] == 0.5
  assert len(_history(wd)) == 3 and _history(wd)[0]["config"]["optim"]["lr"] == lr


# ---------------------------------------------------------------------------------------- non-finite


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cache_dir):
  wd = tmp_path / "wd"
  # lr 1e30: step 1 is finite (warmup starts at lr 0), the first real update overflows the params.
  # Image stream only: this is a program of its own (the lr is compiled in), so keep its compile small.
  run = Launch(
    wd,
    cache_dir,
    "--config.optim.lr=1e30",
    "--config.checkpoint_every=1",
    "--config.data.region.enabled=False",
    steps=6,
    name="nonfinite",
  )
  rc = run.wait(timeout=420)
  log = run.log_path.read_text(errors="replace")
  assert rc != 0, f"a non-finite loss must fail the run\n{run.log_tail()}"
  assert "NonFiniteLossError" in log and "non-finite values at step" in log, run.log_tail()
  good = _max_logged(wd)  # the failing step is not logged
  assert good >= 1, "step 1 (lr 0) should have been finite"
  assert f"non-finite values at step {good + 1}" in log, run.log_tail()
  assert f"the last good one: step {good})" in log, run.log_tail()
  # Nothing was written for the failing step: the newest checkpoint is the last finite step.
  assert _committed_steps(wd)[-1] == good, (_committed_steps(wd), good)
  assert not (wd / "checkpoints" / str(good + 1)).exists()


# ---------------------------------------------------------------------------------------- multi-host


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_processes_stop_resume_preempt_one_and_resume_exactly(tmp_path, cache_dir):
  """Two processes of 2 fake devices each, one launch sequence for every multi-host case (each launch
  costs a compile in process 1: on CPU its cache key differs from process 0's and JAX writes cache
  entries from process 0 only), three launches:
    * the uninterrupted reference runs every step and finishes;
    * a run from scratch, SIGTERM to process 1 only: JAX's preemption notifier (no Python handler in
      multi-process runs) tells the coordination service, every process reaches the same sync step,
      both save it with their input positions and exit 0 (a per-process Python handler, the old
      behaviour, sends process 1 alone into the save collective: both abort or hang);
    * the relaunch resumes that step on both processes and stops as planned (--max_steps) two steps
      later, saving both input positions;
  and every step of the interrupted run equals the uninterrupted run bit for bit."""
  steps = 8

  def launch_pair(wd, name, *flags, on_start=None):
    port = _free_port()
    runs = [
      Launch(
        wd,
        cache_dir,
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        *flags,
        devices=2,
        steps=steps,
        name=f"{name}.p{i}",
      )
      for i in range(2)
    ]
    if on_start:
      on_start(runs)
    for r in runs:
      r.wait_ok(timeout=480)
    return runs

  reference = tmp_path / "reference"
  launch_pair(reference, "reference")
  ref = _by_step(reference)
  assert sorted(ref) == list(range(1, steps + 1))
  assert _committed_steps(reference)[-1] == steps

  wd = tmp_path / "wd"

  def terminate_process_1(runs):
    # After the first logged step: the sync step (the furthest host's step + 1) is then mid-run.
    runs[0].poll_until(lambda: _max_logged(wd) >= 1, timeout=420, what="step 1 in metrics.jsonl")
    runs[1].proc.send_signal(signal.SIGTERM)

  stopped = launch_pair(wd, "sigterm", on_start=terminate_process_1)
  last = _max_logged(wd)
  # Room for the planned stop below (two steps after the resume, before the last step).
  assert last <= steps - 3, f"the preemption took effect at step {last}: too late to test the resume"
  assert _committed_steps(wd)[-1] == last, (_committed_steps(wd), last)
  # Both processes saved that step: the checkpoint carries both input positions, equal to the step.
  assert {k: v["position"] for k, v in _input_states(wd, last).items()} == {"process_0": last, "process_1": last}
  for r in stopped:
    assert f"preemption: saved step {last}, stopping" in r.log_path.read_text(), r.log_tail()

  planned = last + 2
  resumed = launch_pair(wd, "resumed", "--max_steps=2")  # steps of this launch
  for r in resumed:
    assert f"at step {last}" in r.log_path.read_text(), f"{r.log_path.name} did not resume\n{r.log_tail()}"
  assert _committed_steps(wd)[-1] == planned
  assert {k: v["position"] for k, v in _input_states(wd, planned).items()} == {
    "process_0": planned,
    "process_1": planned,
  }
  # Process 0 alone writes metrics, and the relaunch continues after the step it saved: no step twice.
  assert [e["step"] for e in _entries(wd)] == list(range(1, planned + 1))
  got = _by_step(wd)
  assert all(np.isfinite(e["train/loss"]) for e in _entries(wd))
  for step in sorted(got):
    assert got[step] == ref[step], f"step {step}: resumed {got[step]} != uninterrupted {ref[step]}"
