"""Evaluate a checkpoint on an official annotation file: the paper's protocol, no dataset build.

  python tools/evaluate.py --task retrieval --checkpoint ckpt/coco_384 \
      --annotations coco_test.json --image_root coco/images --output out/coco_test [--config.k_test=128]
  python tools/evaluate.py --task nlvr2 --checkpoint ckpt/nlvr2 --annotations dev.json,test1.json \
      --config.splits=dev,test --image_root nlvr2/images --output out/nlvr2
  python tools/evaluate.py --task grounding --checkpoint ckpt/refcoco \
      --annotations refcoco+_val.json,refcoco+_test.json --image_root coco/train2014 \
      --output out/refcoco     # files from tools/refer_to_grounding.py
  python tools/evaluate.py --task vqa --checkpoint ckpt/vqa_base --annotations vqa_test.json \
      --image_root coco/images --config.answer_list=answer_list.json --output out/vqa   # or --config.mode=generate
  python tools/evaluate.py --task captioning --checkpoint ckpt/caption_large --annotations coco_karpathy_test.json \
      --image_root coco/images --config.gt_file=coco_karpathy_test_gt.json --output out/caption
  # multilingual (docs/multilingual.md): one file per language, per-language metrics and their means
  python tools/evaluate.py --task xretrieval --checkpoint ckpt/cclm --annotations de/test.jsonl,ja/test.jsonl \
      --config.languages=de,ja --image_root flickr30k-images --config.coco_image_root=val2014 --output out/xfc
  (also --task xvnli, xgqa --config.answer_list=trainval_ans2label.json, marvl)

Writes OUT/metrics.json, OUT/eval_config.json (the evaluation's settings: which checkpoint and step, VQA's
mode, max_tokens, ...) and OUT/predictions.json where the task has predictions. The checkpoint is a
directory from tools/convert_checkpoint.py, a run's export (its vocab.txt is used unless --vocab), or a
training workdir that never exported (`--max_steps`, preempted): its newest checkpoint, or `--step N`.
When the checkpoint belongs to a run (a workdir, or WORKDIR/export*), the evaluation's defaults are that
run's own evaluation of the same type (config.json `evals`, e.g. its max_tokens), then --config.* overrides.
`--config.KEY=VALUE` sets a field of the evaluation (k_test, batch_size, ...; see `--help_config`) or
of the run (`--config.mesh=1,4,1`, `--config.model.dtype=bfloat16`). Multi-host: the same flags as
main.py (--coordinator_address/--num_processes/--process_id, or --distributed on TPU pods).
"""

import argparse
import ast
import difflib
import json
import sys
import time


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--task", required=True, help="a task with an evaluation of its own (retrieval, vqa, ...)")
  p.add_argument(
    "--checkpoint", required=True, help="params directory (convert_checkpoint output or export) or a training workdir"
  )
  p.add_argument(
    "--step", type=int, default=None, help="with a training workdir: this checkpoint step (default newest)"
  )
  p.add_argument(
    "--annotations",
    default="",
    help="the official annotation file (local or gs://); nlvr2/grounding: several, comma-separated "
    "(names: --config.splits=dev,test, else the file stems or the records' `split`)",
  )
  p.add_argument("--image_root", default="", help="directory the annotation's image paths are relative to")
  p.add_argument("--output", default="", help="directory for metrics.json / predictions.json (required)")
  p.add_argument(
    "--vocab", default="", help="WordPiece vocab.txt or SentencePiece *.model (default: the checkpoint's own)"
  )
  p.add_argument("--help_config", action="store_true", help="print the evaluation config and exit")
  p.add_argument("--coordinator_address", default=None)
  p.add_argument("--num_processes", type=int, default=None)
  p.add_argument("--process_id", type=int, default=None)
  p.add_argument("--distributed", action="store_true")
  args, rest = p.parse_known_args(argv)
  overrides = []
  for item in rest:
    if not item.startswith("--config.") or "=" not in item:
      p.error(f"unrecognised argument {item!r} (overrides are --config.KEY=VALUE)")
    key, value = item[len("--config.") :].split("=", 1)
    overrides.append((key, value))
  from x2vlm_jax import tasks

  if args.task not in tasks.evaluation_names():
    p.error(f"--task {args.task!r}: unknown task; known tasks: {', '.join(tasks.evaluation_names())}")
  if not args.help_config:
    missing = [f"--{name}" for name in ("annotations", "output") if not getattr(args, name)]
    if missing:
      p.error(f"the following arguments are required: {', '.join(missing)}")
  return args, overrides


