"""Which official model class wrote a checkpoint, read from its keys: the task heads it carries and the
pre-training heads it lacks (docs/reference.md §7.3).

Every official task model is `XVLMBase` built with some of its heads switched off (`use_contrastive_loss`,
`use_matching_loss`, `use_mlm_loss`, `use_bbox_loss`) plus at most one task head of its own, and saves
`model.state_dict()` whole. So the set of head groups a file holds names its class exactly, and with
the class the converter knows (a) the model config the file needs (NLVR2 head, classifier width, answer
decoder depth) and (b) which of our always-present pre-training heads the file cannot have; those stay
freshly initialised and are listed as `new_params`. A file whose groups match no official class gets
no such allowance: the strict conversion then lists what is missing.

The multilingual release (CCLM) has the same structure one level up: every X²-VLM-Plus task class is
`XVLMPlusBase` (XLM-R `text_encoder`, a separate `cross_encoder`, an untied `mlm_head`) with the same
`use_*` switches plus one task head (models/model_retrieval.py, model_classification.py,
model_generation.py), so its files are read the same way, against the Plus classes.
"""

from typing import Dict, FrozenSet, NamedTuple, Optional, Tuple

import numpy as np

from x2vlm_jax.convert import layout as L

# head group → (predicate on an official key, our param prefixes of that group)
_GROUPS = {
  "mlm": (lambda k: k.startswith(L.CLS_PREFIX), ("text/mlm",)),
  "itc": (lambda k: k == "temp" or k.startswith(("vision_proj.", "text_proj.")), ("vision_proj", "text_proj", "temp")),
  "itm": (lambda k: k.startswith("itm_head."), ("itm_head",)),
  "bbox": (lambda k: k.startswith("bbox_head."), ("bbox_head",)),
  "cls": (lambda k: k.startswith("cls_head."), ()),
  "decoder": (lambda k: k.startswith("text_decoder."), ()),
}
# X²-VLM-Plus: the MLM head is the untied `mlm_head.` (XVLMPlusBase, use_mlm_loss), ours `text/lm_head`.
_PLUS_GROUPS = {**_GROUPS, "mlm": (lambda k: k.startswith(L.XLMR_CLS_PREFIX), ("text/lm_head",))}
_PRETRAIN_GROUPS = ("mlm", "itc", "itm", "bbox")


class OfficialClass(NamedTuple):
  task: str  # our name of the task the file belongs to
  cls: str  # the official class (models/model_*.py) and the script that trains it
  groups: FrozenSet[str]
  plus: bool = False  # an X²-VLM-Plus class (XLM-R text encoder + `cross_encoder`: the CCLM release)


# The official classes and the head groups their state dict holds (their `super().__init__(use_*=...)`).
OFFICIAL_CLASSES: Tuple[OfficialClass, ...] = (
  OfficialClass("pretrain", "XVLM (models/model_pretrain.py, Pretrain.py)", frozenset(_PRETRAIN_GROUPS)),
  OfficialClass("retrieval", "XVLMForRetrieval (models/model_retrieval.py, Retrieval.py)", frozenset({"itc", "itm"})),
  OfficialClass("grounding", "XVLMForGrounding (models/model_grounding.py, Grounding_bbox.py)", frozenset({"bbox"})),
  OfficialClass(
    "captioning", "XVLMForMLMCaptioning (models/model_generation.py, Captioning_MLM.py)", frozenset({"mlm"})
  ),
  OfficialClass("vqa", "XVLMForVQA (models/model_generation.py, VQA.py)", frozenset({"decoder"})),
  # The two classes with a `cls_head` are told apart by its input width: 2H (two fused [CLS]) or H.
  OfficialClass("nlvr2", "XVLMForNLVR (models/model_classification.py, NLVR.py)", frozenset({"cls"})),
  OfficialClass(
    "video_qa",
    "XVLMForClassification (models/model_classification.py, VQA_msrvtt.py / VQA_msvd.py)",
    frozenset({"cls"}),
  ),
  # X²-VLM-Plus (multilingual, CCLM): the same switches on XVLMPlusBase.
  OfficialClass(
    "cclm_pretrain", "CrossViewLM (models/model_pretrain.py, Pretrain.py)", frozenset(_PRETRAIN_GROUPS), plus=True
  ),
  OfficialClass(
    "xretrieval",
    "XVLMPlusForRetrieval (models/model_retrieval.py, XRetrieval.py / WIT.py)",
    frozenset({"itc", "itm"}),
    plus=True,
  ),
  OfficialClass("xgqa", "XVLMPlusForVQA (models/model_generation.py, XGQA.py)", frozenset({"decoder"}), plus=True),
  # As above, told apart by the `cls_head` input width: 2H (MaRVL's image pair) or H (XVNLI).
  OfficialClass("marvl", "XVLMPlusForMARVL (models/model_classification.py, MARVL.py)", frozenset({"cls"}), plus=True),
  OfficialClass("xvnli", "XVLMPlus4XVNLI (models/model_classification.py, XVNLI.py)", frozenset({"cls"}), plus=True),
)
# The classification classes by (plus, cls_head input = 2H): NLVR-style pair heads get heads.nlvr.
_PAIR_TASK = {False: "nlvr2", True: "marvl"}
_SINGLE_TASK = {False: "video_qa", True: "xvnli"}

