"""Multilingual image–text retrieval (official XRetrieval.py / WIT.py, docs/reference.md §5.7): xFlickr&CO
(IGLUE), Multi30K, multilingual COCO, WIT; per-language R@k, their mean (`xretrieval/r_mean`, the official selection)
and the IGLUE mean over non-English languages (`r_mean_non_en`).

Hyper-parameters: CCLM's configs/cclm-base-ft/xFlickrCO.yaml (xflickrco: 8 pairs per GPU, max_tokens
80, captions cut at 80 words by its reader) and Retrieval_multi30k_*_ft.yaml / Retrieval_coco_*_ft.yaml
(20 per GPU, max_tokens 40), WIT.yaml (8 per GPU, max_tokens 80, 5 epochs; files from
tools/wit_to_retrieval.py); all: 384 px, AdamW lr 3e-5, wd 0.01, lr_mult 2, 10 epochs unless said, 10%
warm-up, k_test 128. 8 GPUs assumed (global batch = 8 × per GPU).

  python tools/build_tfds.py --kind xretrieval --input iglue/datasets/flickr30k/annotations/train_ann.jsonl \
      --image_root images/flickr30k-images --data_dir gs://bucket/tfds --name xflickrco_en
  python main.py --config=configs/finetune/xretrieval.py:dataset=xflickrco,mode=zero_shot --workdir=... \
      --config.init_from=ckpt/cclm_base_384 --config.data.vocab_file=ckpt/cclm_base_384/sentencepiece.bpe.model
"""

from x2vlm_jax.configs.finetune import common, multilingual

# per GPU, max_tokens, pre_caption words, epochs
PER_DATASET = {
  "xflickrco": (8, 80, 80, 10),
  "multi30k": (20, 40, 30, 10),
  "coco": (20, 40, 30, 10),
  "wit": (8, 80, 80, 5),
}


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    model="cclm_base",
    res=384,
    gpus=8,
    dataset="xflickrco",
    mode="zero_shot",
    test="gs://YOUR_BUCKET/iglue/xFlickrCO/annotations/{lang}/test.jsonl",
    image_root="gs://YOUR_BUCKET/flickr30k-images",
    coco_image_root="gs://YOUR_BUCKET/coco/val2014",
  )
  per_gpu, max_tokens, max_words, epochs = PER_DATASET[a.dataset]
  languages = multilingual.LANGUAGES[a.dataset]
  c = common.base_config(a.model, "xretrieval", a.res, a.gpus * per_gpu)
  c.data.vocab_file = "gs://YOUR_BUCKET/xlm-roberta-base/sentencepiece.bpe.model"
  c.data.train = multilingual.train_sets(a.dataset, a.mode, languages)
  c.data.max_tokens = max_tokens
  c.data.max_words = max_words
  c.itm_group_size = per_gpu  # hard negatives from each GPU's own batch, as officially
  c.num_epochs = epochs
  c.optim.lr = 3e-5
  c.optim.lr_mult = 2.0
  c.evals.xretrieval = dict(
    type="xretrieval",
    annotations=multilingual.test_files(a.test, languages),
    languages=",".join(languages),
    image_root=a.image_root,
    coco_image_root=a.coco_image_root,
    k_test=128,
    max_tokens=max_tokens,
    max_words=max_words,
    batch_size=12,  # official batch_size_test
    rerank_pairs=128,
    every=0,
    at_end=True,
  )
  c.best_metric = "xretrieval/r_mean"  # XRetrieval.py keeps the best mean test r_mean over languages
  return c
