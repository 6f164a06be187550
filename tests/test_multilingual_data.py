"""Multilingual data (docs/multilingual.md): the `shapes_ml` lexicon and its committed SentencePiece model,
the parallel-text stream `mtext` (official `ParaTextDataset`, docs/reference.md §3.7) through TFDS and
tf.data, {lang: caption} records and the CCLM data switch."""

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tests.helpers.tools import load_tool  # noqa: E402
from x2vlm_jax import batch as batch_contract  # noqa: E402
from x2vlm_jax.data import config as data_config  # noqa: E402
from x2vlm_jax.data import pipeline, records, shapes_ml  # noqa: E402
from x2vlm_jax.inference.tokenizer import Tokenizer  # noqa: E402
from x2vlm_jax.text_clean import pre_caption  # noqa: E402

OBJS = [
  dict(color="red", shape="circle", size="small", cx=10.0, cy=60.0),
  dict(color="blue", shape="diamond", size="large", cx=90.0, cy=62.0),
  dict(color="orange", shape="square", size="large", cx=50.0, cy=20.0),
]


def test_lexicon_writes_each_language_with_its_grammar():
  # hand-written translations of the same scene (relation: the first object is left of the second)
  assert shapes_ml.caption(OBJS, "en") == "a small red circle left of a large blue diamond and a large orange square"
  assert shapes_ml.caption(OBJS, "de") == (
    "ein kleiner roter Kreis links von einer großen blauen Raute und ein großes orangenes Quadrat"
  )
  assert (
    shapes_ml.caption(OBJS, "fr") == "un petit cercle rouge à gauche d'un grand losange bleu et un grand carré orange"
  )
  assert [shapes_ml.element_caption(OBJS[1], lang) for lang in shapes_ml.LANGUAGES] == [
    "blue diamond",
    "blaue Raute",
    "losange bleu",
  ]
  assert [shapes_ml.attribute(OBJS[0], lang) for lang in shapes_ml.LANGUAGES] == ["small", "klein", "petit"]


def test_committed_spm_model_is_the_tool_output_and_covers_the_lexicon():
  assert load_tool("train_spm").shapes_ml_model() == open(shapes_ml.SPM_MODEL, "rb").read()
  tok = Tokenizer(shapes_ml.SPM_MODEL, 64)
  ids, mask = tok([pre_caption(s, 64) for s in shapes_ml.corpus(300, seed=11)])
  assert not (ids == tok.unk_id).any() and mask.sum(1).max() < 64


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  return str(path)


def test_build_mtext_counts_bad_pairs(tmp_path):
  build = load_tool("build_tfds").build
  rows = [
    {"source_text": "a red circle", "target_text": "ein roter Kreis"},
    {"source_text": "", "target_text": "ein Kreis"},  # empty side
    {"source_text": "a square"},  # missing target
    {"source_text": 3, "target_text": "drei"},  # not a string
    {"src": "a blue square", "tgt": "un carré bleu"},
  ]
  f = _write_jsonl(tmp_path / "pairs.json", rows)
  report = build("mtext", f, str(tmp_path / "data"), "pairs")
  assert report.written == 1 and dict(report.skipped) == {"empty_caption": 3, "bad_field_type": 1}
  src = records.open_source(str(tmp_path / "data"), "pairs", "train")
  assert len(src) == 1 and src[0]["target"].decode() == "ein roter Kreis"
  report = build("mtext", f, str(tmp_path / "data"), "pairs2", options={"source_key": "src", "target_key": "tgt"})
  assert report.written == 1
  with pytest.raises(ValueError, match="not an option of --kind mtext"):
    build("mtext", f, str(tmp_path / "data"), "pairs3", options={"languages": "en"})


def test_dict_captions_keep_chosen_languages(tmp_path):
  import base64

  from x2vlm_jax.cli.build_tfds import build
  from x2vlm_jax.data import shapes

  img = base64.b64encode(shapes.encode(np.zeros((8, 8, 3), np.uint8))).decode()
  rows = [{"binary": img, "caption": {"en": "a red circle", "de": "ein roter Kreis", "fr": "un cercle rouge"}}]
  f = _write_jsonl(tmp_path / "mm.json", rows)
  build("image_text", f, str(tmp_path / "data"), "all")
  build("image_text", f, str(tmp_path / "data"), "two", options={"languages": "de,en"})
  alts = lambda name: records.open_source(str(tmp_path / "data"), name, "train")[0]["caption"].decode()  # noqa: E731
  assert sorted(alts("all").split(records.ALT_SEP)) == ["a red circle", "ein roter Kreis", "un cercle rouge"]
  assert sorted(alts("two").split(records.ALT_SEP)) == ["a red circle", "ein roter Kreis"]


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("shapes_ml"))
  shapes_ml.build(d, num_train=16, num_test=4, num_pairs=48, seed=0)
  return d