# Non-parameter buffers the official models register and `state_dict()` saves (skipped by name):
# the label-smoothing target row of the captioning loss, `LabelSmoothingLoss.one_hot`
# (models/model_generation.py: XVLMForMLMCaptioning.crit_mask_lm_smoothed).
BUFFER_KEYS = frozenset({"crit_mask_lm_smoothed.one_hot"})


class Detected(NamedTuple):
  task: str
  cls: str
  heads: Dict[str, int]  # cfg.heads fields the file needs: nlvr, num_labels, decoder_layers
  absent: Tuple[str, ...]  # our param prefixes the official class does not have (stay fresh)


def head_groups(sd: Dict[str, np.ndarray], plus: bool = False) -> FrozenSet[str]:
  groups = _PLUS_GROUPS if plus else _GROUPS
  return frozenset(g for g, (has, _) in groups.items() if any(has(k) for k in sd))


def is_plus(sd: Dict[str, np.ndarray]) -> bool:
  """An X²-VLM-Plus file: it has the separate `cross_encoder` (docs/reference.md §1.8)."""
  return any(k.startswith(L.CROSS_PREFIX) for k in sd)


def _cls_head_input(sd) -> Optional[int]:
  w = sd.get("cls_head.0.weight")  # build_mlp: Linear(in, 2·in), LayerNorm, GELU, Linear(2·in, out)
  return int(np.shape(w)[1]) if w is not None and np.ndim(w) == 2 else None


def detect(sd: Dict[str, np.ndarray], hidden: int, xlmr: bool = False) -> Optional[Detected]:
  """The official class of `sd` for a text stack of width `hidden`, or None (no class matches: then
  nothing is implied and the strict conversion reports every difference). `xlmr`: the model to convert
  into has the multilingual text side (a cclm_* preset); a file of the other family is refused, naming it."""
  plus = is_plus(sd)
  if plus and not xlmr:
    raise ValueError(
      "this is an X²-VLM-Plus checkpoint (a separate `cross_encoder`: the multilingual CCLM models of "
      "Pretrain.py (CrossViewLM), XVNLI.py, MARVL.py, XGQA.py, XRetrieval.py, WIT.py): convert it with a "
      "cclm_* --model"
    )
  if xlmr and not plus:
    raise ValueError(
      "a cclm_* --model needs an X²-VLM-Plus checkpoint (XLM-R `text_encoder` + `cross_encoder`); this file "
      "has no `cross_encoder.*` keys: convert an English X²-VLM file with tiny/base/large, or start a CCLM "
      "model from it with --cclm_init and --xlmr"
    )
  groups = head_groups(sd, plus)
  heads: Dict[str, int] = {}
  matches = [c for c in OFFICIAL_CLASSES if c.groups == groups and c.plus == plus]
  if groups == {"cls"}:
    width = _cls_head_input(sd)
    out = sd.get("cls_head.3.weight")
    if width == 2 * hidden and out is not None and np.shape(out)[0] == 2:
      matches, heads = [c for c in matches if c.task == _PAIR_TASK[plus]], {"nlvr": 1}
    elif width == hidden and out is not None and np.ndim(out) == 2:
      matches, heads = [c for c in matches if c.task == _SINGLE_TASK[plus]], {"num_labels": int(np.shape(out)[0])}
    else:
      return None  # a cls_head of another width: the strict conversion names it
  if not matches:
    return None
  if "decoder" in groups:
    head = L.DECODER_PREFIX + "encoder.layer."
    heads["decoder_layers"] = len({k[len(head) :].split(".")[0] for k in sd if k.startswith(head)})
  c = matches[0]
  prefixes = _PLUS_GROUPS if plus else _GROUPS
  absent = tuple(p for g in _PRETRAIN_GROUPS if g not in c.groups for p in prefixes[g][1])
  return Detected(c.task, c.cls, heads, absent)


def apply(cfg, detected: Detected) -> None:
  """Sets cfg.heads to the task heads the detected class carries (the others off)."""
  cfg.heads.nlvr = bool(detected.heads.get("nlvr"))
  cfg.heads.num_labels = int(detected.heads.get("num_labels", 0))
  cfg.heads.decoder_layers = int(detected.heads.get("decoder_layers", 0))
