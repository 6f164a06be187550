"""REFER annotations (RefCOCO / RefCOCO+ / RefCOCOg) → grounding records with the box in the record.

The official X²-VLM files `refcoco+_{train,val,test}.json` hold {image, text, ref_id} and the training
and evaluation code looks the box, the split and the image size up in the REFER toolkit
(`REFER(data_root, 'refcoco+', 'unc')`: `refToAnn[ref_id]['bbox']`, `Refs[ref_id]['split']`,
`Imgs[image_id]['width'/'height']`). This tool does those look-ups once, offline, from REFER's own
files, without the toolkit (and without its downloads):

  REFER_DIR/refs(unc).p      the refs pickle: [{ref_id, ann_id, image_id, split, sentences: [{sent, raw}]}]
  REFER_DIR/instances.json   COCO-style {images: [{id, width, height, file_name}], annotations: [{id, bbox}]}

and writes OUT/<prefix>_train.json, _val.json, _test.json (testA + testB, like the official test
file) with one record per sentence:
  {"image": IMAGE_PREFIX + file_name, "text": sent, "ref_id", "bbox": [x, y, w, h], "split", "width", "height"}

With --official_dir the official files are completed instead (same records, same order, the box,
split and size added by ref_id), which is the exact official record set; those of the three that are
there (evaluation needs only _val and _test):

  python tools/refer_to_grounding.py --refer_dir refer/data/refcoco+ --output_dir data/refcoco+ \
      [--official_dir data/finetune] [--split_by unc] [--prefix refcoco+] [--image_prefix ""]

The pickle is read with an unpickler that refuses every class (REFER's refs are plain lists, dicts
and strings), so a tampered file cannot run code.
"""

import argparse
import io
import json
import os
import pickle
import sys
from typing import Dict, List

SPLIT_FILES = {"train": ("train",), "val": ("val",), "test": ("testA", "testB", "test")}


class _PlainUnpickler(pickle.Unpickler):
  def find_class(self, module, name):
    raise pickle.UnpicklingError(f"refs pickle: refusing to load {module}.{name} (only plain data is expected)")


def load_refs(path: str) -> List[Dict]:
  with open(path, "rb") as f:
    data = f.read()
  try:
    refs = _PlainUnpickler(io.BytesIO(data)).load()
  except UnicodeDecodeError:  # a Python 2 pickle with non-ASCII byte strings
    refs = _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
  if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
    raise ValueError(f"{path}: expected a list of ref dicts")
  return refs


def index(refer_dir: str, split_by: str):
  refs = load_refs(os.path.join(refer_dir, f"refs({split_by}).p"))
  with open(os.path.join(refer_dir, "instances.json")) as f:
    inst = json.load(f)
  anns = {a["id"]: a for a in inst["annotations"]}
  imgs = {i["id"]: i for i in inst["images"]}
  by_ref = {}
  for r in refs:
    missing = [k for k in ("ref_id", "ann_id", "image_id", "split", "sentences") if k not in r]
    if missing:
      raise ValueError(f"refs({split_by}).p: ref {r.get('ref_id')!r} lacks {missing}")
    if r["ann_id"] not in anns or r["image_id"] not in imgs:
      raise ValueError(f"ref {r['ref_id']}: annotation {r['ann_id']} or image {r['image_id']} not in instances.json")
    by_ref[r["ref_id"]] = (r, anns[r["ann_id"]], imgs[r["image_id"]])
  return refs, by_ref


def _record(ref, ann, img, image_prefix: str, text: str) -> Dict:
  return {
    "image": image_prefix + img["file_name"],
    "text": text,
    "ref_id": ref["ref_id"],
    "bbox": [float(v) for v in ann["bbox"]],
    "split": ref["split"],
    "width": int(img["width"]),
    "height": int(img["height"]),
  }


def from_refer(refs, by_ref, image_prefix: str) -> Dict[str, List[Dict]]:
  out = {name: [] for name in SPLIT_FILES}
  for r in refs:
    ref, ann, img = by_ref[r["ref_id"]]
    name = next((n for n, splits in SPLIT_FILES.items() if ref["split"] in splits), None)
    if name is None:
      continue
    out[name] += [_record(ref, ann, img, image_prefix, s["sent"]) for s in ref["sentences"]]
  return out


def complete_official(official_dir: str, prefix: str, by_ref) -> Dict[str, List[Dict]]:
  """The official files that exist, completed. Evaluation alone needs only _val and _test (official
  Grounding_bbox.py with --evaluate builds no training set), so a missing file is skipped; none is an error."""
  out = {}
  paths = {name: os.path.join(official_dir, f"{prefix}_{name}.json") for name in SPLIT_FILES}
  if not any(os.path.exists(path) for path in paths.values()):
    raise ValueError(f"--official_dir {official_dir}: none of {sorted(os.path.basename(p) for p in paths.values())}")
  for name, path in paths.items():
    if not os.path.exists(path):
      continue
    with open(path) as f:
      records = json.load(f)
    for i, rec in enumerate(records):
      if rec.get("ref_id") not in by_ref:
        raise ValueError(f"{path}: record {i}: ref_id {rec.get('ref_id')!r} is not in the REFER refs")
      ref, ann, img = by_ref[rec["ref_id"]]
      rec.update(
        bbox=[float(v) for v in ann["bbox"]], split=ref["split"], width=int(img["width"]), height=int(img["height"])
      )
    out[name] = records
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--refer_dir", required=True, help="directory with refs(SPLIT_BY).p and instances.json")
  p.add_argument("--output_dir", required=True)
  p.add_argument("--split_by", default="unc")
  p.add_argument("--prefix", default="refcoco+", help="output (and official) file prefix")
  p.add_argument("--official_dir", default="", help="complete the official PREFIX_{train,val,test}.json instead")
  p.add_argument("--image_prefix", default="", help="prepended to instances.json file names (without --official_dir)")
  a = p.parse_args(argv)
  try:
    refs, by_ref = index(a.refer_dir, a.split_by)
    out = (
      complete_official(a.official_dir, a.prefix, by_ref)
      if a.official_dir
      else from_refer(refs, by_ref, a.image_prefix)
    )
  except (OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if a.official_dir:
    for name in SPLIT_FILES:
      if name not in out:
        print(f"{a.prefix}_{name}.json: not in {a.official_dir}, skipped")
  os.makedirs(a.output_dir, exist_ok=True)
  for name, records in out.items():
    path = os.path.join(a.output_dir, f"{a.prefix}_{name}.json")
    with open(path, "w") as f:
      json.dump(records, f)
    print(f"{path}: {len(records)} records")
  return 0


def run():
  """The `x2vlm-refer-to-grounding` console script (x2vlm_jax/cli/__init__.py: launch)."""
  sys.exit(main())
