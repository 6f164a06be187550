"""Shared pieces of the multilingual fine-tuning configs (xretrieval, xvnli, xgqa, marvl).

X²-VLM released the scripts (XRetrieval.py, XVNLI.py, XGQA.py, MARVL.py, WIT.py) but no fine-tuning
config for them; their configs are CCLM's (github.com/zengyan-97/CCLM, configs/cclm-base-ft/*.yaml, the
same scripts' ancestors), from which each file takes its hyper-parameters. The model is the multilingual
preset (`cclm_base` / `cclm_large`: XLM-R text encoder + cross encoder, docs/multilingual.md) and the
tokenizer its SentencePiece model (`data.vocab_file` = sentencepiece.bpe.model).

Two training modes, both configs (`:mode=`):
  zero_shot        train on English only, test on every language (IGLUE zero-shot cross-lingual transfer)
  translate_train  train on the training set machine-translated into every test language (plus English):
                   one TFDS set per language, `<dataset>_<lang>`, mixed by size
"""

MODES = ("zero_shot", "translate_train")

# IGLUE test languages (Bugliarello et al., 2022) and Multi30K's.
LANGUAGES = {
  "xflickrco": ("en", "de", "es", "id", "ja", "ru", "tr", "zh"),
  "multi30k": ("en", "de", "fr", "cs"),
  "coco": ("en", "ja", "zh"),  # multilingual COCO (CCLM Retrieval_coco_*_ft.yaml)
  "wit": ("ar", "bg", "da", "el", "en", "et", "id", "ja", "ko", "tr", "vi"),  # CCLM WIT.yaml
  "xvnli": ("en", "ar", "es", "fr", "ru"),
  "xgqa": ("en", "bn", "de", "id", "ko", "pt", "ru", "zh"),
  "marvl": ("id", "sw", "ta", "tr", "zh"),  # + NLVR2's English test set, as CCLM's NLVR.yaml
}


def train_sets(dataset: str, mode: str, languages):
  """[(name, split, weight)] of the training TFDS sets: `<dataset>_en`, or one per language."""
  if mode not in MODES:
    raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
  langs = ["en"] if mode == "zero_shot" else list(dict.fromkeys(["en", *languages]))
  return [(f"{dataset}_{lang}", "train", None) for lang in langs]


def test_files(pattern: str, languages) -> str:
  """The comma-separated test files of the evaluator, one per language (`{lang}` in the pattern)."""
  return ",".join(pattern.format(lang=lang) for lang in languages)
