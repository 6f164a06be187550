"""Decoding throughput on the current device (a benchmark, not a test; random weights).

  python tools/benchmark_decoding.py --model base --batch 4 --max_len 20

Reports, each as the median of --iters timed calls after compile + warm-up:
  caption_cache     captions/s of the MLM-caption beam search (docs/reference.md §5.5) with the KV cache
  caption_nocache   the same search recomputing the whole fixed-length sequence every step
  vqa_rank          questions/s of answer-list ranking (docs/reference.md §5.2, k of --num_answers candidates)
  vqa_loss_fold     VQA loss forward+backward with the question memory shared by its answers
  vqa_loss_repeat   the same with the memory materialised once per answer (the official repeat)
Captioning starts from precomputed image tokens (the vision tower is not timed). [SEP] is forbidden
for all --max_len steps by default (--min_length = --max_len) so that random weights cannot end the
search early: every call runs exactly max_len steps, for both variants.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
  from x2vlm_jax import console

  console.quiet()  # before jax/tensorflow load: expected CPU-machine noise off, warnings and errors kept

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from benchmark_model import _time  # noqa: E402  (tools/ is sys.path[0] when run as a script)
from flax import nnx  # noqa: E402

from x2vlm_jax.inference import decoding  # noqa: E402
from x2vlm_jax.models import X2VLM, get_preset  # noqa: E402

PROMPT = (101, 1037, 3861, 1997)  # [CLS] a picture of (bert-base-uncased ids)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True, choices=["tiny", "base", "large"])
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--beams", type=int, default=3)
  p.add_argument("--max_len", type=int, default=20)
  p.add_argument("--min_length", type=int, default=None, help="default: max_len (fixed step count)")
  p.add_argument("--image_res", type=int, default=None)
  p.add_argument("--question_len", type=int, default=16)
  p.add_argument("--num_answers", type=int, default=3128)
  p.add_argument("--answer_len", type=int, default=6)
  p.add_argument("--k", type=int, default=128)
  p.add_argument("--answers_per_question", type=int, default=4)
  p.add_argument("--iters", type=int, default=3)
  p.add_argument("--skip", default="", help="comma-separated case names to skip")
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)

  overrides = {"image_res": args.image_res} if args.image_res else {}
  cfg = get_preset(args.model, **overrides)
  # The released VQA decoder has 6 layers; the tiny stack has a single fusion layer to copy.
  cfg.heads.decoder_layers = cfg.text.num_layers - cfg.text.fusion_start
  model = X2VLM(cfg, rngs=nnx.Rngs(0))
  v = cfg.text.vocab_size
  rs = np.random.RandomState(0)
  b = args.batch
  n_tok = (cfg.image_res // cfg.patch_size) ** 2 + 1
  image = jnp.asarray(rs.randn(b, n_tok, cfg.vision.width).astype(np.float32))
  prompt = PROMPT if v > max(PROMPT) else (2, 20, 21, 22)
  min_length = args.max_len if args.min_length is None else args.min_length
  special = dict(mask_id=103 if v > 103 else 4, eos_id=102 if v > 102 else 3)

  q = rs.randint(1000 if v > 1000 else 5, v, size=(b, args.question_len)).astype(np.int32)
  qm = np.ones_like(q)
  memory = nnx.jit(lambda m, q, qm, im: m.vqa_memory(q, qm, im))(model, q, qm, image)
  na, la = args.num_answers, args.answer_len
  answers = rs.randint(1000 if v > 1000 else 5, v, size=(na, la)).astype(np.int32)
  answers[:, 0] = 101 if v > 101 else 2
  lengths = rs.randint(3, la + 1, size=na)
  answers[np.arange(la)[None] >= lengths[:, None]] = 0
  answers[np.arange(na), lengths - 1] = special["eos_id"]
  amask = (answers > 0).astype(np.int32)
  a = args.answers_per_question
  pick = rs.randint(0, na, size=(b, a))
  train_ids, train_mask = jnp.asarray(answers[pick]), jnp.asarray(amask[pick])
  weights = jnp.asarray(rs.rand(b, a).astype(np.float32))

  def caption(use_cache):
    return lambda: (
      decoding.generate_captions(
        model,
        image,
        prompt_ids=prompt,
        num_beams=args.beams,
        max_len=args.max_len,
        min_length=min_length,
        use_cache=use_cache,
        **special,
      ).tokens
    )

  @nnx.jit
  def loss_fold(model, memory):
    return nnx.grad(lambda m: m.vqa_loss(train_ids, train_mask, weights, memory, qm))(model)

  @nnx.jit
  def loss_repeat(model, memory):
    def f(m):
      rep, rep_mask = jnp.repeat(memory, a, 0), jnp.repeat(jnp.asarray(qm), a, 0)
      nll = m.decoder.answer_nll(train_ids.reshape(b * a, la), train_mask.reshape(b * a, la), rep, rep_mask)
      return jnp.sum(weights * nll.reshape(b, a)) / b

    return nnx.grad(f)(model)

  k = min(args.k, na)
  cases = {
    "caption_cache": (caption(True), b, "captions/s"),
    "caption_nocache": (caption(False), b, "captions/s"),
    "vqa_rank": (lambda: decoding.rank_answers_jit(model, memory, qm, answers, amask, k=k)[0], b, "questions/s"),
    "vqa_loss_fold": (lambda: loss_fold(model, memory), b, "questions/s"),
    "vqa_loss_repeat": (lambda: loss_repeat(model, memory), b, "questions/s"),
  }
  device = jax.devices()[0]
  print(
    f"device: {device.device_kind} ({jax.default_backend()}), model {args.model}, batch {b}, "
    f"image tokens {n_tok}, caption beams {args.beams} x {args.max_len} steps (prompt {len(prompt)}), "
    f"decoder layers {cfg.heads.decoder_layers}, answers {na} x {la} (k {k}), {a} answers/question"
  )
  results = {}
  for name, (fn, n, unit) in cases.items():
    if name in args.skip.split(","):
      continue
    sec = _time(fn, args.iters)
    results[name] = {"latency_s": sec, unit: n / sec}
    print(f"{name:<16s} {sec * 1e3:10.1f} ms/call   {n / sec:10.2f} {unit}")
  if "caption_cache" in results and "caption_nocache" in results:
    print(f"KV cache speed-up: {results['caption_nocache']['latency_s'] / results['caption_cache']['latency_s']:.2f}x")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(
        dict(device=device.device_kind, backend=jax.default_backend(), args=vars(args), results=results), f, indent=2
      )


if __name__ == "__main__":
  main()
