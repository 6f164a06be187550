"""x2vlm_jax/training/run_record.py: the config diff of a resumed launch and the replayed metrics rows
(the end-to-end checks with main.py are in tests/test_trainer.py)."""

import json

import pytest
from etils import epath

from x2vlm_jax.training import run_record


def test_diff_names_every_changed_leaf_and_only_those():
  old = {"optim": {"lr": 1e-4, "warmup": 10}, "log_every": 50, "mesh": [-1, 1, 1], "gone": 1}
  new = {"optim": {"lr": 3e-4, "warmup": 10}, "log_every": 10, "mesh": [1, -1, 1], "added": {"x": 2}}
  assert run_record.diff(old, new) == {
    "added.x": (None, 2),
    "gone": (1, None),
    "log_every": (50, 10),
    "mesh": ([-1, 1, 1], [1, -1, 1]),
    "optim.lr": (1e-4, 3e-4),
  }


def test_breaking_keeps_what_changes_the_steps_and_lets_logging_eval_and_layout_pass():
  changed = {
    "optim.lr": (1, 2),
    "data.image.batch_size": (8, 4),
    "seed": (1, 2),
    "model.dtype": ("float32", "bfloat16"),
    "log_every": (1, 2),
    "evals.val.every": (1, 2),
    "mesh": ([1], [2]),
    "data.data_dir": ("a", "b"),
    "checkpoint_every_minutes": (30, 5),
    "log_every_x": (1, 2),  # a prefix match must end at a dot
  }
  assert sorted(run_record.breaking(changed)) == [
    "data.image.batch_size",
    "log_every_x",
    "model.dtype",
    "optim.lr",
    "seed",
  ]


def test_record_launch_refuses_then_forces_and_keeps_the_history(tmp_path):
  root = epath.Path(tmp_path)
  first = {"optim": {"lr": 1.0}, "log_every": 1}
  run_record.record_launch(root, first, None)
  with pytest.raises(run_record.ConfigChangedError, match=r"optim.lr: 1.0 -> 2.0"):
    run_record.record_launch(root, {"optim": {"lr": 2.0}, "log_every": 1}, 5)
  assert json.loads((root / "config.json").read_text()) == first
  run_record.record_launch(root, {"optim": {"lr": 2.0}, "log_every": 3}, 5, force=True)
  rows = [json.loads(line) for line in (root / run_record.HISTORY).read_text().splitlines()]
  assert [(r["start_step"], r["forced"], r["changed"]) for r in rows] == [
    (0, False, {}),
    (5, True, {"log_every": [1, 3], "optim.lr": [1.0, 2.0]}),
  ]
  assert rows[0]["config"] == first


def test_drop_replayed_rows_moves_rows_past_the_checkpoint(tmp_path):
  root = epath.Path(tmp_path)
  rows = [{"step": s, "train/loss": 10.0 - s} for s in (1, 2, 3, 4, 5)] + [{"step": 4, "val/acc": 0.5}]
  (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "tr')  # cut by a kill
  assert run_record.drop_replayed_rows(root, 3) == 3
  kept = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
  moved = [json.loads(line) for line in (root / run_record.SUPERSEDED).read_text().splitlines()]
  assert kept == rows[:3] and moved == rows[3:]
  assert run_record.drop_replayed_rows(root, None) == 0
