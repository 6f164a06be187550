"""RefCOCO+ grounding with the base model. X²-VLM released only the large config; this applies that
recipe (refcoco_grounding_large.py [code]: 384 px, lr 1e-5, text/cross drop-path 0.1, batch 20 per GPU,
10 epochs) to the base geometry — our choice. X-VLM's base recipe [x-vlm] (Grounding_bbox.yaml) differs
in lr 3e-5 and no drop-path: `:lr=3e-5,drop_path=0.0`."""

from x2vlm_jax.configs.finetune import common, refcoco_grounding_large


def get_config(arg=None):
  a = common.parse_arg(arg, res=384, gpus=8, per_gpu=20, lr=1e-5, drop_path=0.1)
  return refcoco_grounding_large.get_config(
    f"model=base,res={a.res},gpus={a.gpus},per_gpu={a.per_gpu},lr={a.lr},drop_path={a.drop_path}"
  )
