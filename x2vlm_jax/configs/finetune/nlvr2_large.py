"""NLVR2 with the large model: nlvr2_base.py's X-VLM hyper-parameters [x-vlm] on the large geometry
(X²-VLM released no NLVR2 config, github.com/zengyan-97/X2-VLM/issues/14; X-VLM has no large model either)."""

from x2vlm_jax.configs.finetune import common, nlvr2_base


def get_config(arg=None):
  a = common.parse_arg(arg, res=384, gpus=8, per_gpu=10)
  return nlvr2_base.get_config(f"model=large,res={a.res},gpus={a.gpus},per_gpu={a.per_gpu}")
