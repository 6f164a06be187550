"""tools/compile_check.py: the real train step and the evaluation programs compile for a device set
without running; per-device memory follows the mesh (data parallel holds the whole state on every
device, FSDP a quarter), the donated state aliases the outputs, FLOPs do not depend on the mesh.
TPU topologies are compiled only where libtpu is installed, GPU targets where jax-cuda12-plugin is."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.configs import synthetic_retrieval
from tests.helpers import xla
from tests.helpers.tiers import tiered
from x2vlm_jax import params_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# -O0 for the XLA CPU backend: a quarter of the compile time; the buffers XLA assigns are the same kind.
ENV = dict(os.environ, XLA_FLAGS=xla.FAST_COMPILE_FLAGS)


def _check(tmp_path, name, *flags):
  out = tmp_path / f"{name}.json"
  proc = subprocess.run(
    [
      sys.executable,
      "tools/compile_check.py",
      "--config=tests/configs/synthetic_retrieval.py",
      f"--json={out}",
      *flags,
    ],
    cwd=REPO,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return json.loads(out.read_text()), proc.stdout


def _state_bytes():
  """params + AdamW's two moments, float32, from the model's parameter shapes alone."""
  cfg = synthetic_retrieval.get_config().model
  return 3 * 4 * sum(int(np.prod(s)) for s, _ in params_io.param_shapes(cfg).values())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fake_devices_data_parallel_vs_fsdp(tmp_path):
  dp, text = _check(
    tmp_path, "dp", "--topology=cpu:4", "--chip=v5e", "--config.mesh=(4,1,1)", "--eval_images=40", "--eval_texts=200"
  )
  fsdp, _ = _check(tmp_path, "fsdp", "--topology=cpu:4", "--chip=v5e", "--config.mesh=(1,4,1)", "--noeval")
  names = [r["name"] for r in dp["results"]]
  assert names == [
    "train_step",
    "retrieval/encode_image",
    "retrieval/encode_text",
    "retrieval/itc_topk_i2t",
    "retrieval/rerank_i2t",
    "retrieval/rerank_t2i",
  ]
  assert [r["name"] for r in fsdp["results"]] == ["train_step"]
  assert dp["devices"] == 4 and dp["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1} and dp["fits"] is True
  assert dp["hbm_bytes"] == 16 * 2**30 and "FITS in 16 GiB HBM2" in text

  state = _state_bytes()
  batch = 8 * (32 * 32 * 3 * 4 + 2 * 12 * 4 + 4 + 4) // 4  # images, ids, mask, image ids, valid; a quarter each
  step_dp, step_fsdp = dp["results"][0], fsdp["results"][0]
  # Data parallel: every device holds the whole state (+ a scalar step and the rng) and its batch rows.
  assert state + batch <= step_dp["memory"]["argument"] <= 1.02 * state + batch + 4096
  # FSDP: parameters and moments sharded four ways (a few small tensors stay replicated).
  assert step_fsdp["memory"]["argument"] < 0.35 * state + batch + 4096
  for step in (step_dp, step_fsdp):  # the donated state is reused for the new state
    assert step["memory"]["alias"] >= 0.95 * (step["memory"]["argument"] - batch - 4096)
    assert step["peak_bytes"] > step["memory"]["temp"] > 0
  # The same arithmetic, however it is split: total FLOPs agree (collectives add no FLOPs).
  total_dp, total_fsdp = 4 * step_dp["flops_per_device"], 4 * step_fsdp["flops_per_device"]
  assert total_dp > 0 and abs(total_dp - total_fsdp) / total_dp < 0.2
  # The matmul count (loops per trip) splits the same way; on this unscanned step it is most of XLA's
  # total (which adds the element-wise work) and never above it.
  mm_dp, mm_fsdp = 4 * step_dp["matmul_flops_per_device"], 4 * step_fsdp["matmul_flops_per_device"]
  assert abs(mm_dp - mm_fsdp) / mm_dp < 0.02
  assert 0.5 * total_dp < mm_dp <= total_dp
  # rerank over the whole set: every device holds every image's and text's embeddings.
  rerank = dp["results"][4]
  cfg = synthetic_retrieval.get_config().model
  tokens = 1 + (cfg.image_res // cfg.patch_size) ** 2
  # 40 images and 200 texts, padded to whole evaluation batches (32 per device x 4 devices)
  embeds = 4 * (128 * tokens * cfg.vision.width + 256 * 40 * cfg.text.hidden)
  assert rerank["memory"]["argument"] >= embeds


def test_tpu_topology_compiles_with_libtpu(tmp_path):
  if importlib.util.find_spec("libtpu") is None:
    pytest.skip(
      "libtpu is not installed (pip install 'libtpu==0.0.42.*', the version jax[tpu]==0.10.2 pins): "
      "TPU topologies cannot be compiled here; the cpu:N path is tested above"
    )
  res, text = _check(tmp_path, "tpu", "--topology=v5p:2x2x1", "--config.mesh=(1,-1,1)", "--noeval")
  assert res["devices"] == 4 and res["device_kind"] == "TPU v5" and res["chip"] == "v5p"
  assert res["fits"] is True and "FITS in 95 GB HBM2e" in text
  assert res["results"][0]["memory"]["argument"] < 0.35 * _state_bytes() + 1e6


def test_gpu_topology_names():
  from x2vlm_jax.cli import gpu_targets

  assert gpu_targets.parse("h100:8") == ("h100", "1x1x8", 8)
  assert gpu_targets.parse("h100:2x8") == ("h100", "1x2x8", 16)
  assert gpu_targets.parse("v5p:2x2x2") is None and gpu_targets.parse("cpu:4") is None
  for bad in ("h100", "h100:", "h100:0", "h100:2x", "h100:1x2x3", "h100:eight"):
    with pytest.raises(ValueError, match="h100:N"):
      gpu_targets.parse(bad)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_topology_compiles_with_the_cuda_plugin(tmp_path):
  """XLA's CUDA compiler without a GPU (jax-cuda12-plugin, no CUDA libraries): the per-device program
  of an FSDP step on two H100s, its state halved, and its cuBLAS matmuls counting the same arithmetic
  as the CPU compile of the same step."""
  try:
    plugin = importlib.util.find_spec("jax_plugins.xla_cuda12")
  except ModuleNotFoundError:  # no jax_plugins namespace at all
    plugin = None
  if plugin is None:
    pytest.skip(
      "jax-cuda12-plugin is not installed (pip install jax-cuda12-plugin==0.10.2 jax-cuda12-pjrt==0.10.2): "
      "GPU targets cannot be compiled here; the cpu:N path is tested above"
    )
  res, text = _check(tmp_path, "gpu", "--topology=h100:2", "--config.mesh=(1,-1,1)", "--noeval")
  assert res["devices"] == 2 and res["device_kind"] == "NVIDIA H100 80GB HBM3" and res["chip"] == "h100"
  assert res["fits"] is True and "FITS in 80 GB HBM3" in text
  step = res["results"][0]
  assert 0.5 * _state_bytes() <= step["memory"]["argument"] < 0.6 * _state_bytes() + 1e6
  cpu, _ = _check(tmp_path, "cpu", "--topology=cpu:2", "--config.mesh=(1,-1,1)", "--noeval")
  assert step["matmul_flops_per_device"] == cpu["results"][0]["matmul_flops_per_device"] > 0


# --------------------------------------------------------------------------- every task's batch contract
# Task.batch_spec is what compile_check lowers the train step on: it must be exactly what the task's
# real train iterator yields (every field, shape and dtype; at one process the host batch is global).
SHAPES_TASKS = {
  "pretrain": ("configs/pretrain/shapes_tiny.py", "batch=8"),
  "retrieval": ("configs/finetune/shapes_retrieval.py", "batch=4"),
  "vqa": ("configs/finetune/shapes_vqa.py", "batch=4"),
  "captioning": ("configs/finetune/shapes_captioning.py", "batch=4"),
  "video_qa": ("configs/finetune/shapes_video.py", "batch=4"),
  "video_retrieval": ("configs/finetune/shapes_video.py", "batch=4,task=video_retrieval"),
  "nlvr2": ("configs/finetune/shapes_nlvr2.py", "batch=4"),
  "grounding": ("configs/finetune/shapes_grounding.py", "batch=4"),
}


def _config(name, data_dir):
  import importlib

  path, arg = SHAPES_TASKS[name]
  return importlib.import_module(path[:-3].replace("/", ".")).get_config(f"{arg},data_dir={data_dir}")


def _layout(tree, prefix=""):
  """{path: (shape, dtype name)} of a batch (arrays) or a spec ((shape, dtype) leaves)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_layout(v, f"{prefix}{k}/"))
    elif isinstance(v, tuple):
      out[prefix + k] = (tuple(v[0]), np.dtype(v[1]).name)
    else:
      out[prefix + k] = (tuple(v.shape), np.dtype(v.dtype).name)
  return out


