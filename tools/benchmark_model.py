"""Latency / throughput of the inference API on the current device (a benchmark, not a test).

  python tools/benchmark_model.py --model base --batch 32 [--dtype bfloat16] [--attention cudnn]

Random weights (speed does not depend on them). Reports per-call latency (median of --iters timed calls
after warm-up, each blocked until ready) and examples/s for encode_image, encode_text and itm_logits.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
  from x2vlm_jax import console

  console.quiet()  # before jax/tensorflow load: expected CPU-machine noise off, warnings and errors kept

import jax  # noqa: E402
import numpy as np  # noqa: E402

from x2vlm_jax import inference  # noqa: E402
from x2vlm_jax.models import get_preset  # noqa: E402


def _time(fn, iters):
  jax.block_until_ready(fn())  # compile + warm-up
  jax.block_until_ready(fn())
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True, choices=["tiny", "base", "large"])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--text_len", type=int, default=40)
  p.add_argument("--image_res", type=int, default=None)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--attention", default="xla", choices=["xla", "cudnn"])
  p.add_argument("--iters", type=int, default=5)
  p.add_argument("--json", default=None, help="also write the results here")
  args = p.parse_args(argv)

  overrides = dict(dtype=args.dtype, attention_impl=args.attention)
  if args.image_res:
    overrides["image_res"] = args.image_res
  cfg = get_preset(args.model, **overrides)
  m = inference.from_params(cfg)
  rs = np.random.RandomState(0)
  b, r, length = args.batch, cfg.image_res, min(args.text_len, cfg.text.max_positions)
  images = jax.device_put(rs.randn(b, r, r, 3).astype(np.float32))
  ids = rs.randint(1, cfg.text.vocab_size, size=(b, length)).astype(np.int32)
  mask = np.ones((b, length), np.int32)
  image_embeds, _ = m.encode_image(images)
  text_embeds, _ = m.encode_text(ids, mask)
  cases = {
    "encode_image": lambda: m.encode_image(images),
    "encode_text": lambda: m.encode_text(ids, mask),
    "itm_logits": lambda: m.itm_logits(image_embeds, None, text_embeds, mask),
  }
  device = jax.devices()[0]
  print(
    f"device: {device.device_kind} ({jax.default_backend()}), model {args.model}, batch {b}, "
    f"image {r}px, text {length} tokens, dtype {args.dtype}, attention {args.attention}, "
    f"params {m.num_params:,d}"
  )
  results = {}
  for name, fn in cases.items():
    t = _time(fn, args.iters)
    results[name] = dict(latency_ms=1e3 * t, examples_per_s=b / t)
    print(f"{name:<14s} latency {1e3 * t:9.2f} ms/call   throughput {b / t:9.1f} examples/s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(
        dict(
          device=device.device_kind,
          backend=jax.default_backend(),
          model=args.model,
          batch=b,
          dtype=args.dtype,
          attention=args.attention,
          results=results,
        ),
        f,
        indent=2,
      )


if __name__ == "__main__":
  main()
