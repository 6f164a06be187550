"""Retrieval fine-tuning data (docs/reference.md §4.2, §5.1): the builder from the official JSON counts bad records
by reason, and the training stream pairs every caption with ITS image and dense image id, covers every
caption row once per epoch, and resumes exactly; captions longer than max_tokens are cut (officially
never: Retrieval.py, README deviations) and every cut one is counted, per row and for the training set."""

import json

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from x2vlm_jax.data.config import SHAPES_VOCAB  # noqa: E402
from x2vlm_jax.data.finetune import retrieval  # noqa: E402
from x2vlm_jax.inference.tokenizer import Tokenizer  # noqa: E402
from x2vlm_jax.tasks.retrieval import RetrievalTask  # noqa: E402
from x2vlm_jax.text_clean import pre_caption  # noqa: E402

COLORS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 30), (150, 40, 200), (30, 210, 220)]
WORDS = ["red", "green", "blue", "yellow", "purple", "cyan"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  d = tmp_path_factory.mktemp("ft")
  rows = []
  for i, c in enumerate(COLORS):
    Image.fromarray(np.full((40 + 4 * i, 48, 3), c, np.uint8)).save(d / f"im{i}.jpg", quality=95)
    for j in range(2 + i % 2):  # 2 or 3 captions, all naming the image's colour
      caption = ["a {} picture", "the {} image", "one {} object"][j].format(WORDS[i])  # words of the vocab
      rows.append({"image": f"im{i}.jpg", "caption": caption, "image_id": f"id{i}"})
  (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  bad = [
    {"image": "im0.jpg", "image_id": "id0"},  # no caption
    {"image": "im1.jpg", "caption": "...!!", "image_id": "id1"},  # empty after pre_caption
    {"image": "missing.jpg", "caption": "a lost one", "image_id": "lost"},  # image not found
    {"image": "broken.jpg", "caption": "a broken one", "image_id": "broken"},
    {"image": "broken.jpg", "caption": "a broken two", "image_id": "broken"},
  ]
  (d / "train.json").write_text(json.dumps(rows[:4] + bad + rows[4:]))
  report = retrieval.build(str(d / "train.json"), str(d), str(d / "tfds"), "toy_retrieval")
  return d, rows, report


def _cfg(d, batch=4):
  import ml_collections

  from x2vlm_jax.configs.finetune.common import finetune_data

  c = finetune_data(32, batch)
  c.data_dir, c.vocab_file = str(d / "tfds"), SHAPES_VOCAB
  c.train = [("toy_retrieval", "train")]
  c.max_tokens, c.randaug = 12, False
  return ml_collections.ConfigDict(c)


def test_build_counts_bad_records_by_reason(built, tmp_path):
  d, rows, report = built
  assert report.written == len(rows) and report.extra["images"] == len(COLORS)
  assert dict(report.skipped) == {"missing_field": 1, "empty_caption": 1, "image_not_found": 1, "corrupt_image": 2}
  with pytest.raises(ValueError, match=r"record 4: missing_field: no field 'caption'"):
    retrieval.build(str(d / "train.json"), str(d), str(tmp_path), "strict", strict=True)


def test_stream_pairs_captions_with_their_image_and_id_and_resumes(built):
  d, rows, _ = built
  cfg = _cfg(d, batch=5)
  assert len(rows) == 15  # 3 batches of 5 are exactly one epoch
  it = retrieval.create_iterator(cfg, spec=RetrievalTask.spec, seed=0, process_index=0, process_count=1)
  tok = Tokenizer(SHAPES_VOCAB, cfg.max_tokens)
  seen, first, ids_of = [], [], {}
  mean = np.asarray([0.48145466, 0.4578275, 0.40821073]) * 255
  std = np.asarray([0.26862954, 0.26130258, 0.27577711]) * 255
  for b in range(3):
    batch = next(it)
    if b < 2:
      first.append(batch)
    assert batch["images"].shape == (5, 32, 32, 3) and batch["valid"].tolist() == [1.0] * 5
    for r in range(5):
      text = tok.decode(batch["text_ids"][r])
      color = batch["images"][r].mean((0, 1)) * std + mean
      i = WORDS.index(text.split()[1])  # the caption names the colour of its image
      assert np.abs(color - COLORS[i]).max() < 12, (text, color)
      seen.append(text)
      ids_of.setdefault(i, set()).add(int(batch["image_ids"][r]))
  # Captions of one image share its dense id, and different images have different ids.
  assert all(len(v) == 1 for v in ids_of.values()) and len({min(v) for v in ids_of.values()}) == len(COLORS)
  assert sorted(seen) == sorted(pre_caption(r["caption"], 30) for r in rows)  # every row once per epoch
  assert it.stats()["retrieval"]["dropped_corrupt"] == 0

  resumed = retrieval.create_iterator(cfg, spec=RetrievalTask.spec, seed=0, process_index=0, process_count=1)
  fresh = retrieval.create_iterator(cfg, spec=RetrievalTask.spec, seed=0, process_index=0, process_count=1)
  next(fresh)
  resumed.set_state(fresh.get_state())
  for want in first[1:]:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# --- captions cut to max_tokens: counted ---------------------------------------------------------------------
LONG_WORDS = [3, 10, 11, 14, 25, 35, 8]  # words per caption; 35 > max_words 30 (pre_caption cuts it officially too)


@pytest.fixture(scope="module")
def long_built(tmp_path_factory):
  d = tmp_path_factory.mktemp("ft_long")
  filler = ["small", "circle", "left", "of", "the", "large", "square", "and", "one", "object"]
  colors = WORDS + ["orange"]
  rows = []
  for i, n in enumerate(LONG_WORDS):
    Image.fromarray(np.full((36, 40, 3), 30 * i, np.uint8)).save(d / f"im{i}.jpg", quality=95)
    # Each caption starts with its own colour word, so a (possibly cut) row names its caption.
    words = [colors[i]] + [filler[k % len(filler)] for k in range(n - 1)]
    rows.append({"image": f"im{i}.jpg", "caption": " ".join(words), "image_id": f"id{i}"})
  (d / "train.json").write_text(json.dumps(rows))
  retrieval.build(str(d / "train.json"), str(d), str(d / "tfds"), "long_retrieval")
  return d, rows, colors


def test_captions_cut_at_max_tokens_are_counted(long_built):
  """The reference: HF BertTokenizer over the same vocabulary counts each cleaned caption's wordpieces;
  a caption is cut when it has more than max_tokens − 2 (here 10: 11, 14, 25 and 30 words are, 10 is not)."""
  from transformers import BertTokenizer

  d, rows, colors = long_built
  cfg = _cfg(d, batch=len(rows))
  cfg.train = [("long_retrieval", "train")]
  hf = BertTokenizer(SHAPES_VOCAB, do_lower_case=True)
  pieces = {r["caption"].split()[0]: len(hf.tokenize(pre_caption(r["caption"], 30))) for r in rows}
  limit = cfg.max_tokens - 2
  want_cut = {c: int(n > limit) for c, n in pieces.items()}
  assert sum(want_cut.values()) == 4 and pieces[colors[1]] == limit  # the boundary is exercised

  it = retrieval.create_iterator(cfg, spec=RetrievalTask.spec, seed=0, process_index=0, process_count=1)
  batch = next(it)  # one batch is the epoch
  tok = Tokenizer(SHAPES_VOCAB, cfg.max_tokens)
  got = {tok.decode(batch["text_ids"][r]).split()[0]: int(batch["captions_cut"][r]) for r in range(len(rows))}
  assert got == want_cut
  assert batch["text_mask"].sum(1).max() == cfg.max_tokens  # the cut rows fill max_tokens

  # The whole training set, from the row tables alone (logged once when the iterator starts).
  from x2vlm_jax.data.finetune.common import report_cut_captions
  from x2vlm_jax.data.text import Tokenizer as PipelineTokenizer

  report = report_cut_captions(cfg, PipelineTokenizer(SHAPES_VOCAB, cfg.max_tokens), "retrieval")
  assert report == {"captions": len(rows), "cut": 4, "longest_tokens": max(pieces.values()) + 2}
  assert report["longest_tokens"] == 32  # 30 words after pre_caption, + [CLS] and [SEP]


def test_the_caption_scan_runs_on_a_fresh_start_not_on_a_resume(long_built, monkeypatch):
  """Counting the cut captions reads every training caption: once when a run starts, not again when it
  resumes (the iterator restored at a later position)."""
  d, rows, _ = long_built
  cfg = _cfg(d, batch=2)
  cfg.train = [("long_retrieval", "train")]
  calls = []
  monkeypatch.setattr(retrieval, "report_cut_captions", lambda cfg, tok, task: calls.append(task))

  def make(process_index=0, process_count=1):
    return retrieval.create_iterator(
      cfg, spec=RetrievalTask.spec, seed=0, process_index=process_index, process_count=process_count
    )

  fresh = make()
  assert calls == []  # nothing before the first batch
  next(fresh)
  assert calls == ["retrieval"]
  state = fresh.get_state()
  resumed = make()
  resumed.set_state(state)
  next(resumed)
  assert calls == ["retrieval"], "the scan ran again on a resume"
  next(make(process_index=1, process_count=2))  # a host other than the first never scans
  assert calls == ["retrieval"]


def test_count_cut_captions_tool(long_built, tmp_path, capsys):
  """tools/count_cut_captions.py on a config file: the same counts, and the max_tokens it names cuts none."""
  from helpers.tools import load_tool

  d, rows, _ = long_built
  config = tmp_path / "long_config.py"
  config.write_text(
    "import ml_collections\n"
    "from x2vlm_jax.configs.finetune.common import finetune_data\n"
    "def get_config(arg=None):\n"
    "  data = finetune_data(32, 4)\n"
    f"  data.update(vocab_file={SHAPES_VOCAB!r}, train=[('long_retrieval', 'train')], max_tokens=12)\n"
    "  return ml_collections.ConfigDict({'task': 'retrieval', 'data': data})\n"
  )
  tool = load_tool("count_cut_captions")
  assert tool.main([str(config), "--data_dir", str(d / "tfds")]) == 0
  got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert got == {"captions": len(rows), "cut": 4, "longest_tokens": 32, "max_tokens": 12}
  assert tool.main([str(config), "--data_dir", str(d / "tfds"), "--max_tokens", "32"]) == 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cut"] == 0
