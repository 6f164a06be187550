"""IGLUE MaRVL annotations → NLVR2-format files, one per language (as the official utils/marvl_preproc.py).

  python tools/marvl_preproc.py --input marvl/zero_shot/annotations --output marvl_nlvr2 [--few_shot]

Each IGLUE line {caption, label, left_img, right_img, language} becomes {sentence, label, images: [left,
right]} with the official image paths (zero-shot: images/marvl_official/<lang>/images/<concept>/<file>;
few-shot: images/marvl_fewshot/<lang>/all/<file>), relative to the --image_root given to
tools/evaluate.py / tools/build_tfds.py. Output file names drop the `l` of `.jsonl` (marvl-id.jsonl →
marvl-id.json), as officially.
"""

import argparse
import json
import os
import sys


def convert_line(d, few_shot: bool):
  lang = d["language"]
  if few_shot:
    images = [f"images/marvl_fewshot/{lang}/all/{d[k].split('/')[-1]}" for k in ("left_img", "right_img")]
  else:
    images = [f"images/marvl_official/{lang}/images/{d[k].split('-')[0]}/{d[k]}" for k in ("left_img", "right_img")]
  return {"sentence": d["caption"], "label": d["label"], "images": images}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--input", required=True, help="directory of IGLUE MaRVL *.jsonl annotation files")
  p.add_argument("--output", required=True)
  p.add_argument("--few_shot", action="store_true", help="the few-shot image layout")
  args = p.parse_args(argv)
  os.makedirs(args.output, exist_ok=True)
  for name in sorted(os.listdir(args.input)):
    if not name.endswith(".jsonl"):
      continue
    with open(os.path.join(args.input, name), encoding="utf-8") as f:
      rows = [convert_line(json.loads(line), args.few_shot) for line in f if line.strip()]
    out = os.path.join(args.output, name[:-1])
    with open(out, "w", encoding="utf-8") as f:
      json.dump(rows, f, ensure_ascii=False)
    print(f"{out}: {len(rows)} records")
  return 0


def run():
  """The `x2vlm-marvl-preproc` console script (x2vlm_jax/cli/__init__.py: launch)."""
  sys.exit(main())
