"""On-disk format of model weights: an Orbax PyTree of float32 params + `model_config.json`.

    DIR/model_config.json   the model preset (ml_collections → JSON), incl. image_res / num_frames
    DIR/params/             Orbax StandardSave of the NNX param state as a pure nested dict
    DIR/vocab.txt           the WordPiece vocabulary the weights were trained with (when known), or
    DIR/sentencepiece.bpe.model   the XLM-R SentencePiece model (the multilingual CCLM model)

Written by `tools/convert_checkpoint.py` and by the trainer's export, read by `inference.load` and by
`--config.init_from`. The readers also take a training workdir (`WORKDIR` or `WORKDIR@STEP`: a run
that never exported; x2vlm_jax/run_dir.py). The params are stored in the layout of the stored config
(`scan_layers`: stacked layer groups, x2vlm_jax/params_layout.py; a config without the key, written
before scanning existed, means unstacked); `save` converts to it and `load` converts from it to the
requested model's layout. Restoring always goes through an abstract target built from the config, so a
checkpoint for another preset or resolution fails with a clear message instead of inside XLA.
"""

import json
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from x2vlm_jax import fs, params_layout, run_dir
from x2vlm_jax.models import X2VLM, presets
from x2vlm_jax.models.layers import REPLICATED_RULES

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
VOCAB_FILE = "vocab.txt"
SPM_FILE = "sentencepiece.bpe.model"  # inference/spm_tokenizer.py: MODEL_FILE


def abstract_model(cfg) -> X2VLM:
  """Shapes only; logical axes stay metadata (resolved later by the trainer's mesh rules)."""
  with nnx.logical_axis_rules(REPLICATED_RULES):
    return nnx.eval_shape(lambda: X2VLM(cfg, rngs=nnx.Rngs(0)))


def param_shapes(cfg) -> Dict[str, Tuple[tuple, Any]]:
  """Flat {"a/b/c": (shape, dtype)} of the model's parameters, without allocating them."""
  state = nnx.state(abstract_model(cfg), nnx.Param)
  flat = nnx.to_flat_state(state)
  return {"/".join(str(k) for k in path): (tuple(v.get_value().shape), v.get_value().dtype) for path, v in flat}


def save(directory: str, cfg, params: Dict[str, Any], vocab_file: Optional[str] = None) -> None:
  """params: pure nested dict (as `nnx.to_pure_dict(nnx.state(model, nnx.Param))`) of host or
  fully-replicated arrays, in either layout (written in the layout of `cfg`). In a multi-process job
  every process must call this (Orbax's save is a
  collective); process 0 writes the config (and the vocabulary) and replaces an older export."""
  root = fs.path(directory)
  target = root / PARAMS_DIR
  if jax.process_index() == 0:
    root.mkdir(parents=True, exist_ok=True)
    (root / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    if vocab_file:
      write_vocab(directory, vocab_file)
    if target.exists():
      target.rmtree()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"params_io.save:{directory}")
  params = jax.tree.map(lambda x: np.asarray(x, dtype=np.float32), params)
  params = params_layout.to_layout(params, cfg)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(target, params)


def load_config(directory: str) -> ml_collections.ConfigDict:
  if run_dir.is_run(directory):
    return run_dir.model_config(directory)
  path = fs.path(directory) / CONFIG_FILE
  if not path.exists():
    raise ValueError(
      f"checkpoint_dir: {directory!r} has no {CONFIG_FILE}; expected a directory written by "
      "tools/convert_checkpoint.py or the trainer's export, or a training workdir (config.json + checkpoints/)"
    )
  stored = json.loads(path.read_text())
  cfg = presets.get_preset(stored["name"])
  cfg.update(stored)
  # The layout the params were written in, not the preset's current default.
  cfg.scan_layers = params_layout.stored_scan_layers(stored)
  presets.validate(cfg)
  return cfg


def load(directory: str, cfg=None, sharding=None):
  """→ (cfg, params pure dict). `cfg` overrides the stored config's runtime fields (dtype, attention,
  scan_layers: the params come back in the layout of the returned cfg, whatever the stored one)."""
  stored = load_config(directory)
  if cfg is None:
    cfg = stored
  else:
    for key in ("name", "image_res", "num_frames", "embed_dim"):
      if cfg[key] != stored[key]:
        raise ValueError(
          f"checkpoint {directory!r}: it was written for {key}={stored[key]!r}, "
          f"the requested model has {key}={cfg[key]!r}"
        )
  if bool(cfg.get("scan_layers", False)) != stored.scan_layers:
    # Another layout on disk: restore it on the host, convert, then place.
    _, params = load_numpy(directory)
    params = params_layout.to_layout(params, cfg)
    if sharding is not None:
      params = jax.tree.map(lambda x, s: jax.device_put(x, s), params, sharding)
    return cfg, params
  abstract = nnx.to_pure_dict(nnx.state(abstract_model(cfg), nnx.Param))
  if sharding is None:
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)
  else:
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, sharding)
  if run_dir.is_run(directory):
    return cfg, run_dir.restore_params(directory, target)[0]
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(fs.path(directory) / PARAMS_DIR, target)
  return cfg, params


def load_numpy(directory: str) -> Tuple[ml_collections.ConfigDict, Dict[str, Any]]:
  """→ (the stored model config, params as a nested dict of host numpy arrays in the stored layout),
  whatever the model.
  Used to initialise a differently shaped model from a checkpoint (`training.init_from`)."""
  cfg = load_config(directory)
  abstract = nnx.to_pure_dict(nnx.state(abstract_model(cfg), nnx.Param))
  # numpy leaves in the target make Orbax restore numpy arrays on the host (np.empty costs no memory
  # until written), whatever mesh the reading job runs on.
  target = jax.tree.map(lambda x: np.empty(x.shape, x.dtype), abstract)
  if run_dir.is_run(directory):
    return cfg, run_dir.restore_params(directory, target)[0]
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(fs.path(directory) / PARAMS_DIR, target)
  return cfg, params


def write_vocab(directory: str, vocab_file: str) -> None:
  """Copies the tokenizer's file next to the weights (the checkpoint carries its tokenizer): a WordPiece
  vocabulary as vocab.txt, a SentencePiece `*.model` as sentencepiece.bpe.model."""
  src = epath.Path(vocab_file)
  if not src.exists():
    raise ValueError(f"vocab_file: {vocab_file!r} does not exist")
  if str(vocab_file).endswith(".model"):
    data = src.read_bytes()
    if not data:
      raise ValueError(f"vocab_file: {vocab_file!r} is empty")
    (fs.path(directory) / SPM_FILE).write_bytes(data)
    return
  text = src.read_text()
  if not text.strip():
    raise ValueError(f"vocab_file: {vocab_file!r} is empty")
  (fs.path(directory) / VOCAB_FILE).write_text(text)


def vocab_file(directory: str) -> Optional[str]:
  """The checkpoint's tokenizer file (DIR/sentencepiece.bpe.model or DIR/vocab.txt; a run: its
  data.vocab_file), else None."""
  if run_dir.is_run(directory):
    return run_dir.vocab_file(directory)
  for name in (SPM_FILE, VOCAB_FILE):
    path = fs.path(directory) / name
    if path.exists():
      return str(path)
  return None


def into_model(model: X2VLM, params: Dict[str, Any]) -> X2VLM:
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  return model
