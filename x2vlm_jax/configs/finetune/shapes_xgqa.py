"""Multilingual VQA (the xgqa task) on the embedded `shapes_ml` questions (docs/multilingual.md): train on
one language's questions (mode=zero_shot: English) or all three (translate_train), evaluate per language
with the official get_acc (exact match) over one answer list of every language's answers.

The VQA recipe of shapes_vqa.py (our choices for a tiny model on 2 CPU cores: 64 px, batch 32, lr 3e-4, a
one-layer decoder copied from the fusion layer, 3 epochs), the shapes_ml SentencePiece model, 24 tokens
per question, one answer per question (A = 1), answers of at most 4 pieces.

  python main.py --config=configs/finetune/shapes_xgqa.py:mode=zero_shot,model=cclm_tiny \
      --workdir=artifacts/ml_xgqa --config.init_from=artifacts/cclm_tiny/export
"""

from x2vlm_jax.configs.finetune import common, multilingual, vqa2_base


def get_config(arg=None):
  a = common.parse_arg(
    arg, epochs=3, batch=32, data_dir="artifacts/data", lr=3e-4, res=64, mode="zero_shot", model="tiny"
  )
  from x2vlm_jax.data import shapes_ml

  c = common.base_config(a.model, "xgqa", a.res, a.batch)
  common.shapes_setup(c, a.data_dir)
  c.data.vocab_file = shapes_ml.SPM_MODEL
  if a.model == "tiny":  # generated ids index the vocabulary: the model's must be the tokenizer's (129)
    from x2vlm_jax.inference.spm_tokenizer import SentencePieceTokenizer

    c.model.text.vocab_size = SentencePieceTokenizer(shapes_ml.SPM_MODEL).vocab_size
  c.model.heads.decoder_layers = 1
  c.large_lr_for_dec = True
  train = [(name, split) for name, split, _ in multilingual.train_sets("shapes_ml_xgqa", a.mode, ("de", "fr"))]
  vqa2_base.vqa_data(c, data_dir=a.data_dir, train=train, max_answers=1, max_answer_tokens=4)
  c.data.max_tokens = 24
  c.num_epochs = a.epochs
  c.optim.lr = a.lr
  c.checkpoint_every = 500
  tasks = f"{a.data_dir}/{shapes_ml.TASKS_NAME}"
  c.evals.test = dict(
    type="xgqa",
    annotations=",".join(f"{tasks}/vqa_test_{lang}.json" for lang in shapes_ml.LANGUAGES),
    languages=",".join(shapes_ml.LANGUAGES),
    image_root=tasks,
    answer_list=f"{tasks}/answer_list.json",
    k_test=128,
    batch_size=64,
    max_tokens=24,
    max_answer_tokens=4,
    every=0,
    at_start=True,
    at_end=True,
  )
  c.best_metric = "test/acc"
  return c
