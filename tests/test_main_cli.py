"""main.py's command line: a mistyped --config key or a bad `:arg` value is one line naming it (each used to be
~50 lines of chained tracebacks)."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_a_mistyped_config_key_is_one_line_with_a_suggestion(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  cmd = [sys.executable, "main.py", "--config=tests/configs/synthetic_tiny.py", f"--workdir={tmp_path / 'wd'}"]
  out = subprocess.run([*cmd, "--config.optim.lrr=1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1] == "error: --config: unknown field 'lrr' (did you mean 'lr'?)", out.stderr
  assert not (tmp_path / "wd").exists()


def test_a_bad_config_arg_value_names_the_argument(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  config = "--config=tests/configs/synthetic_tiny.py:steps=abc"
  cmd = [sys.executable, "main.py", config, f"--workdir={tmp_path / 'wd'}"]
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last == "error: --config: config arg 'steps': expected int (default 6), got 'abc'", out.stderr[-3000:]
  assert not (tmp_path / "wd").exists()
