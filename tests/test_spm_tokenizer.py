"""XLM-R SentencePiece tokenisation (docs/reference.md §4.4): the tensorflow-free tokenizer gives HF
`XLMRobertaTokenizer`'s ids (fairseq offsets, <s> <pad> </s> <unk> <mask>) and character offsets, the tf.data
tokenizer the same ids, on a model trained here by the `sentencepiece` trainer on embedded multilingual text."""

import io
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.multilingual_text import PROBES, SENTENCES
from x2vlm_jax.inference.spm_tokenizer import MODEL_FILE
from x2vlm_jax.inference.tokenizer import Tokenizer
from x2vlm_jax.text_clean import pre_caption

MAX_TOKENS = 16  # short enough that the longer sentences are cut


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
  import sentencepiece as spm

  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(list(SENTENCES) * 4),
    model_writer=out,
    model_type="unigram",  # XLM-R's model is a unigram model (HF converts it to tokenizers' Unigram)
    vocab_size=400,
    hard_vocab_limit=False,
    character_coverage=0.9995,  # rare characters stay out → <unk> is exercised
    num_threads=1,
    minloglevel=2,
  )
  d = tmp_path_factory.mktemp("spm")
  (d / MODEL_FILE).write_bytes(out.getvalue())
  return d


def _hf(spm_dir):
  from transformers import XLMRobertaTokenizer

  return XLMRobertaTokenizer.from_pretrained(str(spm_dir))


def _texts():
  return list(SENTENCES) + list(PROBES)


def test_special_ids_follow_fairseq(spm_dir):
  tok = Tokenizer(str(spm_dir / MODEL_FILE), MAX_TOKENS)
  hf = _hf(spm_dir)
  assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id) == (0, 1, 2, 3)
  assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id) == (
    hf.cls_token_id,
    hf.pad_token_id,
    hf.sep_token_id,
    hf.unk_token_id,
  )
  assert tok.mask_id == hf.mask_token_id == tok.vocab_size - 1 and tok.vocab_size == len(hf)


def test_ids_equal_hf_xlmr_tokenizer(spm_dir):
  tok = Tokenizer(str(spm_dir / MODEL_FILE), MAX_TOKENS)
  hf = _hf(spm_dir)
  for clean in (None, 30):  # raw text and the official pre_caption-ed text of the datasets
    texts = [pre_caption(t, 30) if clean else t for t in _texts()]
    ours, ours_mask = tok(texts)
    ref = hf(texts, max_length=MAX_TOKENS, truncation=True, padding="max_length", return_tensors="np")
    np.testing.assert_array_equal(ours, ref["input_ids"])
    np.testing.assert_array_equal(ours_mask, ref["attention_mask"])
    for t in texts:  # uncut
      assert [0, *tok.pieces(t), 2] == hf(t)["input_ids"], t
  assert (ours == 3).any() and ours_mask.sum(1).max() == MAX_TOKENS  # <unk> and the cut exercised
  assert (ours == 1).any()  # <pad>


def test_offsets_equal_hf(spm_dir):
  tok = Tokenizer(str(spm_dir / MODEL_FILE), MAX_TOKENS)
  hf = _hf(spm_dir)
  for t in _texts():
    ids, offsets = tok.encode_with_offsets(t)
    ref = hf(t, add_special_tokens=False, return_offsets_mapping=True)
    assert ids == ref["input_ids"], t
    assert offsets == [tuple(o) for o in ref["offset_mapping"]], t


def test_tf_data_tokenizer_equals_python(spm_dir):
  tf = pytest.importorskip("tensorflow")
  from x2vlm_jax.data.text import Tokenizer as PipelineTokenizer

  path = str(spm_dir / MODEL_FILE)
  texts = [pre_caption(t, 30) for t in _texts()] + _texts()
  ours, ours_mask = Tokenizer(path, MAX_TOKENS)(texts)
  pipe = PipelineTokenizer(path, MAX_TOKENS)
  ids, mask = pipe(tf.constant(texts))
  np.testing.assert_array_equal(ids.numpy(), ours)
  np.testing.assert_array_equal(mask.numpy(), ours_mask)
  assert pipe.mask_id == Tokenizer(path).mask_id and pipe.vocab_size == Tokenizer(path).vocab_size
  assert not pipe.is_subword.any()  # piece-level masking (no whole-word masking, as officially)


