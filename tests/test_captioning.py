"""COCO captioning (docs/reference.md §4.2, §5.5) end to end:

* the training stream's batches are the official FG-free input of THEIR caption: removing the
  [MASK]s gives [CLS] + prompt + the raw caption's wordpieces (no pre_caption) + [SEP], and every
  field equals the numpy port of `preprocess_fg_free` for the positions that were masked (which
  never include [CLS] or the prompt, and number exactly min(max_masks, round((n − P)·0.6)));
* the masked positions follow the official generator's law (`TextMaskingGenerator`, enumerated
  exactly for short captions): its support and its probabilities;
* tools/evaluate.py --task captioning on the official Karpathy test format: image ids parsed from
  the file names as the official reader does, one caption per image id, predictions equal to the
  notebook API's captions, metrics equal to `caption_scores` on the written predictions;
* bad input (a record without `image`, a name without an id, a missing ground-truth file) is a
  clear error.
"""

import collections
import itertools
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
      # Officially exactly n_pred: the walk over the candidates stops at n_pred and cuts an overshoot
      # back to it; only a span stopped by the prompt adds nothing, and a caption never starts with ##.
      assert len(chosen) == n_pred
  assert sorted(seen) == sorted(r["caption"] for r in rows)
  # Punctuation stays (no pre_caption): "," and "!" are wordpieces of the first caption ([UNK] here).
  assert tok.unk_id in tok.pieces(CAPTIONS[0].format("red"))


# ------------------------------------------------------------------------- the masked positions' law
def official_choice_distribution(tokens, num_source_tokens, *, mask_prob, max_masks, skipgram_prb, skipgram_size):
  """The exact law of the positions `TextMaskingGenerator.__call__(tokens, num_source_tokens)` masks
  (dataset/pretrain_dataset.py, called by `coco_karpathy_train_mlm.preprocess_fg_free` with the prompt's
  length), by enumeration: every order of `shuffle(cand_pos)` (equally likely), every outcome of
  `rand() < skipgram_prb` and `randint(2, skipgram_size)` at each visited candidate, whole-word expansion
  over ##-pieces, the break at the first special or out-of-range position, and an overshoot cut to n_pred
  by `shuffle(masked_pos)[:n_pred]` (every n_pred-subset equally likely). → ({frozenset: p}, n_pred)."""
  n_pred = min(max_masks, max(1, int(round((len(tokens) - num_source_tokens) * mask_prob))))
  assert tokens[0] == "[CLS]"
  special = set(range(1 + num_source_tokens))
  cand = list(range(1 + num_source_tokens, len(tokens)))
  max_cand = max(cand)
  spans = [(skipgram_prb / (skipgram_size - 1), k) for k in range(2, skipgram_size + 1)] + [(1 - skipgram_prb, 1)]
  law = collections.defaultdict(float)

  def expand(st, end):
    while st >= 0 and tokens[st].startswith("##"):
      st -= 1
    while end < len(tokens) and tokens[end].startswith("##"):
      end += 1
    return st, end

  def walk(order, i, masked, p):
    while i < len(order) and len(masked) < n_pred and order[i] in masked:
      i += 1
    if i == len(order) or len(masked) >= n_pred:
      if len(masked) > n_pred:
        subsets = list(itertools.combinations(sorted(masked), n_pred))
        for sub in subsets:
          law[frozenset(sub)] += p / len(subsets)
      else:
        law[masked] += p
      return
    for q, k in spans:
      st, end = expand(order[i], order[i] + k)
      grown = set(masked)
      for mp in range(st, end):
        if not (0 < mp <= max_cand) or mp in special:
          break
        grown.add(mp)
      walk(order, i + 1, frozenset(grown), p * q)

  orders = list(itertools.permutations(cand))
  for order in orders:
    walk(order, 0, frozenset(), 1.0 / len(orders))
  return dict(law), n_pred


def test_masked_positions_follow_the_official_law():
  """fg_free_inputs with the released captioning values (coco_captioning_large.yaml: mask_prob 0.6,
  max_masks 18, skipgram 0.2 / 3, whole words) against the exact law above: every set it masks is one the
  official generator can mask, and over 20,000 draws the frequencies of the sets are the official
  probabilities (total variation < 0.035; the sampling noise is ≈ 0.01, while the law without spans
  differs by 0.097, without whole words by 0.38, with the prompt counted in n_pred by 1)."""
  tf = pytest.importorskip("tensorflow")
  from x2vlm_jax.data.caption_masking import fg_free_inputs

  vocab = {"[PAD]": 0, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "a": 20, "picture": 21, "of": 22}
  vocab.update({"w1": 30, "##b": 31, "w2": 40, "w3": 50, "##c": 51, "##x": 60})
  is_subword = np.zeros(100, bool)
  is_subword[[vocab[t] for t in vocab if t.startswith("##")]] = True
  released = dict(mask_prob=0.6, max_masks=18, skipgram_prb=0.2, skipgram_size=3)
  prompt = ["a", "picture", "of"]
  captions = [
    ["w1", "##b", "w2", "w3", "##c"],  # two-piece words around a one-piece word
    ["##x", "w2"],  # (not produced by WordPiece) a span that starts in the prompt adds nothing
  ]
  n, max_tokens = 20000, 12
  for c, caption in enumerate(captions):
    tokens = ["[CLS]"] + prompt + caption + ["[SEP]"]
    law, n_pred = official_choice_distribution(tokens, len(prompt), **released)
    assert abs(sum(law.values()) - 1) < 1e-9
    ids = np.zeros((n, max_tokens), np.int32)
    ids[:, : len(tokens)] = [vocab[t] for t in tokens]
    out = fg_free_inputs(
      tf.constant(ids),
      tf.constant((ids > 0).astype(np.int32)),
      tf.constant([11, c], tf.int64),
      num_prompt_tokens=len(prompt),
      is_subword=is_subword,
      mask_id=4,
      pad_id=0,
      ignore_id=2,
      **released,
    )
    weight, masked_pos, positions = (out[k].numpy() for k in ("masked_weight", "masked_pos", "positions"))
    counts = collections.Counter()
    for r in range(n):
      k = int(weight[r].sum())
      counts[frozenset(positions[r, masked_pos[r, :k]].tolist())] += 1  # a [MASK] carries its token's position
    assert set(counts) <= {s for s, p in law.items() if p > 0}, sorted(map(sorted, set(counts) - set(law)))
    tv = 0.5 * sum(abs(counts[s] / n - law.get(s, 0.0)) for s in set(law) | set(counts))
    assert tv < 0.035, (caption, tv, n_pred)


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


@pytest.mark.slow
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