@pytest.mark.parametrize("name", tiered(sorted(SHAPES_TASKS), fast=["pretrain", "retrieval"]))
def test_batch_spec_is_what_the_real_train_iterator_yields(embedded_small_dir, name):
  from x2vlm_jax import tasks

  config = _config(name, embedded_small_dir)
  task = tasks.build(config)
  it = task.train_iterator(seed=0, process_index=0, process_count=1)
  try:
    real = next(iter(it))
  finally:
    getattr(it, "close", lambda: None)()
  spec = _layout(task.batch_spec())
  assert spec == _layout(real)
  # The frames of the video tasks, the FG-free length of captioning, A answers of VQA: spot checks
  # against the config (a spec that followed a wrong field would still have to match these).
  d = config.data
  if name.startswith("video"):
    assert spec["frames"][0] == (4, int(d.num_frames), 64, 64, 3)
  if name == "captioning":
    assert spec["attention"][0] == (4, d.max_tokens + d.max_masks, d.max_tokens + d.max_masks)
  if name == "vqa":
    assert spec["answer_ids"][0] == (4, d.max_answers, d.max_answer_tokens)
  if name != "pretrain":  # the synthetic batches (tests, benchmarks) keep the same contract
    config.data.source = "synthetic"
    synthetic = next(iter(tasks.build(config).train_iterator(seed=0, process_index=0, process_count=1)))
    assert _layout(synthetic) == spec


