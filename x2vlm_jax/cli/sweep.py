"""Experiment sweeps (big_vision style): a config file may define `sweep(add, arg=None)` next to
`get_config(arg)`; each `add(...)` call is one trial:

    def sweep(add, arg=None):
      for lr in (3e-4, 1e-3):
        add(arg="steps=400", **{"optim.lr": lr, "optim.warmup_steps": 25})   # `:arg` items and/or --config.*

  x2vlm-sweep CONFIG[:arg] --workdir_root DIR --print [--config.k=v ...] [-- EXTRA MAIN.PY FLAGS]
      one `python main.py ...` command per trial (for a cluster launcher / a TPU pod script;
      `--launcher x2vlm-train`: commands of the installed console script instead)
  x2vlm-sweep CONFIG[:arg] --workdir_root DIR --run [--trials 0,2] [--max_steps N]
      runs the trials one after another here; a finished trial is skipped, an interrupted one resumes
      from its checkpoint (main.py resumes any workdir that holds one)
  x2vlm-sweep CONFIG[:arg] --workdir_root DIR --table [--sort test/r_mean] [--format csv] [--output F]
      one row per trial: status, last step, the swept values (read back from its config.json), final and
      best values of the metrics (metrics.jsonl; evaluation results are logged there too), sorted

Trial workdirs are DIR/NN_key=value,...: the trial's number and what it changes (the last part of each
overridden key). `:arg` items of a trial are merged over the sweep's own `:arg` (the trial wins);
`--config.k=v` given here applies to every trial (and may not name a swept key). In a clone
`python tools/sweep.py` is the same program; CONFIG may name a shipped config (`pretrain/shapes_tiny.py`,
x2vlm_jax/configs/__init__.py: resolve).
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from etils import epath

from x2vlm_jax import configs


@dataclasses.dataclass
class Trial:
  index: int
  name: str
  arg: str  # the merged `:arg` string ("" = none)
  overrides: Dict[str, object]  # dotted config key → value


# ------------------------------------------------------------------------------------------ expansion
def load_module(path: str):
  spec = importlib.util.spec_from_file_location(f"sweep_config_{abs(hash(path))}", path)
  if spec is None:
    raise ValueError(f"config {path!r}: not a Python file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _arg_items(arg: Optional[str]) -> Dict[str, str]:
  """'steps=400,video' → {'steps': '400', 'video': ''} (order kept)."""
  out = {}
  for item in filter(None, (arg or "").split(",")):
    key, eq, value = item.partition("=")
    out[key] = eq + value
  return out


def merge_args(base: Optional[str], trial: Optional[str]) -> str:
  items = {**_arg_items(base), **_arg_items(trial)}
  return ",".join(k + v for k, v in items.items())


def format_value(v) -> str:
  """A value as `--config.k=` takes it (ml_collections parses tuples, bools, numbers)."""
  if isinstance(v, bool):
    return str(v).lower()
  if isinstance(v, (list, tuple)):
    return "(" + ",".join(format_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
  return str(v)


def _readable(arg: Optional[str], overrides: Dict[str, object]) -> str:
  parts = [k + v for k, v in _arg_items(arg).items()]
  parts += [f"{k.split('.')[-1]}={format_value(v)}" for k, v in overrides.items()]
  return ",".join(parts).replace("/", "-").replace(" ", "")


def _lookup(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      known = sorted(node.keys()) if hasattr(node, "keys") else []
      raise KeyError(f"--config.{dotted}: unknown field {part!r} (known: {known})")
    node = node[part]
  return node


def expand(config_spec: str, common: Dict[str, str] = None) -> Tuple[str, List[Trial]]:
  """CONFIG[:arg] → (config path, trials). Each trial's config is built once here, so a bad key or
  `:arg` fails now, naming the trial, rather than on a cluster later."""
  path, _, base_arg = configs.resolve(config_spec).partition(":")
  module = load_module(path)
  if not hasattr(module, "sweep"):
    raise ValueError(f"{path}: defines no sweep(add, arg=None)")
  raw: List[Tuple[Optional[str], Optional[str], Dict[str, object]]] = []

  def add(arg: Optional[str] = None, name: Optional[str] = None, **overrides):
    raw.append((arg, name, overrides))

  module.sweep(add, base_arg or None)
  if not raw:
    raise ValueError(f"{path}: sweep() added no trial")
  trials = []
  for i, (arg, name, overrides) in enumerate(raw):
    clash = sorted(set(overrides) & set(common or {}))
    if clash:
      raise ValueError(f"trial {i}: --config.{clash[0]} is both swept and given on the command line")
    merged = merge_args(base_arg, arg)
    try:
      config = module.get_config(merged or None)
      for key in list(overrides) + list(common or {}):
        _lookup(config, key)
    except (KeyError, ValueError) as e:
      raise ValueError(f"trial {i} (arg {merged!r}, overrides {overrides}): {e.args[0] if e.args else e}") from None
    label = name or _readable(arg, overrides)
    trials.append(Trial(i, f"{i:02d}_{label}" if label else f"{i:02d}", merged, dict(overrides)))
  return path, trials


def command(
  path: str,
  trial: Trial,
  root: str,
  common: Dict[str, str],
  *,
  python: str = "python",
  main: str = "main.py",
  extra=(),
  launcher: Optional[List[str]] = None,
) -> List[str]:
  """The trial's training command: `python main.py ...`, or `launcher ...` (e.g. ['x2vlm-train'])."""
  spec = f"{path}:{trial.arg}" if trial.arg else path
  cmd = list(launcher) if launcher else [python, main]
  cmd += [f"--config={spec}", f"--workdir={workdir(root, trial)}"]
  cmd += [f"--config.{k}={format_value(v)}" for k, v in trial.overrides.items()]
  cmd += [f"--config.{k}={v}" for k, v in (common or {}).items()]
  return cmd + list(extra)


