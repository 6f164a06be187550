"""A run that never exported (`--max_steps`, preempted) as a weights source (x2vlm_jax/run_dir.py):
tools/evaluate.py --checkpoint WORKDIR [--step N] with the run's own evaluation settings, and
`init_from` / params_io readers on WORKDIR@STEP."""

import io
import json

import jax
import numpy as np
import pytest
from PIL import Image

from tests.configs import synthetic_retrieval
from tests.helpers.tools import load_tool
from x2vlm_jax import experiment, params_io, run_dir
from x2vlm_jax.training import init_from


def _annotations(d):
  rs = np.random.RandomState(3)
  records = []
  for i in range(4):
    buf = io.BytesIO()
    Image.fromarray(rs.randint(0, 255, (20, 24, 3), np.uint8)).save(buf, format="JPEG")
    (d / f"{i}.jpg").write_bytes(buf.getvalue())
    records.append({"image": f"{i}.jpg", "caption": [f"a red circle {i}", f"two blue squares and a star {i}"]})
  (d / "test.json").write_text(json.dumps(records))
  return d / "test.json"


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory):
  """4-step retrieval run stopped after 2 steps (no export), evaluated in training at step 2 with
  settings that differ from the evaluator's defaults (max_tokens 8 vs 40, k_test 2 vs 256)."""
  d = tmp_path_factory.mktemp("anns")
  c = synthetic_retrieval.get_config("steps=4")
  c.evals.test = dict(
    type="retrieval", annotations=str(_annotations(d)), image_root=str(d), every=2, k_test=2, batch_size=4, max_tokens=8
  )
  wd = tmp_path_factory.mktemp("run") / "wd"
  state, _, _ = experiment.train(c, str(wd), max_steps=2)
  assert not experiment.finished(c, state) and not (wd / "export").exists()
  return wd, d, jax.device_get(state["params"])


@pytest.mark.slow
def test_params_io_reads_a_workdir_at_a_step(unfinished_run):
  wd, _, trained = unfinished_run
  assert run_dir.is_run(str(wd)) and run_dir.steps(str(wd)) == [2]
  cfg, params = params_io.load_numpy(f"{wd}@2")
  assert cfg.name == "tiny" and cfg.image_res == 32
  flat_got, flat_want = jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves_with_path(trained)
  assert [p for p, _ in flat_got] == [p for p, _ in flat_want]
  for (path, a), (_, b) in zip(flat_got, flat_want):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  with pytest.raises(ValueError, match=r"no checkpoint of step 3; saved steps: \[2\]"):
    params_io.load_numpy(f"{wd}@3")
  # init_from takes it like an export: everything loads, nothing is new.
  p = init_from.plan(f"{wd}@2", cfg)
  assert set(p.actions.values()) == {"load"} and p.new_params == []


@pytest.mark.slow
def test_evaluate_a_workdir_step_with_the_runs_evaluation_settings(unfinished_run, tmp_path):
  wd, d, _ = unfinished_run
  cli = load_tool("evaluate")
  out = tmp_path / "out"
  args = ["--task", "retrieval", "--checkpoint", str(wd), "--step", "2", "--annotations", str(d / "test.json")]
  assert cli.main([*args, "--image_root", str(d), "--output", str(out)]) == 0
  record = json.loads((out / "eval_config.json").read_text())
  assert record["step"] == 2 and record["checkpoint"] == f"{wd}@2"
  # The run's evals.test settings, not the evaluator's defaults (40 tokens, k_test 256).
  assert (record["eval"]["max_tokens"], record["eval"]["k_test"], record["eval"]["batch_size"]) == (8, 2, 4)
  got = json.loads((out / "metrics.json").read_text())
  want = json.loads((wd / "eval" / "test" / "step_2" / "metrics.json").read_text())
  for k in ("txt_r1", "txt_r5", "img_r1", "img_r5", "r_mean"):
    assert got[k] == pytest.approx(want[k], abs=1e-9), k
  # A flag still wins over the run's setting.
  assert cli.main([*args, "--image_root", str(d), "--output", str(out), "--config.max_tokens=12"]) == 0
  assert json.loads((out / "eval_config.json").read_text())["eval"]["max_tokens"] == 12


@pytest.mark.slow
def test_evaluate_step_needs_a_workdir_and_a_typo_is_named(unfinished_run, tmp_path, capsys):
  wd, d, _ = unfinished_run
  cli = load_tool("evaluate")
  base = ["--task", "retrieval", "--annotations", str(d / "test.json"), "--output", str(tmp_path / "o")]
  assert cli.main([*base, "--checkpoint", str(d), "--step", "2"]) == 2
  assert "is not a training workdir" in capsys.readouterr().err
  assert cli.main([*base, "--checkpoint", str(wd), "--config.max_token=8"]) == 2
  assert "did you mean 'max_tokens'" in capsys.readouterr().err
