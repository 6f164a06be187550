"""Multilingual retrieval on the embedded `shapes_ml` scenes (docs/multilingual.md): the xretrieval task on
the official-format files of x2vlm_jax/data/shapes_ml.py (train on one language's captions, test on
English, German and French), the tokenizer the committed shapes_ml SentencePiece model.

  mode=zero_shot        train on English captions only (IGLUE's zero-shot cross-lingual transfer)
  mode=translate_train  train on the English, German and French captions

Our choices for a tiny model on 2 CPU cores, as shapes_retrieval.py (common.shapes_config): 64 px, global
batch 32, lr 1e-4, 3 epochs, k_test 16; 48 tokens (the longest text of the lexicon is 38 tokens with the
committed model). `model`: the preset of the pre-trained export it starts from (`cclm_tiny` for a CCLM
pre-training on shapes_ml).

  python main.py --config=configs/finetune/shapes_xretrieval.py:mode=zero_shot,model=cclm_tiny \
      --workdir=artifacts/ml_xretrieval --config.init_from=artifacts/cclm_tiny/export
"""

from x2vlm_jax.configs.finetune import common, multilingual


def get_config(arg=None):
  a = common.parse_arg(
    arg, epochs=3, batch=32, data_dir="artifacts/data", lr=1e-4, res=64, mode="zero_shot", model="tiny"
  )
  from x2vlm_jax.data import shapes_ml

  # common.shapes_config with the preset of the export it starts from
  c = common.base_config(a.model, "xretrieval", a.res, a.batch)
  common.shapes_setup(c, a.data_dir)
  c.num_epochs = a.epochs
  c.optim.lr = a.lr
  c.checkpoint_every = 200
  c.data.vocab_file = shapes_ml.SPM_MODEL
  c.data.max_tokens = 48
  c.data.train = [
    (name, split, 1.0) for name, split, _ in multilingual.train_sets("shapes_ml_retrieval", a.mode, ("de", "fr"))
  ]
  c.itm_group_size = a.batch
  tasks = f"{a.data_dir}/{shapes_ml.TASKS_NAME}"
  c.evals.test = dict(
    type="xretrieval",
    annotations=",".join(f"{tasks}/retrieval_test_{lang}.json" for lang in shapes_ml.LANGUAGES),
    languages=",".join(shapes_ml.LANGUAGES),
    image_root=tasks,
    k_test=16,
    batch_size=64,
    rerank_pairs=256,
    max_tokens=48,
    at_start=True,
    at_end=True,
  )
  c.best_metric = "test/r_mean"
  return c
