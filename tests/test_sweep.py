"""tools/sweep.py: a config's sweep(add, arg) expands into named trials and commands; --run runs them one
after another, skips a finished trial and resumes an interrupted one from its checkpoint; --table lists
every trial with its swept values and metrics, sorted."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import xla
from tests.helpers.tools import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sweep():
  return load_tool("sweep")


CONFIG = """
from x2vlm_jax.configs.finetune import common

def get_config(arg=None):
  a = common.parse_arg(arg, steps=4, batch=8, res=32, tag="x")
  c = common.base_config("tiny", "retrieval", a.res, a.batch)
  c.total_steps = a.steps
  return c

def sweep(add, arg=None):
  assert arg == "batch=16,steps=3"
  add(arg="steps=5", **{"optim.lr": 0.001, "mesh": (1, 2, 1)})
  add(name="plain", seed=7)
"""


def test_expand_names_merges_args_and_builds_commands(sweep, tmp_path):
  cfg = tmp_path / "cfg.py"
  cfg.write_text(CONFIG)
  path, trials = sweep.expand(f"{cfg}:batch=16,steps=3", {"log_every": "5"})
  assert [t.name for t in trials] == ["00_steps=5,lr=0.001,mesh=(1,2,1)", "01_plain"]
  assert [t.arg for t in trials] == ["batch=16,steps=5", "batch=16,steps=3"]  # the trial's items win
  assert sweep.command(path, trials[0], "gs://b/sw", {"log_every": "5"}, extra=["--distributed"]) == [
    "python",
    "main.py",
    f"--config={cfg}:batch=16,steps=5",
    "--workdir=gs://b/sw/00_steps=5,lr=0.001,mesh=(1,2,1)",
    "--config.optim.lr=0.001",
    "--config.mesh=(1,2,1)",
    "--config.log_every=5",
    "--distributed",
  ]
  with pytest.raises(ValueError, match=r"trial 0 .*unknown field 'lrr'"):
    cfg.write_text(CONFIG.replace('"optim.lr"', '"optim.lrr"'))
    sweep.expand(f"{cfg}:batch=16,steps=3")
  with pytest.raises(ValueError, match="both swept and given"):
    cfg.write_text(CONFIG)
    sweep.expand(f"{cfg}:batch=16,steps=3", {"seed": "3"})


def test_print_with_the_console_script_as_launcher(sweep, tmp_path, capsys):
  cfg = tmp_path / "cfg.py"
  cfg.write_text(CONFIG)
  assert sweep.main([f"{cfg}:batch=16,steps=3", "--workdir_root", "runs", "--print", "--launcher", "x2vlm-train"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
    f"x2vlm-train --config={cfg}:batch=16,steps=5 '--workdir=runs/00_steps=5,lr=0.001,mesh=(1,2,1)' "
    "--config.optim.lr=0.001 '--config.mesh=(1,2,1)'",
    f"x2vlm-train --config={cfg}:batch=16,steps=3 --workdir=runs/01_plain --config.seed=7",
  ]


def _tool(*args):
  env = dict(os.environ, XLA_FLAGS=xla.cpu_flags(1), JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "tools/sweep.py", "tests/configs/synthetic_retrieval.py:steps=4", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  return out.stdout


def _steps(workdir):
  return [json.loads(x)["step"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_resumes_an_interrupted_trial_skips_finished_ones_and_tabulates(tmp_path):
  root = tmp_path / "sweep"
  names = ["00_seed=1", "01_seed=2"]
  # Trial 1 is stopped after 2 of its 4 steps (a time-limited launch); trial 0 has not started.
  out = _tool("--workdir_root", str(root), "--run", "--trials", "1", "--max_steps", "2")
  assert f"{names[1]}: stopped" in out and not (root / names[0]).exists()
  assert _steps(root / names[1]) == [1, 2]
  # Re-running the sweep runs trial 0 and RESUMES trial 1 at step 3 (no step logged twice).
  out = _tool("--workdir_root", str(root), "--run")
  assert f"{names[0]} (1/2): starting" in out and f"{names[1]} (2/2): resuming" in out
  assert _steps(root / names[0]) == [1, 2, 3, 4] and _steps(root / names[1]) == [1, 2, 3, 4]
  for n in names:
    assert json.loads((root / n / "trial.json").read_text())["status"] == "done"
  before = {n: (root / n / "metrics.jsonl").read_text() for n in names}
  out = _tool("--workdir_root", str(root), "--run")
  assert out.count("done, skipped") == 2
  assert {n: (root / n / "metrics.jsonl").read_text() for n in names} == before

  out = _tool("--workdir_root", str(root), "--table", "--format", "csv", "--output", str(tmp_path / "t.csv"))
  rows = list(csv.DictReader(io.StringIO(out)))
  assert (tmp_path / "t.csv").read_text() == out
  final = {n: [json.loads(x) for x in before[n].splitlines()][-1]["train/loss"] for n in names}
  low_first = sorted(names, key=lambda n: final[n])
  assert [r["trial"] for r in rows] == low_first  # sorted by the final training loss, lowest first
  for r in rows:
    assert r["status"] == "done" and r["step"] == "4"
    assert r["seed"] == r["trial"][-1]  # read back from the trial's config.json
    assert float(r["train/loss (final)"]) == pytest.approx(final[r["trial"]], rel=1e-3)
    losses = [json.loads(x)["train/loss"] for x in before[r["trial"]].splitlines()]
    assert float(r["train/loss (best)"]) == pytest.approx(min(losses), rel=1e-3)


def test_table_minimises_training_terms_and_refuses_a_metric_no_trial_logged(sweep, tmp_path):
  path = tmp_path / "cfg.py"
  path.write_text(CONFIG)
  _, trials = sweep.expand(f"{path}:batch=16,steps=3", {})
  root = str(tmp_path / "root")
  # Distinct values per step so that max and min differ: image/itc and region/giou are losses.
  series = {"image/itc": [3.0, 1.0, 2.0], "region/giou": [0.9, 0.4, 0.6], "test/r_mean": [10.0, 30.0, 20.0]}
  for t in trials:
    wd = sweep.workdir(root, t)
    os.makedirs(wd)
    rows = [{"step": i + 1, **{k: v[i] for k, v in series.items()}} for i in range(3)]
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
      f.write("".join(json.dumps(r) + "\n" for r in rows))
  metrics = ["image/itc", "region/giou", "test/r_mean"]
  header, rows = sweep.table_rows(trials, root, metrics, "test/r_mean")
  row = dict(zip(header, rows[0]))
  assert (row["image/itc (best)"], row["region/giou (best)"], row["test/r_mean (best)"]) == ("1", "0.4", "30")
  sweep.check_metrics(trials, root, metrics)
  with pytest.raises(ValueError, match=r"'test/r_men' was logged by no trial; did you mean 'test/r_mean'"):
    sweep.check_metrics(trials, root, ["test/r_men"])