def workdir(root: str, trial: Trial) -> str:
  return root.rstrip("/") + "/" + trial.name


# ------------------------------------------------------------------------------------------ state
TRIAL_FILE = "trial.json"


def status(wd: epath.Path) -> str:
  """done | stopped (--max_steps or preempted: resumable) | failed | running (or killed) | pending."""
  f = wd / TRIAL_FILE
  if f.exists():
    return json.loads(f.read_text())["status"]
  if (wd / "export" / "model_config.json").exists():
    return "done"  # launched outside this tool and finished
  return "started" if (wd / "config.json").exists() else "pending"


def run_trials(path: str, trials: List[Trial], root: str, common, *, max_steps: Optional[int] = None, extra=()) -> int:
  env = dict(os.environ)
  # The trainer of this very installation (a clone or site-packages), whatever the working directory.
  package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
  # Trials of one sweep compile the same programs again (a resumed trial always; trials that differ
  # only in runtime values such as the seed too): keep them in a persistent compilation cache.
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.abspath(root), ".jax_cache"))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
  failed = []
  for t in trials:
    wd = epath.Path(os.path.abspath(workdir(root, t)))
    state = status(wd)
    if state == "done":
      print(f"[sweep] {t.name}: done, skipped", flush=True)
      continue
    resuming = (wd / "checkpoints").exists() and any(p.name.isdigit() for p in (wd / "checkpoints").iterdir())
    cmd = command(
      os.path.abspath(path),
      t,
      os.path.abspath(root),
      common,
      launcher=[sys.executable, "-m", "x2vlm_jax.cli", "train"],
      extra=list(extra) + ([f"--max_steps={max_steps}"] if max_steps else []),
    )
    print(
      f"[sweep] {t.name} ({t.index + 1}/{len(trials)}): {'resuming' if resuming else 'starting'}\n  {shlex.join(cmd)}",
      flush=True,
    )
    wd.mkdir(parents=True, exist_ok=True)
    record = {"command": cmd, "status": "running"}
    (wd / TRIAL_FILE).write_text(json.dumps(record, indent=2))
    rc = subprocess.call(cmd, env=env)
    finished = rc == 0 and (wd / "export" / "model_config.json").exists()
    record.update(returncode=rc, status="done" if finished else ("stopped" if rc == 0 else "failed"))
    (wd / TRIAL_FILE).write_text(json.dumps(record, indent=2))
    print(f"[sweep] {t.name}: {record['status']} (exit code {rc})", flush=True)
    if rc != 0:
      failed.append(t.name)
  if failed:
    print(f"[sweep] failed trials: {', '.join(failed)} (re-run --run to retry them; finished ones are skipped)")
  return 1 if failed else 0


