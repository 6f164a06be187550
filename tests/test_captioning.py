"""COCO captioning (docs/reference.md §4.2, §5.5) end to end:

* the training stream's batches are the official FG-free input of THEIR caption: removing the
  [MASK]s gives [CLS] + prompt + the raw caption's wordpieces (no pre_caption) + [SEP], and every
  field equals the numpy port of `preprocess_fg_free` for the positions that were masked (which
  never include [CLS] or the prompt, and number at most min(max_masks, round((n − P)·0.6)));
* tools/evaluate.py --task captioning on the official Karpathy test format: image ids parsed from
  the file names as the official reader does, one caption per image id, predictions equal to the
  notebook API's captions, metrics equal to `caption_scores` on the written predictions;
* bad input (a record without `image`, a name without an id, a missing ground-truth file) is a
  clear error.
"""

import json

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.test_caption_masking import official_fg_free
from x2vlm_jax import inference, params_io, tasks
from x2vlm_jax import sharding as shd
from x2vlm_jax.data.config import SHAPES_VOCAB
from x2vlm_jax.evaluation.caption_metrics import caption_scores
from x2vlm_jax.inference.tokenizer import Tokenizer
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.text_clean import image_id_from_name

COLORS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 30), (150, 40, 200)]
WORDS = ["red", "green", "blue", "yellow", "purple"]
CAPTIONS = [
  "A {} circle, left of a square!",
  "the {} object",
  "There is a large {} triangle and a small {} diamond above two objects in the image",
]
MAX_TOKENS, MAX_MASKS, PROMPT = 16, 5, "a picture of "


@pytest.fixture(scope="module")
def train_built(tmp_path_factory):
  pytest.importorskip("tensorflow")
  from x2vlm_jax.data.finetune import captioning

  d = tmp_path_factory.mktemp("captioning")
  rows = []
  for i, c in enumerate(COLORS):
    Image.fromarray(np.full((40, 44, 3), c, np.uint8)).save(d / f"im{i}.jpg", quality=95)
    for j in range(2 + i % 2):
      rows.append({"image": f"im{i}.jpg", "caption": CAPTIONS[(i + j) % 3].format(WORDS[i], WORDS[i]), "image_id": i})
  bad = [{"image": "im0.jpg", "caption": "   ", "image_id": 0}, {"image": "im1.jpg", "image_id": 1}]
  (d / "train.json").write_text(json.dumps(rows[:3] + bad + rows[3:]))
  report = captioning.build(str(d / "train.json"), str(d), str(d / "tfds"), "toy_captioning")
  assert report.written == len(rows) and dict(report.skipped) == {"empty_caption": 1, "missing_field": 1}
  return d, rows


def test_training_batches_are_the_fg_free_input_of_their_caption(train_built):
  from x2vlm_jax.configs.finetune.coco_captioning_large import captioning_data
  from x2vlm_jax.configs.finetune.common import finetune_data
  from x2vlm_jax.data.finetune import captioning
  from x2vlm_jax.tasks.captioning import CaptioningTask

  d, rows = train_built
  c = ml_collections.ConfigDict({"data": finetune_data(32, 6)})
  captioning_data(c, data_dir=str(d / "tfds"), train=[("toy_captioning", "train")])
  cfg = c.data
  cfg.vocab_file, cfg.max_tokens, cfg.max_masks, cfg.randaug = SHAPES_VOCAB, MAX_TOKENS, MAX_MASKS, False
  assert len(rows) == 12 and captioning.train_size(cfg) == 12  # 2 batches of 6 are one epoch
  tok = Tokenizer(SHAPES_VOCAB, MAX_TOKENS)
  prompt = list(tok.pieces("a picture of"))
  assert [tok.tokens[i] for i in prompt] == ["a", "picture", "of"]
  mean = np.asarray([0.48145466, 0.4578275, 0.40821073]) * 255
  std = np.asarray([0.26862954, 0.26130258, 0.27577711]) * 255
  it = captioning.create_iterator(cfg, PROMPT, spec=CaptioningTask.spec, seed=3, process_index=0, process_count=1)
  seen = []
  for _ in range(2):
    batch = next(it)
    for r in range(6):
      ids = batch["text_ids"][r].tolist()
      n_real = int(sum(1 for x in ids if x != tok.pad_id))
      real = ids[:n_real]
      tokens, chosen = [], set()
      for x in real:
        if x == tok.mask_id:
          chosen.add(len(tokens))
        else:
          tokens.append(x)
      # Its own image: the caption names the colour of the image in the batch row.
      color = batch["images"][r].mean((0, 1)) * std + mean
      i = int(np.argmin([np.abs(color - np.asarray(c)).max() for c in COLORS]))
      assert np.abs(color - COLORS[i]).max() < 12
      mine = [
        row
        for row in rows
        if row["image_id"] == i
        and ([tok.cls_id] + prompt + list(tok.pieces(row["caption"])) + [tok.sep_id])[:MAX_TOKENS] == tokens
      ]
      assert mine, (tok.decode(tokens), WORDS[i])
      seen.append(mine[0]["caption"])
      want = official_fg_free(tokens, chosen, MAX_TOKENS, MAX_MASKS)
      for key, value in want.items():
        np.testing.assert_array_equal(batch[key if key != "ids" else "text_ids"][r], np.asarray(value), err_msg=key)
      n_pred = min(MAX_MASKS, max(1, round((len(tokens) - len(prompt)) * 0.6)))
      assert chosen and min(chosen) > len(prompt) and len(chosen) <= n_pred
  assert sorted(seen) == sorted(r["caption"] for r in rows)
  # Punctuation stays (no pre_caption): "," and "!" are wordpieces of the first caption ([UNK] here).
  assert tok.unk_id in tok.pieces(CAPTIONS[0].format("red"))