def _coerce(old, value: str):
  if isinstance(old, bool):
    if value.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"expected true/false, got {value!r}")
    return value.lower() in ("true", "1")
  if isinstance(old, (tuple, list)):
    parsed = ast.literal_eval(value if value.strip().startswith(("(", "[")) else f"({value},)")
    return type(old)(parsed)
  return type(old)(value) if old is not None else ast.literal_eval(value)


def apply_overrides(config, overrides):
  """--config.a.b=v on the run config; a bare key that only the evaluation has goes to `eval`."""
  for key, value in overrides:
    parts = key.split(".")
    node = config
    if parts[0] not in config and parts[0] in config.eval:
      node = config.eval
    elif len(parts) == 1 and parts[0] not in config:
      known = sorted(config.eval.keys())
      close = difflib.get_close_matches(parts[0], known + sorted(config.keys()), n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise ValueError(f"--config.{key}: unknown field{hint}; the evaluation's fields: {known}")
    for part in parts[:-1]:
      if part not in node:
        raise ValueError(f"--config.{key}: unknown field {part!r}")
      node = node[part]
    if parts[-1] not in node:
      raise ValueError(f"--config.{key}: unknown field; known: {sorted(node.keys())}")
    try:
      node[parts[-1]] = _coerce(node[parts[-1]], value)
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"--config.{key}={value}: {e}") from None


def check_heads(checkpoint: str, model_cfg, evaluator, task: str) -> None:
  """The heads the evaluation reads exist in the checkpoint and came from its source: a head the model
  config does not build, or one tools/convert_checkpoint.py left freshly initialised (the official file
  had none: a checkpoint of another task), is an error naming it, not random-weight metrics."""
  from x2vlm_jax import fs
  from x2vlm_jax.evaluation.base import fresh_heads, missing_heads

  absent = missing_heads(model_cfg, evaluator.HEADS)
  if absent:
    raise ValueError(f"--task {task}: the checkpoint {checkpoint} lacks {'; '.join(absent)}")
  record = fs.path(checkpoint) / "conversion.json"
  if not record.exists():
    return
  conversion = json.loads(record.read_text())
  fresh = fresh_heads(conversion.get("new_params", []), evaluator.HEADS)
  if fresh:
    source = conversion.get("official_task") or {}
    what = f"an official {source['task']} file ({source['class']})" if source else "its source"
    raise ValueError(
      f"--task {task}: the checkpoint {checkpoint} was converted from {what}, which has no {', '.join(fresh)}: "
      "those parameters are freshly initialised (conversion.json new_params); use a checkpoint trained on this task"
    )


def checkpoint_source(args) -> str:
  """--checkpoint [--step]: an export / converted directory, WORKDIR or WORKDIR@STEP."""
  from x2vlm_jax import run_dir

  if args.step is None:
    return args.checkpoint
  if not run_dir.is_run(args.checkpoint):
    raise ValueError(f"--step {args.step}: --checkpoint {args.checkpoint} is not a training workdir")
  return f"{args.checkpoint}@{args.step}"


