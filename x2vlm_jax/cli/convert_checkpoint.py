"""Convert official PyTorch weights into our on-disk format (params_io: Orbax params + model_config.json).

Released X²-VLM checkpoint (strict; rel-pos tables resized when --image_res differs):
  tools/convert_checkpoint.py --input x2vlm_base_4m.th --model base [--image_res 384] --output ckpt/base_384

A fine-tuned task file (retrieval, grounding, NLVR2, VQA, captioning, video QA) converts the same way,
with no flags: the official class that wrote it is read from its keys (x2vlm_jax/convert/task_heads.py),
its task head sets the model config (NLVR2 `cls_head`, the classifier's label count, the VQA answer
decoder's depth) and the pre-training heads that class does not have stay freshly initialised:
  tools/convert_checkpoint.py --input x2vlm_base_1b_vqa.th --model base --output ckpt/base_vqa

Pre-training initialisation from BEiT-v2 + BERT (everything else freshly initialised, seed --seed):
  tools/convert_checkpoint.py --beit beitv2_base_patch16_224_pt1k_ft21k.pth --bert bert-base-uncased/
                              --model base --output ckpt/base_init

Multilingual (CCLM, docs/reference.md §1.8): an official CrossViewLM checkpoint converts with --input and a
cclm_* preset, and so do its task files (XRetrieval/WIT, XVNLI, MARVL, XGQA), their heads read the same way;
stage 1 of the multilingual recipe starts from an English X²-VLM checkpoint whose fusion
layers become the cross encoder, with XLM-R (HF files) as the text encoder:
  tools/convert_checkpoint.py --cclm_init x2vlm_base_4m.th --xlmr xlm-roberta-base/ --model cclm_base \
      --output ckpt/cclm_base_init

Also writes DIR/conversion.json: source files, resized tables, new (freshly initialised) params.
Pickled checkpoints are opened with torch.load(weights_only=True): loading cannot execute code.
"""

import argparse
import json
import os
import sys
import time

from x2vlm_jax import fs


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  src = p.add_argument_group("source (either --input, or --beit and --bert, or --cclm_init and --xlmr)")
  src.add_argument("--input", help="official X²-VLM checkpoint (.th/.pth/.bin/.npz/.safetensors)")
  src.add_argument("--beit", help="BEiT-v2 checkpoint for the vision tower (init mode)")
  src.add_argument("--bert", help="HF BERT pytorch_model.bin / model.safetensors / model directory (init mode)")
  src.add_argument("--cclm_init", help="English X²-VLM checkpoint whose fusion layers become the cross encoder")
  src.add_argument("--xlmr", help="HF XLM-R pytorch_model.bin / model.safetensors / model directory (--cclm_init)")
  p.add_argument("--model", required=True, choices=["tiny", "base", "large", "cclm_tiny", "cclm_base", "cclm_large"])
  p.add_argument(
    "--xvlm_text_layers",
    type=int,
    default=12,
    help="--cclm_init: text-only layers of the English checkpoint (xvlm_ckpt_text_num_hidden_layers)",
  )
  p.add_argument(
    "--image_res",
    type=int,
    default=None,
    help="target resolution; default: the checkpoint's (from its rel-pos tables), 224 in init mode",
  )
  p.add_argument(
    "--num_frames",
    type=int,
    default=None,
    help="frame embeddings; default: the checkpoint's absolute_frame_pos_embed count, else 0",
  )
  p.add_argument("--output", required=True)
  p.add_argument(
    "--vocab",
    default=None,
    help="the WordPiece vocab.txt to store with the weights (bert-base-uncased's for the released "
    "models), so the directory carries its tokenizer; init mode: default the --bert "
    "directory's vocab.txt when it has one",
  )
  p.add_argument("--seed", type=int, default=0, help="seed of the fresh initialisation of new params")
  p.add_argument(
    "--allow_missing",
    action="append",
    default=[],
    metavar="PATH_PREFIX",
    help="our param path prefix that may be absent and stays freshly initialised "
    "(e.g. text/mlm for a fine-tuned BertModel-layout file); repeatable",
  )
  p.add_argument(
    "--ignore",
    action="append",
    default=[],
    metavar="KEY_PREFIX",
    help="official key prefix to drop (e.g. cls_head. of an NLVR2 file); repeatable",
  )
  args = p.parse_args(argv)
  modes = [bool(args.input), bool(args.beit or args.bert), bool(args.cclm_init or args.xlmr)]
  if sum(modes) != 1:
    p.error("give either --input, or --beit and --bert, or --cclm_init and --xlmr")
  if modes[1] and not (args.beit and args.bert):
    p.error("init mode needs both --beit and --bert")
  if modes[2] and not (args.cclm_init and args.xlmr):
    p.error("CCLM init needs both --cclm_init and --xlmr")
  if modes[2] and not args.model.startswith("cclm_"):
    p.error("CCLM init needs a cclm_* --model")
  return args


