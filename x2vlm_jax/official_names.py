"""Our parameter paths → the official PyTorch state-dict keys (docs/reference.md §7.2): the ONE table.

The optimizer decides weight decay and lr groups on these names (x2vlm_jax/training/optimizer.py, the
official rules match substrings of them), and the converter's key layout (x2vlm_jax/convert/layout.py)
is derived from them, so the two cannot disagree. Paths are the unstacked ones ("text/layers/13/...");
a stacked layer array is named per layer through `x2vlm_jax.params_layout.layer_paths`.
"""

import re

import jax

_VARIABLE_ATTRS = ("value", "raw_value")


def path_to_str(path) -> str:
  """A jax key path (or tuple of names/ints, or an "a/b/c" string) → "a/b/c".

  `GetAttrKey('value')` entries, which `nnx.Variable` leaves add under an `nnx.State`, are dropped so
  that a pure dict and an nnx.State give the same strings.
  """
  if isinstance(path, str):
    return path
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      if k.name not in _VARIABLE_ATTRS:
        parts.append(str(k.name))
    elif isinstance(k, jax.tree_util.FlattenedIndexKey):
      parts.append(str(k.key))
    else:
      parts.append(str(k))
  return "/".join(parts)


def _layer_rules(ours: str, bert: str):
  """Module rules of BERT layers: our list `ours` ("text/layers", "text/cross") → `bert`encoder.layer.N."""
  layer = bert + r"encoder.layer.\1"
  return [
    (ours + r"/(\d+)/self_attn/(query|key|value)", layer + r".attention.self.\2"),
    (ours + r"/(\d+)/self_attn/out", layer + ".attention.output.dense"),
    (ours + r"/(\d+)/self_attn/ln", layer + ".attention.output.LayerNorm"),
    (ours + r"/(\d+)/cross_attn/(query|key|value)", layer + r".crossattention.self.\2"),
    (ours + r"/(\d+)/cross_attn/out", layer + ".crossattention.output.dense"),
    (ours + r"/(\d+)/cross_attn/ln", layer + ".crossattention.output.LayerNorm"),
    (ours + r"/(\d+)/intermediate", layer + ".intermediate.dense"),
    (ours + r"/(\d+)/output", layer + ".output.dense"),
    (ours + r"/(\d+)/ln", layer + ".output.LayerNorm"),
  ]


def _bert_rules(ours: str, bert: str, cls: str):
  """Module rules of one BERT stack: our prefix ("text" / "decoder") → its official BertModel prefix and
  MLM-head prefix (docs/reference.md §7.2, §7.3)."""
  return [
    (ours + r"/embeddings/word", bert + "embeddings.word_embeddings"),
    (ours + r"/embeddings/position", bert + "embeddings.position_embeddings"),
    (ours + r"/embeddings/token_type", bert + "embeddings.token_type_embeddings"),
    (ours + r"/embeddings/ln", bert + "embeddings.LayerNorm"),
    *_layer_rules(ours + "/layers", bert),
    (ours + r"/mlm/dense", cls + "transform.dense"),
    (ours + r"/mlm/ln", cls + "transform.LayerNorm"),
  ]


# Whole-path rules: parameters that are not the weight/bias of a sub-module.
_PARAM_RULES = [
  (r"temp", "temp"),
  (r"frame_pos", "absolute_frame_pos_embed"),
  (r"vision/cls_token", "vision_encoder.cls_token"),
  (r"vision/pos_embed", "vision_encoder.pos_embed"),  # BEiT use_abs_pos_emb (the shapes demo only)
  (r"vision/blocks/(\d+)/(gamma_[12])", r"vision_encoder.blocks.\1.\2"),
  (r"vision/blocks/(\d+)/attn/([qv]_bias)", r"vision_encoder.blocks.\1.attn.\2"),
  (r"vision/blocks/(\d+)/attn/rel_pos_table", r"vision_encoder.blocks.\1.attn.relative_position_bias_table"),
  (r"text/mlm/bias", "text_encoder.cls.predictions.bias"),
  (r"decoder/mlm/bias", "text_decoder.cls.predictions.bias"),
  (r"text/lm_head/bias", "mlm_head.predictions.bias"),  # CCLM's untied head (docs/reference.md §1.8)
]
# Module rules: our module path → official module name; the leaf maps kernel/scale/embedding → weight.
_MODULE_RULES = [
  (r"vision/patch_embed", "vision_encoder.patch_embed.proj"),
  (r"vision/blocks/(\d+)/(norm[12])", r"vision_encoder.blocks.\1.\2"),
  (r"vision/blocks/(\d+)/attn/(qkv|proj)", r"vision_encoder.blocks.\1.attn.\2"),
  (r"vision/blocks/(\d+)/(fc[12])", r"vision_encoder.blocks.\1.mlp.\2"),
  (r"vision/fc_norm", "vision_encoder.fc_norm"),
  *_bert_rules("text", "text_encoder.bert.", "text_encoder.cls.predictions."),
  # VQA answer decoder (docs/reference.md §7.3): a BertLMHeadModel under `text_decoder`.
  *_bert_rules("decoder", "text_decoder.bert.", "text_decoder.cls.predictions."),
  # CCLM (docs/reference.md §1.8, §7.2): XLM-R layers stay `text/layers` (→ text_encoder.*, named with the
  # English `bert.` infix, which no group or decay rule looks at; the converter's layout drops it); the
  # cross encoder and the untied MLM head.
  *_layer_rules("text/cross", "cross_encoder."),
  (r"text/lm_head/dense", "mlm_head.predictions.transform.dense"),
  (r"text/lm_head/ln", "mlm_head.predictions.transform.LayerNorm"),
  (r"text/lm_head/decoder", "mlm_head.predictions.decoder"),
  (r"(vision_proj|text_proj)", r"\1"),
  (r"(itm_head|bbox_head)/fc0", r"\1.0"),
  (r"(itm_head|bbox_head)/ln", r"\1.1"),
  (r"(itm_head|bbox_head)/fc1", r"\1.3"),
  # Fine-tuning heads: NLVR2 and classification both call theirs `cls_head` (docs/reference.md §7.3).
  (r"(?:nlvr_head|cls_head)/fc0", "cls_head.0"),
  (r"(?:nlvr_head|cls_head)/ln", "cls_head.1"),
  (r"(?:nlvr_head|cls_head)/fc1", "cls_head.3"),
]
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def official_name(path) -> str:
  """Our param path ("vision/blocks/3/norm1/scale", a key path or a tuple) → official PyTorch key
  ("vision_encoder.blocks.3.norm1.weight"), docs/reference.md §7.2. Raises ValueError for an unknown path so that a
  new parameter cannot silently fall into the wrong optimizer group."""
  s = path_to_str(path)
  for pattern, repl in _PARAM_RULES:
    m = re.fullmatch(pattern, s)
    if m:
      return m.expand(repl)
  module, _, leaf = s.rpartition("/")
  if leaf in _LEAF_NAMES:
    for pattern, repl in _MODULE_RULES:
      m = re.fullmatch(pattern, module)
      if m:
        return m.expand(repl) + "." + _LEAF_NAMES[leaf]
  raise ValueError(
    f"official_name: no official PyTorch name known for parameter {s!r}; "
    "extend the tables in x2vlm_jax/official_names.py"
  )