def test_piece_masking_never_touches_specials_or_padding(spm_dir):
  """MLM on SentencePiece ids: positions inside <s> … </s> only (the official generator may pick </s>),
  labels are the original ids, n_pred = min(max_masks, max(1, round(n·p)))."""
  tf = pytest.importorskip("tensorflow")
  from x2vlm_jax.data import masking
  from x2vlm_jax.data.text import Tokenizer as PipelineTokenizer

  pipe = PipelineTokenizer(str(spm_dir / MODEL_FILE), MAX_TOKENS)
  texts = [pre_caption(t, 30) for t in SENTENCES]
  ids, mask = pipe(tf.constant(texts))
  ids_m, pos, labels = masking.mask_tokens(
    ids,
    mask,
    tf.constant([3, 4]),
    is_subword=pipe.is_subword,
    mask_id=pipe.mask_id,
    vocab_size=pipe.vocab_size,
    mask_prob=0.25,
    max_masks=6,
    skipgram_prb=0.2,
    skipgram_size=3,
    whole_word=True,  # a no-op for SentencePiece (is_subword is all False)
  )
  ids, mask, ids_m, pos, labels = (x.numpy() for x in (ids, mask, ids_m, pos, labels))
  for i in range(len(texts)):
    n = int(mask[i].sum())
    real = labels[i] != -100
    assert real.sum() == min(6, max(1, round(n * 0.25)))
    p = pos[i][real]
    assert (p >= 1).all() and (p < n).all()
    np.testing.assert_array_equal(labels[i][real], ids[i][p])
    untouched = np.setdiff1d(np.arange(MAX_TOKENS), p)
    np.testing.assert_array_equal(ids_m[i][untouched], ids[i][untouched])
    assert ids_m[i, 0] == 0 and (ids_m[i, n:] == 1).all()


def test_decode_and_bad_input(spm_dir):
  tok = Tokenizer(str(spm_dir / MODEL_FILE), 40)
  ids, mask = tok(["Zwei Hunde spielen mit einem roten Ball im Park."], clean=30)
  assert ids[0, 0] == 0 and ids[0, mask[0].sum() - 1] == 2 and (ids[0, mask[0].sum() :] == 1).all()
  assert tok.decode(ids[0]) == "zwei hunde spielen mit einem roten ball im park"
  assert tok.decode([0, tok.mask_id, 2], skip_special=False) == "<s> <mask> </s>"
  with pytest.raises(ValueError, match="list of strings"):
    tok("a single string")
  with pytest.raises(ValueError, match=r"texts\[1\]"):
    tok(["ok", 3])


def test_spm_tokenizer_imports_without_tensorflow(spm_dir):
  code = (
    "import sys\nfor m in ('tensorflow', 'tensorflow_text', 'tensorflow_datasets'): sys.modules[m] = None\n"
    "from x2vlm_jax.inference.tokenizer import Tokenizer\n"
    f"t = Tokenizer({str(spm_dir / MODEL_FILE)!r})\n"
    "print(type(t).__name__, t(['ein mann'])[0][0, :1].tolist())"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "SentencePieceTokenizer [0]", out.stderr[-2000:]


def test_checkpoints_carry_the_sentencepiece_model(spm_dir, tmp_path):
  from x2vlm_jax import params_io

  params_io.write_vocab(str(tmp_path), str(spm_dir / MODEL_FILE))
  found = params_io.vocab_file(str(tmp_path))
  assert found.endswith("sentencepiece.bpe.model") and not (tmp_path / "vocab.txt").exists()
  assert (tmp_path / MODEL_FILE).read_bytes() == (spm_dir / MODEL_FILE).read_bytes()
  a = Tokenizer(found)(["Ein Mann reitet"])[0]
  b = _hf(spm_dir)(["Ein Mann reitet"], max_length=40, padding="max_length")["input_ids"]
  np.testing.assert_array_equal(a, b)
