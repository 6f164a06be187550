"""Video QA on MSVD-QA (1,000 answers), docs/reference.md §5.6: as msrvtt_qa.py (same code path and choices), with
MSVD's frame files `<id>.json` (official VQA_msvd.py)."""

from x2vlm_jax.configs.finetune import common, msrvtt_qa


def get_config(arg=None):
  a = common.parse_arg(arg, model="base", res=224, frames=5, batch=64, root="gs://YOUR_BUCKET/msvd")
  return msrvtt_qa.get_config(
    f"model={a.model},res={a.res},frames={a.frames},batch={a.batch},labels=1000,"
    f"dataset=msvd_qa,pattern={{id}}.json,root={a.root}"
  )
