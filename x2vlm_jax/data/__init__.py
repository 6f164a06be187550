"""Input pipeline (the only package besides tools/ allowed to import tensorflow).

Submodules are imported lazily by callers so `import x2vlm_jax.data` stays cheap:
  config    get_data_config()
  pipeline  create_train_iterator(), load_eval_split()
  shapes    build() for the embedded procedural dataset
"""
