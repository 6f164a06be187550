"""Model presets (ml_collections) with the official sizes (docs/reference.md §1.1) and a tiny one for tests.

A preset describes the *architecture*; training hyper-parameters live in `configs/`.
"""

import ml_collections

# CLIP normalisation constants used by every official transform (docs/reference.md §4.3).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _common() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = ""
  c.image_res = 224
  c.patch_size = 16
  c.embed_dim = 256  # joint ITC space E
  # Video (docs/reference.md §1.7): number of learned frame embeddings; 0 means "no frame embedding" (image-only
  # checkpoints such as x2vlm_base_4m.th do not carry `absolute_frame_pos_embed`).
  c.num_frames = 0
  c.dtype = "float32"  # compute dtype; parameters are always float32
  c.attention_impl = "xla"  # "xla" | "cudnn" (GPU only; must be asked for explicitly)
  # Scan over identical layers (x2vlm_jax/models/scan.py): one compiled layer per group (vision
  # blocks, text-only layers, fusion layers, decoder layers), params stacked on a leading axis.
  # On in base/large (compile time and compiler memory stop growing with depth), off in tiny.
  c.scan_layers = False
  # Rematerialisation policy per tower: none | full | dots_saveable | dots_with_no_batch_dims_saveable
  # (models/scan.py); the decoder follows `text`. `remat_vision` / `remat_text` are the older booleans,
  # kept as aliases: True means "full" where the policy is "none".
  c.remat = ml_collections.ConfigDict({"vision": "none", "text": "none"})
  c.remat_vision = False
  c.remat_text = False
  # Text side (docs/reference.md §1.5, §1.8): "bert" = the English 18-layer stack whose last layers fuse;
  # "xlmr" = XLM-R text encoder + a separate BERT-layout cross encoder (`cross`), the official
  # XVLMPlus / CrossViewLM structure of the multilingual (CCLM) models.
  c.text_encoder = "bert"
  # Pin each layer's output to batch sharding over (data, fsdp) under an FSDP mesh (models/scan.py
  # `constrain_batch`); False leaves the activations' sharding to GSPMD's propagation.
  c.constrain_activations = True

  c.vision = ml_collections.ConfigDict()
  c.vision.width = 768
  c.vision.depth = 12
  c.vision.num_heads = 12
  c.vision.mlp_dim = 3072
  c.vision.layer_norm_eps = 1e-6
  c.vision.layer_scale_init = 0.1
  c.vision.drop_path_rate = 0.1
  # BEiT `use_abs_pos_emb`: False in every released model (docs/reference.md §1.2); only the from-scratch `shapes`
  # demo turns it on (configs/pretrain/shapes_tiny.py, docs/grounding.md).
  c.vision.abs_pos_emb = False
  # Its initial value: BEiT's "trunc_normal" (std 0.02), or "sincos" (MAE's fixed 2-D sin-cos table,
  # here as the starting value of the learned table).
  c.vision.pos_embed_init = "trunc_normal"

  c.text = ml_collections.ConfigDict()
  c.text.hidden = 768
  c.text.num_heads = 12
  c.text.ffn_dim = 3072
  c.text.num_layers = 18
  c.text.fusion_start = 12
  c.text.vocab_size = 30522
  c.text.max_positions = 512
  c.text.type_vocab_size = 2
  c.text.layer_norm_eps = 1e-12
  c.text.hidden_dropout = 0.1
  c.text.attention_dropout = 0.1
  # Token-position DropPath of the official BERT (docs/reference.md §1.4); only RefCOCO+ large uses it.
  c.text.drop_path_rate = 0.0
  c.text.cross_drop_path_rate = 0.0
  c.text.pad_token_id = 0

  c.head_layer_norm_eps = 1e-5  # itm_head / bbox_head LayerNorm
  c.temp_init = 0.07

  # Task heads beyond pre-training (docs/reference.md §1.5, §5.3, §5.6); a fine-tuning config switches on the
  # one its task needs. Absent heads have no parameters, so pre-training checkpoints stay unchanged.
  c.heads = ml_collections.ConfigDict()
  c.heads.nlvr = False  # NLVR2 `cls_head`: MLP(2H → 4H → LN → GELU → 2) over two fused [CLS]
  c.heads.num_labels = 0  # classification `cls_head`: MLP(H → 2H → LN → GELU → num_labels)
  # VQA answer decoder `text_decoder` (docs/reference.md §5.2): 6 (released configs) or 3 layers; 0 = none.
  c.heads.decoder_layers = 0
  return c


