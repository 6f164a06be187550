"""The command-line programs, installed as console scripts (pyproject.toml [project.scripts]):

  x2vlm-train               the trainer (x2vlm_jax/cli/train.py; `python main.py` in a clone)
  x2vlm-evaluate            a checkpoint on an official annotation file (evaluate.py)
  x2vlm-convert             official PyTorch weights → our format (convert_checkpoint.py)
  x2vlm-build-tfds          official annotation files → a TFDS dataset (build_tfds.py; needs [data])
  x2vlm-compile-check       compile-only memory / FLOPs check for a device set (compile_check.py)
  x2vlm-sweep               a config's sweep(): commands, runs, table (sweep.py)
  x2vlm-demo                `make demo` (demo.py; needs [data])
  x2vlm-refer-to-grounding  REFER annotations → grounding records (refer_to_grounding.py)
  x2vlm-marvl-preproc       IGLUE MaRVL → NLVR2-format files (marvl_preproc.py)
  x2vlm-wit-to-retrieval    WIT files → the official retrieval format (wit_to_retrieval.py)

A clone runs the same code as `python tools/<module>.py` (thin wrappers) or `python -m x2vlm_jax.cli
<command> ...`. Every entry silences the expected CPU-machine noise (x2vlm_jax/console.py) before the
command's module, and through it jax or tensorflow, is imported.
"""

import importlib
import sys

# console script name → module in this package (each defines run(): parse sys.argv, exit)
COMMANDS = {
  "train": "train",
  "evaluate": "evaluate",
  "convert": "convert_checkpoint",
  "build-tfds": "build_tfds",
  "compile-check": "compile_check",
  "sweep": "sweep",
  "demo": "demo",
  "refer-to-grounding": "refer_to_grounding",
  "marvl-preproc": "marvl_preproc",
  "wit-to-retrieval": "wit_to_retrieval",
}


def launch(module: str) -> None:
  """Runs x2vlm_jax.cli.<module>'s command line on sys.argv (and exits)."""
  from x2vlm_jax import console

  console.quiet()  # before jax/tensorflow load: expected CPU-machine noise off, warnings and errors kept
  command = importlib.import_module(f"{__name__}.{module}")
  # absl's --help prints the __main__ module's docstring: the command's, not the wrapper's or the
  # console script's.
  sys.modules["__main__"].__doc__ = command.__doc__
  command.run()


def train():
  launch("train")


def evaluate():
  launch("evaluate")


def convert():
  launch("convert_checkpoint")


def build_tfds():
  launch("build_tfds")


def compile_check():
  launch("compile_check")


def sweep():
  launch("sweep")


def demo():
  launch("demo")


def refer_to_grounding():
  launch("refer_to_grounding")


def marvl_preproc():
  launch("marvl_preproc")


def wit_to_retrieval():
  launch("wit_to_retrieval")


def main() -> None:
  """`python -m x2vlm_jax.cli COMMAND [args...]`."""
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    sys.exit(f"usage: python -m x2vlm_jax.cli {{{','.join(COMMANDS)}}} [args...]")
  command = sys.argv.pop(1)
  sys.argv[0] = f"x2vlm-{command}"
  launch(COMMANDS[command])