# ------------------------------------------------------------------------------------------ evaluation
N_TEST = 5


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
  d = tmp_path_factory.mktemp("caption_eval")
  (d / "val2014").mkdir()
  rs = np.random.RandomState(1)
  records, ids = [], []
  for k in range(N_TEST):
    image_id = 391895 + 7 * k
    name = f"val2014/COCO_val2014_{image_id:012d}.jpg"
    Image.fromarray(rs.randint(0, 255, (36, 30 + k, 3), np.uint8)).save(d / name)
    records.append({"image": name, "caption": [f"a {WORDS[k]} circle"]})
    ids.append(image_id)
  records.append({"image": records[1]["image"]})  # the same image twice: one prediction per image id
  (d / "test.json").write_text(json.dumps(records))
  vocab_words = " ".join(open(SHAPES_VOCAB).read().split()[5:60])
  gt = [
    {"image_id": i, "caption": c, "id": n}
    for n, (i, c) in enumerate((i, c) for i in ids for c in (f"a {WORDS[ids.index(i)]} circle", vocab_words))
  ]
  (d / "gt.json").write_text(json.dumps({"images": [{"id": i} for i in ids], "annotations": gt}))
  return d, records, ids


def test_image_ids_follow_the_official_file_name_rule():
  assert image_id_from_name("val2014/COCO_val2014_000000391895.jpg") == 391895
  assert image_id_from_name("images/test_00012.jpg") == 12
  with pytest.raises(ValueError):
    image_id_from_name("val2014/no_id_here.jpg")


GEN = dict(num_beams=3, max_length=6, min_length=2, prompt=PROMPT)


def test_tools_evaluate_captioning(test_set, tmp_path):
  import x2vlm_jax.cli.evaluate as cli

  d, records, ids = test_set
  cfg = get_preset("tiny")
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(4)), nnx.Param))
  params["text"]["embeddings"]["word"]["embedding"] = params["text"]["embeddings"]["word"]["embedding"] * 30.0
  params_io.save(str(tmp_path / "ckpt"), cfg, params, vocab_file=SHAPES_VOCAB)
  rc = cli.main(
    [
      "--task",
      "captioning",
      "--checkpoint",
      str(tmp_path / "ckpt"),
      "--annotations",
      str(d / "test.json"),
      "--image_root",
      str(d),
      "--output",
      str(tmp_path / "out"),
      f"--config.gt_file={d / 'gt.json'}",
      "--config.batch_size=1",
      "--config.metrics_tokenizer=python",
      "--config.meteor=off",
      *[f"--config.{k}={v}" for k, v in GEN.items() if k != "prompt"],
    ]
  )
  assert rc == 0
  preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
  assert [p["image_id"] for p in preds] == ids and all(set(p) == {"image_id", "caption"} for p in preds)
  # The notebook API (one device, unsharded) generates the same captions for the same images.
  api = inference.load(str(tmp_path / "ckpt"))
  want = api.caption([str(d / r["image"]) for r in records[:N_TEST]], **GEN)
  assert [p["caption"] for p in preds] == want and all(want)
  metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
  refs = {}
  for a in json.loads((d / "gt.json").read_text())["annotations"]:
    refs.setdefault(a["image_id"], []).append(a["caption"])
  expected = caption_scores(preds, refs, tokenizer="python", meteor="off")
  for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"):
    assert metrics[key] == pytest.approx(expected[key], abs=1e-12), key
  assert metrics["Bleu_1"] > 0 and metrics["score"] == pytest.approx(expected["Bleu_4"] + expected["CIDEr"])
  assert "METEOR" not in metrics and metrics["num_images"] == N_TEST


def _evaluator(d, **fields):
  cfg = get_preset("tiny")
  c = ml_collections.ConfigDict({"model": cfg, "data": {"vocab_file": SHAPES_VOCAB}})
  e = ml_collections.ConfigDict(dict(type="captioning", annotations=str(d / "test.json"), image_root=str(d), **fields))
  mesh = shd.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  return tasks.build_evaluator("test", c, e, mesh)


def test_bad_input_is_a_clear_error(test_set, tmp_path):
  d, records, _ = test_set
  for broken, message in (
    ([{"caption": ["x"]}], r"record 0 has no field 'image'"),
    ([records[0], {"image": "val2014/nothing.jpg"}], r"record 1: no image id in the file name"),
  ):
    (tmp_path / "test.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=message):
      _evaluator(tmp_path).setup()
  with pytest.raises(ValueError, match=r"gt_file '/nonexistent.json' does not exist"):
    _evaluator(d, gt_file="/nonexistent.json").setup()