@pytest.fixture(scope="module")
def compile_check_tool():
  from tests.helpers.tools import load_tool

  return load_tool("compile_check")


@pytest.mark.parametrize("name", ["captioning", "video_qa", "video_retrieval", "vqa"])
def test_train_step_traces_on_every_task_batch_spec(compile_check_tool, embedded_small_dir, name):
  """compile_check's train target for the tasks the retrieval compile above does not cover: the real
  train step is traced on the abstract state and the task's spec (no data, nothing compiled)."""
  import jax

  from x2vlm_jax import sharding as shd

  config = _config(name, embedded_small_dir)
  mesh = shd.create_mesh(config.mesh)
  _, step, args, state = compile_check_tool.train_target(config, mesh)
  with jax.set_mesh(mesh):
    new_state, metrics = jax.eval_shape(step, *args)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), new_state) == jax.tree.map(lambda x: (x.shape, x.dtype), state)
  assert metrics["train/loss"].shape == ()


# Every task's own evaluators describe the programs an evaluation runs (Evaluator.compile_targets):
# compile_check lowers exactly these. Traced here on the abstract sharded params (nothing compiled).
RETRIEVAL_PROGRAMS = ["encode_image", "encode_text", "itc_topk_i2t", "rerank_i2t", "rerank_t2i"]
EVAL_PROGRAMS = {
  "pretrain": [f"retrieval/{p}" for p in RETRIEVAL_PROGRAMS],  # no evals: its own, zero-shot retrieval
  "retrieval": [f"test/{p}" for p in RETRIEVAL_PROGRAMS],
  "video_retrieval": [f"test/{p}" for p in RETRIEVAL_PROGRAMS],
  "vqa": ["test/rank"],
  "captioning": ["test/caption"],
  "video_qa": ["test/answer_logits"],
  "nlvr2": ["nlvr2/nlvr_logits"],
  "grounding": ["grounding/predict_box"],
}


@pytest.mark.parametrize("name", tiered(sorted(EVAL_PROGRAMS), fast=["retrieval"]))
def test_every_task_evaluator_describes_its_programs(compile_check_tool, embedded_small_dir, name):
  import jax
  import ml_collections

  from x2vlm_jax import sharding as shd

  config = _config(name, embedded_small_dir)
  if name == "pretrain":
    config.evals = ml_collections.ConfigDict()
  mesh = shd.create_mesh(config.mesh)
  graphdef, _, _, state = compile_check_tool.train_target(config, mesh)
  targets = compile_check_tool.eval_targets(config, mesh, graphdef, state["params"], 8, 16)
  assert [target_name for target_name, _, _ in targets] == EVAL_PROGRAMS[name]
  with jax.set_mesh(mesh):
    for _, fn, args in targets:
      jax.eval_shape(fn, *args)


def test_tensor_table_labels_global_and_per_device_shapes(compile_check_tool):
  """The batch table used to print global shapes under a "(per device)" heading; each shape is now
  labelled, and the per-device one is the global one divided by the mesh's data axis (4 fake devices)."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec

  from x2vlm_jax import sharding as shd

  mesh = shd.create_mesh((4, 1, 1))
  rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  batch = {
    "images": jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.float32, sharding=rows),
    "ids": jax.ShapeDtypeStruct((8, 12), jnp.int32, sharding=rows),
  }
  lines = compile_check_tool.tensor_lines("batch", batch, 4)
  assert lines[0] == "  batch:" and "per device)" not in lines[0]
  assert lines[1].split() == ["path", "global", "shape", "per-device", "shape", "dtype", "sharding", "MiB/device"]
  images = next(line for line in lines if line.strip().startswith("images"))
  assert "(8, 32, 32, 3)" in images and "(2, 32, 32, 3)" in images
  assert images.split()[-1] == f"{2 * 32 * 32 * 3 * 4 / 2**20:.2f}"