def base() -> ml_collections.ConfigDict:
  c = _common()
  c.name = "base"
  c.scan_layers = True
  return c


def large() -> ml_collections.ConfigDict:
  c = _common()
  c.name = "large"
  c.scan_layers = True
  c.vision.update(width=1024, depth=24, num_heads=16, mlp_dim=4096)
  c.text.update(hidden=1024, num_heads=16, ffn_dim=4096)
  return c


def tiny() -> ml_collections.ConfigDict:
  """A tiny geometry for tests and CPU demos (every dimension small, every structural feature kept)."""
  c = _common()
  c.name = "tiny"
  c.image_res = 32
  c.embed_dim = 32
  c.vision.update(width=64, depth=2, num_heads=4, mlp_dim=256, layer_norm_eps=1e-6)
  c.text.update(
    hidden=64,
    num_heads=4,
    ffn_dim=256,
    num_layers=3,
    fusion_start=2,
    vocab_size=200,
    max_positions=64,
    layer_norm_eps=1e-12,
  )
  return c


def _xlmr(c: ml_collections.ConfigDict, *, num_layers: int, vocab_size: int, max_positions: int):
  """Turns a preset into its XVLMPlus / CrossViewLM form (docs/reference.md §1.8): `text` becomes XLM-R
  (RoBERTa layout: pad id 1, positions from padding_idx + 1, one token type, LayerNorm eps 1e-5, no
  cross-attention) and `cross` the 6-layer BERT-layout cross encoder (every layer cross-attends to the
  vision tokens; geometry of bert-base/-large-uncased, eps 1e-12). Official config keys:
  configs/pretrain/multilingual_cclm_x2vlm_{base,large}.yaml (`text_num_hidden_layers`,
  `cross_num_hidden_layers: 6`); XLM-R sizes from the public xlm-roberta-{base,large} config.json."""
  c.text_encoder = "xlmr"
  # `scan_layers` stays the English preset's: base/large scan the vision blocks, the XLM-R layers and the
  # cross encoder (models/xlmr.py, params_layout.py: text/text_stack, text/cross_stack); tiny does not.
  c.cross = ml_collections.ConfigDict()
  c.cross.num_layers = 6
  c.cross.num_heads = c.text.num_heads
  c.cross.ffn_dim = c.text.ffn_dim
  c.cross.layer_norm_eps = 1e-12
  c.cross.hidden_dropout = 0.1
  c.cross.attention_dropout = 0.1
  c.text.update(
    num_layers=num_layers,
    fusion_start=num_layers,  # no fusion inside the text encoder: the cross encoder does it
    vocab_size=vocab_size,
    max_positions=max_positions,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
  )
  return c


def cclm_base() -> ml_collections.ConfigDict:
  """multilingual_cclm_x2vlm_base.yaml: BEiT-v2 base + xlm-roberta-base (12 layers, V=250002, 514 positions)."""
  c = _xlmr(base(), num_layers=12, vocab_size=250002, max_positions=514)
  c.name = "cclm_base"
  return c


def cclm_large() -> ml_collections.ConfigDict:
  """multilingual_cclm_x2vlm_large.yaml: BEiT-v2 large + xlm-roberta-large (24 layers, H=1024)."""
  c = _xlmr(large(), num_layers=24, vocab_size=250002, max_positions=514)
  c.name = "cclm_large"
  return c


def cclm_tiny() -> ml_collections.ConfigDict:
  """The tiny geometry with the multilingual text side: 2 XLM-R layers + 1 cross-encoder layer."""
  c = _xlmr(tiny(), num_layers=2, vocab_size=200, max_positions=66)
  c.cross.num_layers = 1
  c.name = "cclm_tiny"
  return c