def run_eval_defaults(checkpoint: str, kind: str, defaults):
  """The evaluation of type `kind` in the config of the run the checkpoint belongs to (a workdir, or
  the workdir around WORKDIR/export*) → ({field: value} for the evaluator's own fields, where from)."""
  from x2vlm_jax import fs, run_dir

  path = run_dir.parse(checkpoint)[0]
  for candidate in (path, str(fs.path(path).parent)):
    if not run_dir.is_run(candidate):
      continue
    evals = run_dir.run_config(candidate).get("evals") or {}
    for name in sorted(evals):
      if evals[name].get("type") != kind:
        continue
      fields = {}
      for k, v in evals[name].items():
        if k in defaults and k not in ("annotations", "image_root", "type"):
          fields[k] = tuple(v) if isinstance(defaults[k], tuple) and isinstance(v, list) else v
      return fields, f"{candidate}/config.json evals.{name}"
  return {}, None


def build_config(args, overrides):
  import ml_collections

  from x2vlm_jax import params_io, tasks
  from x2vlm_jax.sharding import DEFAULT_RULES

  source = checkpoint_source(args)
  c = ml_collections.ConfigDict()
  c.model = params_io.load_config(source)
  c.mesh = (-1, 1, 1)
  c.sharding_rules = [list(r) for r in DEFAULT_RULES]
  c.data = ml_collections.ConfigDict({"vocab_file": args.vocab or params_io.vocab_file(source) or ""})
  kind, fields = tasks.evaluation(args.task)  # e.g. video_retrieval: the retrieval protocol on frames files
  defaults = tasks.evaluator_class(kind).DEFAULTS
  from_run, where = run_eval_defaults(source, kind, defaults)
  if where:
    print(f"evaluation defaults from {where}: {from_run}")
  c.eval = ml_collections.ConfigDict(
    {**defaults, **from_run, "annotations": args.annotations, "image_root": args.image_root, "type": kind, **fields}
  )
  c.checkpoint = source
  apply_overrides(c, overrides)
  check_heads(args.checkpoint, c.model, tasks.evaluator_class(kind), args.task)
  if not c.data.vocab_file:
    raise ValueError(
      f"--checkpoint {args.checkpoint}: no vocab.txt in it; pass --vocab FILE (e.g. bert-base-uncased's vocab.txt)"
    )
  return c


def main(argv=None) -> int:
  args, overrides = _parse(argv)
  import jax

  if args.coordinator_address or args.distributed:
    jax.distributed.initialize(
      coordinator_address=args.coordinator_address, num_processes=args.num_processes, process_id=args.process_id
    )
  from etils import epath
  from flax import nnx

  from x2vlm_jax import params_io, run_dir, tasks
  from x2vlm_jax import sharding as shd

  try:
    config = build_config(args, overrides)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.help_config:
    print(config)
    return 0
  mesh = shd.create_mesh(config.mesh)
  t0 = time.time()
  with jax.set_mesh(mesh):
    abstract_model = params_io.abstract_model(config.model)
    shardings = shd.named(mesh, shd.param_specs(abstract_model, [tuple(r) for r in config.sharding_rules], mesh))
    _, params = params_io.load(config.checkpoint, config.model, sharding=shardings)
    graphdef = nnx.graphdef(abstract_model)
    evaluator = tasks.build_evaluator(config.eval.type, config, config.eval, mesh)
    try:
      metrics, predictions = evaluator(graphdef, params)
    except ValueError as e:  # bad annotations / images, with the file and record named
      print(f"error: {e}", file=sys.stderr)
      return 2
  metrics["eval_seconds"] = time.time() - t0
  if jax.process_index() == 0:
    out = epath.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    record = {"task": args.task, "checkpoint": config.checkpoint, "vocab": config.data.vocab_file}
    if run_dir.is_run(config.checkpoint):
      record["step"] = run_dir.step_of(config.checkpoint)
    record["eval"] = config.eval.to_dict()
    (out / "eval_config.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    if predictions is not None:
      (out / "predictions.json").write_text(json.dumps(predictions))
    for k, v in sorted(metrics.items()):
      print(f"{k:<24s} {v:10.4f}")
    print(f"wrote {out / 'metrics.json'}")
  return 0


def run():
  """The `x2vlm-evaluate` console script (x2vlm_jax/cli/__init__.py: launch)."""
  sys.exit(main())
