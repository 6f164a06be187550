"""Counts the training captions a fine-tuning config's fixed `data.max_tokens` cuts, and prints the
`data.max_tokens` that keeps every one whole. Retrieval and video retrieval captions are never cut
officially (Retrieval.py: train(), padding='longest' without truncation; README deviations); a training
run logs the same count when its iterator starts, and `train/captions_cut` per step.

Reads the built datasets' row tables (`config.data.train`) with the config's tokenizer; no image is opened.

  python tools/count_cut_captions.py configs/finetune/coco_retrieval.py --data_dir data
  python tools/count_cut_captions.py configs/finetune/shapes_video.py:task=video_retrieval --max_tokens 20
  → {"captions": N, "cut": C, "longest_tokens": L, "max_tokens": M}   (L: the data.max_tokens to cut none)
"""

import argparse
import importlib.util
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
  from x2vlm_jax import console

  console.quiet()  # before tensorflow loads: expected CPU-machine noise off, warnings and errors kept


def load_config(spec: str):
  """'path/to/config.py[:arg]' → its get_config(arg)."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("count_cut_captions_config", path)
  if module_spec is None or not os.path.exists(path):
    raise ValueError(f"config {path!r}: no such Python file")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def count(config) -> dict:
  from x2vlm_jax.data.finetune.common import report_cut_captions
  from x2vlm_jax.data.text import Tokenizer

  data = config.data
  report = report_cut_captions(data, Tokenizer(data.vocab_file, data.max_tokens), config.get("task", "retrieval"))
  return {**report, "max_tokens": int(data.max_tokens)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("config", help="fine-tuning config file, optionally with :arg")
  p.add_argument("--data_dir", help="overrides config.data.data_dir")
  p.add_argument("--max_tokens", type=int, help="overrides config.data.max_tokens")
  args = p.parse_args(argv)
  config = load_config(args.config)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  if args.max_tokens:
    config.data.max_tokens = args.max_tokens
  print(json.dumps(count(config), sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
