#!/usr/bin/env python
"""Time the retrieval evaluator (the official two-stage protocol, docs/reference.md §5.1) at a chosen size, with
random weights, and project it to COCO-5K (5,000 images, 25,000 captions, k = 128).

  python tools/benchmark_retrieval.py --model base --res 384 --images 32 --k 16 [--dtype bfloat16]

It writes `--images` random JPEGs and 5 captions each in the official test format, then runs the real
sharded evaluator (`x2vlm_jax/evaluation/retrieval.py`) twice on every local device and reports the
second (compiled) run: encoding, top-k, the two rerank passes, ranks. The rerank cost is linear in
the fused pairs k·(N_img + N_txt) and encoding in N, which is how the projection scales them.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COCO = dict(images=5000, texts=25000, k=128)


def make_dataset(root: str, n: int, per_image: int, seed: int = 0) -> str:
  import numpy as np
  from PIL import Image

  from x2vlm_jax.data import shapes

  rs = np.random.RandomState(seed)
  words = shapes.caption_words()
  records = []
  for i in range(n):
    Image.fromarray(rs.randint(0, 255, (64, 64, 3), np.uint8)).save(os.path.join(root, f"{i}.jpg"))
    caps = [" ".join(rs.choice(words, size=rs.randint(5, 12))) for _ in range(per_image)]
    records.append({"image": f"{i}.jpg", "caption": caps})
  path = os.path.join(root, "test.json")
  with open(path, "w") as f:
    json.dump(records, f)
  return path


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="tiny", choices=["tiny", "base", "large"])
  p.add_argument("--res", type=int, default=None, help="image resolution (default: the preset's)")
  p.add_argument("--images", type=int, default=32)
  p.add_argument("--captions_per_image", type=int, default=5)
  p.add_argument("--k", type=int, default=16)
  p.add_argument("--batch_size", type=int, default=8, help="images/texts per device per encoding call")
  p.add_argument("--rerank_pairs", type=int, default=None, help="fused pairs per device per call (default k)")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--attention", default="xla", choices=["xla", "cudnn"])
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)

  import jax
  import ml_collections
  from flax import nnx

  from x2vlm_jax import sharding as shd
  from x2vlm_jax import tasks
  from x2vlm_jax.data.config import SHAPES_VOCAB
  from x2vlm_jax.models import X2VLM, get_preset

  cfg = get_preset(args.model, dtype=args.dtype, attention_impl=args.attention)
  if args.res:
    cfg.image_res = args.res
  c = ml_collections.ConfigDict({"model": cfg, "data": {"vocab_file": SHAPES_VOCAB}})
  mesh = shd.create_mesh((-1, 1, 1))
  with tempfile.TemporaryDirectory() as root:
    ann = make_dataset(root, args.images, args.captions_per_image)
    e = ml_collections.ConfigDict(
      dict(
        type="retrieval",
        annotations=ann,
        image_root=root,
        k_test=args.k,
        batch_size=args.batch_size,
        rerank_pairs=args.rerank_pairs or args.k,
      )
    )
    ev = tasks.build_evaluator("bench", c, e, mesh)
    with jax.set_mesh(mesh):
      model = X2VLM(cfg, rngs=nnx.Rngs(0))
      graphdef, params = nnx.split(model)
      params = nnx.to_pure_dict(params)
      t0 = time.perf_counter()
      ev(graphdef, params)
      first = time.perf_counter() - t0
      t0 = time.perf_counter()
      m, _ = ev(graphdef, params)
      total = time.perf_counter() - t0

  n_img, n_txt = m["num_images"], m["num_texts"]
  encode, rerank = m["seconds_encode"], m["seconds_rerank_i2t"] + m["seconds_rerank_t2i"]
  per_pair_i2t = m["seconds_rerank_i2t"] / (n_img * min(args.k, n_txt))
  per_pair_t2i = m["seconds_rerank_t2i"] / (n_txt * min(args.k, n_img))
  per_item = encode / (n_img + n_txt)  # images dominate; a conservative split
  proj = (
    COCO["k"] * (COCO["images"] * per_pair_i2t + COCO["texts"] * per_pair_t2i)
    + (COCO["images"] + COCO["texts"]) * per_item
  )
  dev = jax.devices()[0]
  res = dict(
    device=f"{jax.device_count()} x {dev.device_kind}",
    model=args.model,
    image_res=cfg.image_res,
    dtype=args.dtype,
    images=int(n_img),
    texts=int(n_txt),
    k=args.k,
    first_call_s=first,
    total_s=total,
    encode_s=encode,
    topk_s=m["seconds_topk"],
    rerank_i2t_s=m["seconds_rerank_i2t"],
    rerank_t2i_s=m["seconds_rerank_t2i"],
    ranks_s=m["seconds_ranks"],
    pairs_per_s=m["pairs_fused"] / max(rerank, 1e-9),
    i2t_ms_per_pair=1e3 * per_pair_i2t,
    t2i_ms_per_pair=1e3 * per_pair_t2i,
    coco5k_projection_min=proj / 60.0,
  )
  for k, v in res.items():
    print(f"{k:<22s} {v:.4g}" if isinstance(v, float) else f"{k:<22s} {v}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(res, f, indent=2)


if __name__ == "__main__":
  main()