def main(argv=None) -> int:
  args = _parse(argv)
  from absl import logging

  from x2vlm_jax import params_io
  from x2vlm_jax.convert import assemble, init_weights, task_heads, x2vlm
  from x2vlm_jax.convert.state_dict import read_state_dict
  from x2vlm_jax.models import get_preset

  patch = get_preset(args.model).patch_size
  t0 = time.time()
  if args.input:
    logging.info("reading %s", args.input)
    sd = read_state_dict(args.input)
    logging.info("read %d tensors in %.0f s", len(sd), time.time() - t0)
    grid = x2vlm.checkpoint_grid(sd)
    image_res = args.image_res or (grid * patch if grid else get_preset(args.model).image_res)
    num_frames = x2vlm.checkpoint_num_frames(sd) if args.num_frames is None else args.num_frames
    cfg = get_preset(args.model, image_res=image_res, num_frames=num_frames)
    # The official class that wrote the file (its keys say): its task heads set the model config, and the
    # pre-training heads it does not have stay freshly initialised (listed as new_params).
    # The same for the X²-VLM-Plus classes of the multilingual release into a cclm_* model.
    detected = task_heads.detect(sd, cfg.text.hidden, xlmr=cfg.get("text_encoder", "bert") == "xlmr")
    if detected:
      task_heads.apply(cfg, detected)
      logging.info("official %s checkpoint: %s; heads %s", detected.task, detected.cls, detected.heads)
    else:
      cfg.heads.decoder_layers = x2vlm.checkpoint_decoder_layers(sd)
    flat, report = x2vlm.convert_official(
      sd,
      cfg,
      allow_missing=list(detected.absent if detected else ()) + args.allow_missing,
      ignore_prefixes=args.ignore,
      fresh=lambda: assemble.fresh_flat(cfg, args.seed),
    )
    report["source"] = {"input": os.path.abspath(args.input), "checkpoint_image_res": grid * patch if grid else None}
    report["official_task"] = (
      {"task": detected.task, "class": detected.cls, "heads": detected.heads, "absent": list(detected.absent)}
      if detected
      else None
    )
  elif args.cclm_init:
    from x2vlm_jax.convert import cclm_init

    x2 = read_state_dict(args.cclm_init)
    grid = x2vlm.checkpoint_grid(x2)
    image_res = args.image_res or (grid * patch if grid else get_preset(args.model).image_res)
    num_frames = x2vlm.checkpoint_num_frames(x2) if args.num_frames is None else args.num_frames
    cfg = get_preset(args.model, image_res=image_res, num_frames=num_frames)
    flat, report = cclm_init.init_cclm(
      x2,
      read_state_dict(args.xlmr),
      cfg,
      lambda: assemble.fresh_flat(cfg, args.seed),
      num_text_layers=args.xvlm_text_layers,
    )
    report["source"] = {"cclm_init": os.path.abspath(args.cclm_init), "xlmr": os.path.abspath(args.xlmr)}
  else:
    beit = read_state_dict(args.beit)
    bert = read_state_dict(args.bert)
    image_res = args.image_res or get_preset(args.model).image_res
    cfg = get_preset(args.model, image_res=image_res, num_frames=args.num_frames or 0)
    flat, report = init_weights.init_from_pretrained(beit, bert, cfg, lambda: assemble.fresh_flat(cfg, args.seed))
    report["source"] = {"beit": os.path.abspath(args.beit), "bert": os.path.abspath(args.bert)}
  report.update(model=args.model, image_res=cfg.image_res, num_frames=cfg.num_frames, seed=args.seed)

  vocab = args.vocab
  if vocab is None and args.bert and os.path.isdir(args.bert) and os.path.exists(os.path.join(args.bert, "vocab.txt")):
    vocab = os.path.join(args.bert, "vocab.txt")
  report["vocab"] = os.path.abspath(vocab) if vocab else None
  t1 = time.time()
  params_io.save(args.output, cfg, assemble.unflatten(cfg, flat), vocab_file=vocab)
  logging.info("saved %s in %.0f s (%.0f s in all)", args.output, time.time() - t1, time.time() - t0)
  (fs.path(args.output) / "conversion.json").write_text(json.dumps(report, indent=2, sort_keys=True))
  print(
    f"wrote {args.output}: preset {args.model}, image_res {cfg.image_res}, num_frames {cfg.num_frames}, "
    + (f"official {report['official_task']['task']} file, " if report.get("official_task") else "")
    + f"{len(report['resized_tables'])} tables resized, {len(report['new_params'])} new params"
    + ("" if vocab else "; no vocabulary stored (pass --vocab for tokenize()/tools/evaluate.py)")
  )
  return 0


def run():
  """The `x2vlm-convert` console script (x2vlm_jax/cli/__init__.py: launch)."""
  try:
    sys.exit(main())
  except ValueError as e:  # ConversionError and bad-input errors: one clear message, no traceback
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
