"""Official annotation files → a sharded ArrayRecord TFDS dataset.

Pre-training JSON-lines shards (docs/reference.md §4.1):
  python tools/build_tfds.py --kind region --input 'gs://bucket/vg/*.json' --data_dir data --name vg_region
Multilingual (CCLM): {lang: caption} records as above (--option languages=en,de,... keeps some), and the
parallel text ({"source_text", "target_text"} lines, e.g. WikiMatrix):
  python tools/build_tfds.py --kind mtext --input 'wikimatrix/*.json' --data_dir data --name wikimatrix
Fine-tuning JSON arrays (docs/reference.md §4.2), images read from --image_root, by the builder of the
task named by --kind (x2vlm_jax.tasks):
  python tools/build_tfds.py --kind retrieval --input coco_train.json --image_root coco/ --data_dir data \
      --name coco_retrieval

Images stay encoded. Bad records are skipped and counted by reason (or, with --strict, the run
stops at the first one naming file and line); boxes dropped inside kept region records are
counted separately, and so are the stored boxes that cannot be a crop anchor (outside the image or
empty on the int box: kept, because the official reader draws them too and then skips that read).
The summary ends with `written: N` and `skipped: M` lines.
"""

import argparse
import json
import sys

from x2vlm_jax import fs, tasks
from x2vlm_jax.data import jsonl, records
from x2vlm_jax.data.annotations import BadRecord


def _records(files, kind, report, strict, **kw):
  convert = jsonl.CONVERTERS[kind]
  for path in files:
    with fs.path(path).open() as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          try:
            rec = json.loads(line)
          except json.JSONDecodeError as e:
            raise BadRecord("bad_json", str(e)) from e
          if not isinstance(rec, dict):
            raise BadRecord("bad_json", f"record is {type(rec).__name__}, expected an object")
          for r in jsonl.split_clips(rec) if kind == "video" else [rec]:
            ex, drops = convert(r, **kw)
            if strict and drops:
              raise BadRecord(sorted(drops)[0], "invalid element box")
            report.boxes_dropped.update(drops)
            if kind == "region":
              report.boxes_not_anchor += sum(
                not records.valid_anchor(b, ex["width"], ex["height"]) for b in ex["boxes"]
              )
            report.written += 1
            yield ex
        except BadRecord as e:
          if strict:
            raise ValueError(f"{path}: record {lineno}: {e}") from None
          report.skipped[e.reason] += 1


def build(
  kind,
  input_glob,
  data_dir,
  name,
  *,
  split="train",
  image_key="binary",
  caption_key=None,
  image_is_path=False,
  image_root="",
  strict=False,
  max_words=40,
  examples_per_shard=2000,
  options=None,
):
  if kind in tasks.data_kinds():
    return tasks.data_builder(kind)(
      input_glob, image_root, data_dir, name, split=split, strict=strict, max_words=max_words, **(options or {})
    )
  files = fs.glob(input_glob)
  if not files:
    raise FileNotFoundError(f"--input {input_glob}: no files match")
  if caption_key is None:
    caption_key = {"image_text": "caption", "region": "caption", "video": "text", "mtext": ""}[kind]
  extra = _pretrain_options(kind, options or {})
  report = records.BuildReport()
  w = records.DatasetWriter(data_dir, name, kind, examples_per_shard)
  w.write_split(
    split,
    _records(
      files,
      kind,
      report,
      strict,
      image_key=image_key,
      caption_key=caption_key,
      image_is_path=image_is_path,
      image_root=image_root,
      max_words=max_words,
      **extra,
    ),
  )
  w.finish()
  return report


def _pretrain_options(kind, options):
  """--option for pre-training kinds: languages=en,de (image_text/region: keep these languages of
  {lang: caption} records, the official `language_chosen`); source_key / target_key (mtext)."""
  allowed = {"image_text": {"languages"}, "region": {"languages"}, "mtext": {"source_key", "target_key"}}
  unknown = sorted(set(options) - allowed.get(kind, set()))
  if unknown:
    raise ValueError(f"--option {unknown}: not an option of --kind {kind} (known: {sorted(allowed.get(kind, ()))})")
  out = dict(options)
  if "languages" in out:
    out["languages"] = [x.strip() for x in out["languages"].split(",") if x.strip()]
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  finetune_kinds = tasks.data_kinds()
  p.add_argument("--kind", required=True, choices=sorted(jsonl.CONVERTERS) + finetune_kinds)
  p.add_argument(
    "--input",
    required=True,
    help="pre-training: glob of JSON-lines shards; fine-tuning: the JSON file (local or gs://)",
  )
  p.add_argument("--data_dir", required=True)
  p.add_argument("--name", required=True)
  p.add_argument("--split", default="train")
  p.add_argument("--image_key", default="binary")
  p.add_argument("--caption_key", default=None, help="default: caption (image/region), text (video)")
  p.add_argument("--image_is_path", action="store_true", help="image_key holds a path, not base64")
  p.add_argument("--image_root", default="")
  p.add_argument(
    "--max_words",
    type=int,
    default=None,
    help="pre_caption word limit for the emptiness check (default 40; fine-tuning 30)",
  )
  p.add_argument("--examples_per_shard", type=int, default=2000)
  p.add_argument("--strict", action="store_true", help="fail at the first bad record")
  p.add_argument(
    "--option",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="a builder's own option, e.g. video_qa: ans2label=train_ans2label.json, "
    "video_pattern=video_{num}.json (MSRVTT) or {id}.json (MSVD); image_text/region: languages=en,de; "
    "mtext: source_key=source_text, target_key=target_text; repeatable",
  )
  args = p.parse_args(argv)
  if args.max_words is None:
    args.max_words = 30 if args.kind in finetune_kinds else 40
  options = dict(o.split("=", 1) for o in args.option)
  try:
    report = build(
      args.kind,
      args.input,
      args.data_dir,
      args.name,
      split=args.split,
      image_key=args.image_key,
      caption_key=args.caption_key,
      image_is_path=args.image_is_path,
      image_root=args.image_root,
      strict=args.strict,
      max_words=args.max_words,
      examples_per_shard=args.examples_per_shard,
      options=options,
    )
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print("\n".join(report.lines(args.kind)))
  return 0


def run():
  """The `x2vlm-build-tfds` console script (x2vlm_jax/cli/__init__.py: launch)."""
  sys.exit(main())