def test_english_only_build_has_the_same_scenes_with_their_english_texts(ml_dir):
  """`shapes_ml_en` (the image/region streams of the cross-lingual A/B): the images and boxes of
  `shapes_ml`, and of each caption, element caption and attribute only the English alternative."""
  from x2vlm_jax import embedded

  sizes = dict(num_train=16, num_test=4, seed=0)  # ml_dir's
  assert shapes_ml.build_english_only(ml_dir, **sizes) == shapes_ml.EN_NAME == embedded.SHAPES_ML_EN
  for split in ("train", "test"):
    every, english = (records.open_source(ml_dir, name, split) for name in (shapes_ml.NAME, shapes_ml.EN_NAME))
    assert len(every) == len(english) == sizes["num_" + split]
    for a, b in zip(every, english):
      assert a["image"] == b["image"]
      np.testing.assert_array_equal(a["boxes"], b["boxes"])
      first = lambda v: v.decode().split(records.ALT_SEP)[0]  # noqa: E731 — the alternatives are en, de, fr
      assert b["caption"].decode() == first(a["caption"]) and records.ALT_SEP not in b["caption"].decode()
      assert [x.decode() for x in b["elem_caption"]] == [first(x) for x in a["elem_caption"]]
      assert [x.decode() for x in b["elem_attrs"]] == [first(x) for x in a["elem_attrs"]]


def _cclm_cfg(ml_dir):
  c = data_config.get_data_config()
  c.data_dir = ml_dir
  c.image_res, c.patch_size = 32, 16
  c.image.datasets = [("shapes_ml", "train")]
  c.image.batch_size = 4
  c.region.datasets = [("shapes_ml", "train")]
  c.region.batch_size, c.region.num_images = 4, 2
  c.video.enabled = False
  data_config.apply_cclm(c, shapes_ml.SPM_MODEL, [("shapes_ml_mtext", "train")])
  c.max_tokens = 48
  c.mtext.batch_size, c.mtext.max_tokens, c.mtext.max_masks = 8, 48, 8
  return c


@pytest.mark.slow
def test_mtext_stream_contract_swap_and_masking(ml_dir):
  c = _cclm_cfg(ml_dir)
  it = pipeline.create_train_iterator(c, seed=3, streams=pipeline.CCLM_STREAMS, keep_debug=True)
  tok = Tokenizer(shapes_ml.SPM_MODEL, 48)
  src = records.open_source(ml_dir, "shapes_ml_mtext", "train")
  swapped = kept = 0
  for _ in range(4):
    b = next(it)
    assert set(b) == {"image", "region", "mtext"}
    m = b["mtext"]
    spec = batch_contract.stream_spec("mtext", batch_size=8, image_res=32, patch_size=16, max_tokens=48, max_masks=8)
    batch_contract.check_stream("mtext", {k: v for k, v in m.items() if not k.startswith("_")}, spec)
    for i in range(8):
      rec = src[int(m["_record"][i][1])]
      pair = [pre_caption(rec[k].decode(), 64) for k in ("source", "target")]
      text, para = tok.decode(m["text_ids"][i]), tok.decode(m["para_ids"][i])
      assert {text, para} == set(pair)
      swapped, kept = swapped + (text == pair[1]), kept + (text == pair[0])
      # piece-level MLM on the first sentence: labels are its ids at masked_pos, <s>/<pad> never masked
      real = m["mlm_labels"][i] != -100
      n = int(m["text_mask"][i].sum())
      assert real.sum() == min(8, max(1, round(n * 0.4)))
      pos = m["masked_pos"][i][real]
      assert (pos >= 1).all() and (pos < n).all()
      np.testing.assert_array_equal(m["mlm_labels"][i][real], m["text_ids"][i][pos])
      assert (m["para_ids"][i][m["para_mask"][i] == 0] == 1).all()  # <pad> = 1
    # the multilingual image captions: every language appears
  assert swapped > 5 and kept > 5  # p = 0.5 each way over 32 pairs
  langs = set()
  for _ in range(6):
    for row in next(it)["image"]["text_ids"]:
      t = tok.decode(row)
      langs.add("de" if t.startswith("ein") else "fr" if t.startswith("un ") else "en")
  assert langs == {"en", "de", "fr"}


@pytest.mark.slow
def test_english_pretraining_never_reads_mtext(ml_dir):
  c = _cclm_cfg(ml_dir)
  it = pipeline.create_train_iterator(c, seed=3)  # the default streams: image / region / video
  assert set(next(it)) == {"image", "region"}


def test_synthetic_mtext_batches():
  from x2vlm_jax.models import get_preset
  from x2vlm_jax.tasks.synthetic import SyntheticIterator

  c = data_config.get_data_config()
  c.mtext.enabled, c.mtext.datasets = True, [("x", "train")]
  c.mtext.batch_size, c.mtext.max_tokens, c.mtext.max_masks = 4, 12, 3
  model = get_preset("tiny")
  it = SyntheticIterator(c, model, seed=0, streams=("image", "mtext"))
  b = next(it)
  assert b["mtext"]["para_ids"].shape == (4, 12) and b["mtext"]["masked_pos"].shape == (4, 3)
  assert (b["mtext"]["text_ids"][:, 0] == 0).all() and (b["mtext"]["text_ids"][b["mtext"]["text_mask"] == 0] == 1).all()
  assert "mtext" not in next(SyntheticIterator(c, model, seed=0))  # the English default