# ------------------------------------------------------------------------------------------ table
def read_metrics(wd: epath.Path) -> Dict[str, Dict[int, float]]:
  """{metric: {step: value}} from metrics.jsonl; a resumed run that logged a step twice keeps the last."""
  f = wd / "metrics.jsonl"
  out: Dict[str, Dict[int, float]] = {}
  if not f.exists():
    return out
  for line in f.read_text().splitlines():
    if line.strip():
      rec = json.loads(line)
      for k, v in rec.items():
        if k != "step" and isinstance(v, (int, float)):
          out.setdefault(k, {})[int(rec["step"])] = float(v)
  return out


# Logged training terms are losses whatever their name (image/itc, region/giou, video/mlm, ...): minimised.
_LOSS_PREFIXES = ("image/", "region/", "video/")


def _mode(metric: str, config: dict) -> str:
  if metric == config.get("best_metric"):
    return config.get("best_mode", "max")
  if "loss" in metric.split("/")[-1] or metric.startswith(_LOSS_PREFIXES) or metric == "perf/eta_min":
    return "min"
  return "max"


def check_metrics(trials: List[Trial], root: str, metrics: List[str]) -> None:
  """A metric no trial logged is a typo (it would be an empty column): name it, with a close match."""
  import difflib

  logged = set()
  for t in trials:
    logged |= set(read_metrics(epath.Path(workdir(root, t))))
  if not logged:
    return  # nothing ran yet: the table shows the status column only
  for m in metrics:
    if m not in logged:
      close = difflib.get_close_matches(m, sorted(logged), n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise ValueError(f"metric {m!r} was logged by no trial{hint} (logged: {', '.join(sorted(logged))})")


def table_rows(trials: List[Trial], root: str, metrics: List[str], sort: str, sort_value: str = ""):
  """→ (header, rows) with rows sorted by `sort` (missing values last)."""
  swept = list(dict.fromkeys([k for t in trials for k in _arg_items(t.arg)] + [k for t in trials for k in t.overrides]))
  header = ["trial", "status", "step"] + swept
  for m in metrics:
    header += [f"{m} (final)", f"{m} (best)"]
  rows, keys = [], []
  for t in trials:
    wd = epath.Path(workdir(root, t))
    config = json.loads((wd / "config.json").read_text()) if (wd / "config.json").exists() else {}
    series = read_metrics(wd)
    steps = [s for v in series.values() for s in v]
    row = [t.name, status(wd), max(steps) if steps else ""]
    for key in swept:
      if key in t.overrides:  # the value the run actually used, read back from its config.json
        try:
          node = config
          for part in key.split("."):
            node = node[part]
          row.append(node)
        except (KeyError, TypeError):
          row.append("")
      else:
        row.append(_arg_items(t.arg).get(key, "").lstrip("="))
    values = {}
    for m in metrics:
      s = series.get(m, {})
      final = s[max(s)] if s else None
      best = (max if _mode(m, config) == "max" else min)(s.values()) if s else None
      values[m] = {"final": final, "best": best}
      row += ["" if final is None else f"{final:.4g}", "" if best is None else f"{best:.4g}"]
    which = sort_value or ("best" if sort == config.get("best_metric") else "final")
    value = values.get(sort, {}).get(which) if sort in values else None
    rows.append(row)
    keys.append((value is None, 0.0 if value is None else (-value if _mode(sort, config) == "max" else value)))
  order = sorted(range(len(rows)), key=lambda i: keys[i])
  return header, [rows[i] for i in order]


def render(header, rows, fmt: str) -> str:
  if fmt == "csv":
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()
  lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def default_metrics(trials: List[Trial], root: str) -> List[str]:
  """train/loss and the config's best_metric (when set)."""
  out = ["train/loss"]
  for t in trials:
    f = epath.Path(workdir(root, t)) / "config.json"
    if f.exists():
      best = json.loads(f.read_text()).get("best_metric")
      if best and best not in out:
        out.append(best)
  return out


# ------------------------------------------------------------------------------------------ CLI
def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("config", help="CONFIG.py[:arg]; the file defines sweep(add, arg=None)")
  p.add_argument("--workdir_root", required=True, help="trial workdirs go under it (local or gs:// for --print)")
  mode = p.add_mutually_exclusive_group(required=True)
  mode.add_argument("--print", action="store_true", help="print one main.py command per trial")
  mode.add_argument("--run", action="store_true", help="run the trials here, one after another (resumable)")
  mode.add_argument("--table", action="store_true", help="collect every trial's config and metrics")
  p.add_argument("--trials", default="", help="comma-separated trial numbers (default: all)")
  p.add_argument(
    "--max_steps", type=int, default=None, help="--run: passed to main.py (stop each launch after N steps)"
  )
  p.add_argument("--python", default="python", help="--print: the interpreter in the commands")
  p.add_argument(
    "--launcher",
    default="",
    help="--print: the training command instead of `PYTHON main.py` (e.g. x2vlm-train, the installed console script)",
  )
  p.add_argument("--metrics", default="", help="--table: comma-separated metrics (default: train/loss + best_metric)")
  p.add_argument(
    "--sort",
    default="",
    help="--table: the metric to sort by (default: the config's best_metric if set, else train/loss)",
  )
  p.add_argument(
    "--sort_value",
    choices=["final", "best"],
    default="",
    help="--table: sort by the final or the best value (default: best for best_metric, else final)",
  )
  p.add_argument("--format", choices=["md", "csv"], default="md")
  p.add_argument("--output", default="", help="--table: write the table to this file too")
  args, rest = p.parse_known_args(argv)
  common, extra = {}, []
  if "--" in rest:
    extra = rest[rest.index("--") + 1 :]
    rest = rest[: rest.index("--")]
  for item in rest:
    if not item.startswith("--config.") or "=" not in item:
      p.error(
        f"unrecognised argument {item!r} (overrides for every trial are --config.KEY=VALUE; main.py flags go after --)"
      )
    key, value = item[len("--config.") :].split("=", 1)
    common[key] = value
  return args, common, extra


def main(argv=None) -> int:
  args, common, extra = _parse(argv)
  try:
    path, trials = expand(args.config, common)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.trials:
    wanted = {int(x) for x in args.trials.split(",")}
    unknown = sorted(wanted - {t.index for t in trials})
    if unknown:
      print(f"error: --trials {unknown}: the sweep has trials 0..{len(trials) - 1}", file=sys.stderr)
      return 2
    trials = [t for t in trials if t.index in wanted]
  if args.print:
    for t in trials:
      launcher = shlex.split(args.launcher) or None
      print(shlex.join(command(path, t, args.workdir_root, common, python=args.python, extra=extra, launcher=launcher)))
    return 0
  if args.run:
    return run_trials(path, trials, args.workdir_root, common, max_steps=args.max_steps, extra=extra)
  metrics = [m for m in args.metrics.split(",") if m] or default_metrics(trials, args.workdir_root)
  sort = args.sort or metrics[-1]
  if sort not in metrics:
    metrics.append(sort)
  try:
    check_metrics(trials, args.workdir_root, metrics)
  except ValueError as e:
    print(f"error: --metrics/--sort: {e}", file=sys.stderr)
    return 2
  header, rows = table_rows(trials, args.workdir_root, metrics, sort, args.sort_value)
  text = render(header, rows, args.format)
  print(text, end="")
  if args.output:
    epath.Path(args.output).write_text(text)
  return 0


def run():
  """The `x2vlm-sweep` console script (x2vlm_jax/cli/__init__.py: launch)."""
  sys.exit(main())
