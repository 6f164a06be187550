"""The tensorflow-free tokenizer of the inference API gives the ids of HF BertTokenizer and of the
tf-text tokenizer of the input pipeline (docs/reference.md §4.4), and reads a checkpoint directory's vocabulary."""

import subprocess
import sys

import numpy as np

from tests.test_data_text import MAX_TOKENS, _captions
from x2vlm_jax.inference.tokenizer import Tokenizer
from x2vlm_jax.text_clean import pre_caption


def test_ids_equal_hf_bert_tokenizer_and_the_pipeline(bert_vocab_file):
  import tensorflow as tf
  from transformers import BertTokenizer

  from x2vlm_jax.data.text import Tokenizer as PipelineTokenizer

  caps = [pre_caption(c, MAX_TOKENS) for c in _captions(bert_vocab_file, 600, seed=3)]
  ours, ours_mask = Tokenizer(bert_vocab_file, MAX_TOKENS)(caps)
  hf = BertTokenizer(bert_vocab_file, do_lower_case=True)
  ref = hf(caps, max_length=MAX_TOKENS, truncation=True, padding="max_length", return_tensors="np")
  np.testing.assert_array_equal(ours, ref["input_ids"])
  np.testing.assert_array_equal(ours_mask, ref["attention_mask"])
  pipe_ids, pipe_mask = PipelineTokenizer(bert_vocab_file, MAX_TOKENS)(tf.constant(caps))
  np.testing.assert_array_equal(ours, pipe_ids.numpy())
  np.testing.assert_array_equal(ours_mask, pipe_mask.numpy())
  assert ours_mask.sum(1).max() == MAX_TOKENS and (ours == 100).any()  # truncation and [UNK] exercised


def test_clean_decode_and_bad_input(bert_vocab_file):
  tok = Tokenizer(bert_vocab_file, 8)
  ids, mask = tok(["A Man, riding a HORSE!!"], clean=30)
  assert ids[0, : mask[0].sum()].tolist()[0] == 101 and ids[0, mask[0].sum() - 1] == 102
  assert tok.decode(ids[0]) == "a man riding a horse"
  import pytest

  with pytest.raises(ValueError, match="list of strings"):
    tok("a single string")
  with pytest.raises(ValueError, match=r"texts\[1\]"):
    tok(["ok", 3])


def test_tokenizer_imports_without_tensorflow(bert_vocab_file):
  code = (
    "import sys\nfor m in ('tensorflow', 'tensorflow_text', 'tensorflow_datasets'): sys.modules[m] = None\n"
    "from x2vlm_jax.inference.tokenizer import Tokenizer\n"
    f"print(Tokenizer({bert_vocab_file!r})(['a dog'])[0][0, :4].tolist())"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "[101, 1037, 3899, 102]", out.stderr[-2000:]
