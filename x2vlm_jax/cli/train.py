"""The trainer's command line: `x2vlm-train` (installed) or `python main.py` (a clone):
  x2vlm-train --config=configs/{pretrain,finetune}/NAME.py[:arg] [--config.key=value ...] --workdir=DIR
(installed, a shipped config by its name: --config=pretrain/NAME.py; x2vlm_jax/configs/__init__.py: resolve).

One trainer for every task (`config.task`: pretrain, retrieval, ...). A workdir that already holds a
checkpoint resumes it (with a config that changes what the remaining steps compute only with --force;
x2vlm_jax/training/run_record.py). SIGTERM or Ctrl-C saves the current step and exits 0. At the end
the final params are exported to WORKDIR/export (and the best evaluated step's to WORKDIR/export_best
when `config.best_metric` is set), with the vocabulary.
Multi-host: on TPU `--distributed` (jax.distributed.initialize() discovers everything); on GPU/CPU
clusters pass --coordinator_address, --num_processes, --process_id.
"""

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from x2vlm_jax import configs, console

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and logs (local path or gs://).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (GPU/CPU clusters).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (GPU/CPU clusters).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (GPU/CPU clusters).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto on TPU pods).")
_MAX_STEPS = flags.DEFINE_integer(
  "max_steps",
  None,
  "Stop with a checkpoint after this many steps in this launch "
  "(time-limited jobs); the schedule still follows the config.",
)
_FORCE = flags.DEFINE_bool(
  "force",
  False,
  "Resume even though the config changes what the remaining steps compute (batch size, lr, data, model; "
  "recorded in WORKDIR/config_history.jsonl). Without it such a resume is refused with the changed keys.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  import jax  # after flags, so XLA_FLAGS set by the caller take effect

  if _COORDINATOR.value or _DISTRIBUTED.value:
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value
    )
  logging.info(
    "process %d/%d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  from x2vlm_jax import experiment
  from x2vlm_jax.training import run_record

  try:
    experiment.run(_CONFIG.value, _WORKDIR.value, max_steps=_MAX_STEPS.value, force=_FORCE.value)
  except run_record.ConfigChangedError as e:
    raise app.UsageError(str(e)) from None


def _config_error(e: BaseException) -> str:
  """ml_collections' message of a bad --config override as one line (an unknown key arrives as
  '\'lrr\'\nDid you mean "lr" instead of "lrr"?')."""
  text = str(e.args[0] if e.args else e)
  m = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
  if m:
    return f"unknown field {m.group(2)!r} (did you mean {m.group(1)!r}?)"
  return " ".join(text.replace("\\n", " ").split())


def _parse_flags(argv):
  """absl's flag parsing, except that an error raised inside the config file (a bad `:arg` value, which
  ml_collections reports as the file's whole traceback) is one line: the error's own message."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if "Error whilst parsing config file" in text:
      last = text.strip().splitlines()[-1].strip()
      sys.exit(f"error: --config: {re.sub(r'^[A-Za-z_.]*(Error|Exception): ', '', last)}")
    # absl's own report (app.parse_flags_with_usage) for every other flag error.
    sys.stderr.write(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def run():
  """`x2vlm-train` / main.py: absl flags, then `main`. An error while the flags are parsed (a mistyped
  --config key, a bad `:arg`) is one line naming it, not ~50 lines of chained tracebacks."""
  started = []
  sys.argv = [sys.argv[0], *configs.resolve_argv(sys.argv[1:])]  # a shipped config by its name

  def _main(argv):
    started.append(True)
    return main(argv)

  console.quiet()  # before jax/tensorflow load: expected CPU-machine noise off, warnings and errors kept
  try:
    app.run(_main, flags_parser=_parse_flags)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if started:
      raise
    sys.exit(f"error: --config: {_config_error(e)}")
