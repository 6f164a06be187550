"""Trains a SentencePiece (unigram, XLM-R-style) model deterministically.

  python tools/train_spm.py --shapes_ml                 # re-creates x2vlm_jax/data/shapes_ml_spm.model
  python tools/train_spm.py --input corpus.txt --vocab_size 8000 --output my.model

One thread and a fixed sentence order make the model a pure function of its text (tests/test_shapes_ml.py
re-trains the committed `shapes_ml` model and compares bytes). Ids follow XLM-R once loaded by
x2vlm_jax.inference.tokenizer.Tokenizer (fairseq offset, <mask> last).
"""

import argparse
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES_ML_VOCAB = 400


def train(sentences, vocab_size: int, normalization: str = "nmt_nfkc") -> bytes:
  """normalization: XLM-R's nmt_nfkc (a 240 KB character map in the file) or "identity"."""
  import sentencepiece as spm

  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(list(sentences)),
    model_writer=out,
    model_type="unigram",  # XLM-R's model type
    vocab_size=vocab_size,
    normalization_rule_name=normalization,
    hard_vocab_limit=False,
    character_coverage=1.0,
    shuffle_input_sentence=False,
    num_threads=1,
    minloglevel=2,
  )
  return out.getvalue()


def shapes_ml_model() -> bytes:
  from x2vlm_jax.data import shapes_ml
  from x2vlm_jax.text_clean import pre_caption

  # The pipeline tokenises pre_caption-ed text (lower case, punctuation removed): train on that form.
  # Its text is NFC already, so no NFKC map (keeps the committed file a few KB).
  return train([pre_caption(s, 64) for s in shapes_ml.corpus()], SHAPES_ML_VOCAB, normalization="identity")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--shapes_ml", action="store_true", help="the embedded shapes_ml model (written in place)")
  p.add_argument("--input", help="text file, one sentence a line")
  p.add_argument("--vocab_size", type=int, default=8000)
  p.add_argument("--output", help="the .model file to write")
  args = p.parse_args(argv)
  if args.shapes_ml:
    from x2vlm_jax.data import shapes_ml

    data, path = shapes_ml_model(), args.output or shapes_ml.SPM_MODEL
  else:
    if not (args.input and args.output):
      p.error("--input and --output (or --shapes_ml)")
    with open(args.input, encoding="utf-8") as f:
      data, path = train([line.rstrip("\n") for line in f if line.strip()], args.vocab_size), args.output
  with open(path, "wb") as f:
    f.write(data)
  print(f"wrote {path} ({len(data)} bytes)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
