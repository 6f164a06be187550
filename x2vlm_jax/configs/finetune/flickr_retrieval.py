"""Image–text retrieval on Flickr30K (1K test), docs/reference.md §5.1: as COCO with X-VLM's
`configs/Retrieval_flickr.yaml` [x-vlm] — identical except k_test 128."""

from x2vlm_jax.configs.finetune import coco_retrieval, common


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="base",
    res=384,
    gpus=8,
    per_gpu=20,
    annotations="gs://YOUR_BUCKET/finetune/flickr30k_test.json",
    image_root="gs://YOUR_BUCKET/flickr30k",
  )
  return coco_retrieval.get_config(
    f"model={a.model},res={a.res},gpus={a.gpus},per_gpu={a.per_gpu},k_test=128,"
    f"dataset=flickr30k,annotations={a.annotations},image_root={a.image_root}"
  )