PRESETS = {
  "tiny": tiny,
  "base": base,
  "large": large,
  "cclm_tiny": cclm_tiny,
  "cclm_base": cclm_base,
  "cclm_large": cclm_large,
}


def get_preset(name: str, **overrides) -> ml_collections.ConfigDict:
  """Returns a fresh preset; `overrides` are top-level keys (e.g. image_res=384, num_frames=3)."""
  if name not in PRESETS:
    raise ValueError(f"model preset: expected one of {sorted(PRESETS)}, got {name!r}")
  c = PRESETS[name]()
  for k, v in overrides.items():
    if k not in c:
      raise ValueError(f"model preset override: unknown key {k!r} (known: {sorted(c.keys())})")
    c[k] = v
  validate(c)
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Checks the geometry up-front so a bad config fails here, not inside XLA."""
  if c.image_res % c.patch_size:
    raise ValueError(f"image_res: expected a multiple of patch_size={c.patch_size}, got {c.image_res}")
  if c.vision.width % c.vision.num_heads:
    raise ValueError(f"vision.width={c.vision.width} is not divisible by vision.num_heads={c.vision.num_heads}")
  if c.text.hidden % c.text.num_heads:
    raise ValueError(f"text.hidden={c.text.hidden} is not divisible by text.num_heads={c.text.num_heads}")
  if not 0 <= c.text.fusion_start <= c.text.num_layers:
    raise ValueError(f"text.fusion_start: expected 0..{c.text.num_layers}, got {c.text.fusion_start}")
  if c.dtype not in ("float32", "bfloat16", "float16"):
    raise ValueError(f"dtype: expected float32/bfloat16/float16, got {c.dtype!r}")
  if c.attention_impl not in ("xla", "cudnn"):
    raise ValueError(f"attention_impl: expected 'xla' or 'cudnn', got {c.attention_impl!r}")
  if c.num_frames < 0:
    raise ValueError(f"num_frames: expected >= 0, got {c.num_frames}")
  if c.heads.num_labels < 0:
    raise ValueError(f"heads.num_labels: expected >= 0, got {c.heads.num_labels}")
  if c.heads.decoder_layers < 0:
    raise ValueError(f"heads.decoder_layers: expected >= 0, got {c.heads.decoder_layers}")
  if c.get("text_encoder", "bert") not in ("bert", "xlmr"):
    raise ValueError(f"text_encoder: expected 'bert' or 'xlmr', got {c.text_encoder!r}")
  if c.get("text_encoder", "bert") == "xlmr":
    if "cross" not in c:
      raise ValueError("text_encoder='xlmr' needs a `cross` section (the cross encoder); use a cclm_* preset")
    if c.text.hidden % c.cross.num_heads:
      raise ValueError(f"cross.num_heads={c.cross.num_heads} does not divide text.hidden={c.text.hidden}")
    if c.text.max_positions < c.text.pad_token_id + 2:
      raise ValueError("xlmr: max_positions must exceed pad_token_id + 1 (RoBERTa positions start there)")
  for tower in ("vision", "text"):
    remat_policy(c, tower)
  if c.heads.nlvr and c.heads.num_labels:
    raise ValueError("heads: nlvr and num_labels both use the official name `cls_head`; enable one")


REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")


def remat_policy(c, tower: str) -> str:
  """The policy of `tower` ("vision" | "text"): `c.remat[tower]`, or "full" where only the older
  boolean alias `c.remat_<tower>` is set (configs and exports written before the policies)."""
  name = "none"
  remat = c.get("remat", None)
  if remat is not None and tower in remat:
    name = remat[tower] or "none"
  if name == "none" and bool(c.get(f"remat_{tower}", False)):
    name = "full"
  if name not in REMAT_POLICIES:
    raise ValueError(f"model.remat.{tower}: expected one of {REMAT_POLICIES}, got {name!r}")
  return name


def grid_size(c) -> int:
  return c.image_res // c.patch_size


def num_patches(c) -> int:
  return grid_size(c) ** 2
