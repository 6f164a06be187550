"""Input-pipeline config (ml_collections). Batch sizes and `num_images` are GLOBAL; each host gets
`global // process_count`. A stream is off when `enabled` is False or its `datasets` list is empty."""

import os

import ml_collections

# Kept free of tensorflow imports so the trainer can read/override it on hosts without TF.
SHAPES_VOCAB = os.path.join(os.path.dirname(__file__), "shapes_vocab.txt")
SHAPES, SHAPES_VIDEO = "shapes", "shapes_video"


def _stream(datasets, batch_size):
  s = ml_collections.ConfigDict()
  s.enabled = True
  # [(name, split)] → drawn ∝ record count, as the official pooled loader; (name, split, w): explicit
  # weight (source.mixture_weights has the rules for mixing both).
  s.datasets = datasets
  s.batch_size = batch_size  # global texts per batch
  return s


def get_data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data_dir = "data"
  c.vocab_file = SHAPES_VOCAB
  c.image_res = 224
  c.patch_size = 16
  # Text (docs/reference.md §3.3 / §4.4): pre_caption keeps max_tokens words; sequences are max_tokens long.
  c.max_tokens = 40
  c.max_masks = 12
  c.mask_prob = 0.5
  c.skipgram_prb = 0.2
  c.skipgram_size = 3
  c.mask_whole_word = True
  # A corrupt image is dropped and counted; strict=True raises instead.
  c.strict = False
  c.randaug = True  # False only for debugging / box tests; the paper always augments
  c.num_parallel_calls = -1  # tf.data.AUTOTUNE
  c.prefetch = 2  # batches per stream
  c.threadpool_size = 0  # 0: tf.data default

  c.image = _stream([(SHAPES, "train")], 64)

  c.region = _stream([(SHAPES, "train")], 64)
  c.region.num_images = 16  # global images per region batch (Bi); batch_size is Bt
  # ITM groups: texts of a group come only from its own images and fill contiguous rows, as one
  # official GPU batch (e.g. base 4M: 128 texts from 50 images). Set group_texts equal to the
  # trainer's itm_group_size.region. 0/0: one group per host batch (then results depend on the
  # number of hosts).
  c.region.group_images = 0
  c.region.group_texts = 0
  c.region.max_regions = 5
  c.region.min_perc_in_image = 0.5

  c.video = _stream([(SHAPES_VIDEO, "train")], 16)
  c.video.enabled = False  # stage 2 only (docs/reference.md §2.1)
  c.video.num_frames = 4

  # Parallel text of the multilingual CCLM pre-training (docs/reference.md §3.7; `tools/build_tfds.py --kind mtext`).
  # Off here, and only a CCLM task reads it (the English pre-training never does); `apply_cclm` turns it on.
  c.mtext = _stream([], 64)
  c.mtext.enabled = False
  # Its own text lengths (official multilingual_cclm_x2vlm_base.yaml: mtexts.max_words / max_tokens /
  # mask_prob / max_masks); skipgram settings are the global ones, as officially.
  c.mtext.max_words = 64
  c.mtext.max_tokens = 64
  c.mtext.mask_prob = 0.4
  c.mtext.max_masks = 16
  return c


def apply_cclm(c: ml_collections.ConfigDict, spm_model: str, mtext_datasets=None) -> ml_collections.ConfigDict:
  """Switches a data config to the multilingual CCLM recipe (official configs/pretrain/
  multilingual_cclm_x2vlm_base.yaml): XLM-R SentencePiece tokenisation, piece-level MLM (the official
  multilingual datasets pass mask_whole_word=False), max_words = max_tokens = 30, mask_prob 0.4, max_masks
  10, and the parallel-text stream on `mtext_datasets` ([(name, split)], e.g. WikiMatrix built with
  `--kind mtext`). Image/region records with a caption per language draw one language per use."""
  c.vocab_file = spm_model
  c.mask_whole_word = False
  c.max_tokens = 30
  c.max_masks = 10
  c.mask_prob = 0.4
  if mtext_datasets:
    c.mtext.datasets = [tuple(d) for d in mtext_datasets]
    c.mtext.enabled = True
  return c


def stream_enabled(c: ml_collections.ConfigDict, stream: str) -> bool:
  s = c.get(stream)
  if s is None:
    return False
  return bool(s.enabled) and len(s.datasets) > 0
