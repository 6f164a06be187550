"""Official multilingual (CCLM, X²-VLM-Plus) task checkpoints convert with no flags into a cclm_* model
(x2vlm_jax/convert/task_heads.py), as the English task files do (tests/test_convert_tasks.py).

Each file is fabricated as its official class saves it (`model.state_dict()`): `XVLMPlusBase` — XLM-R
`text_encoder`, a separate `cross_encoder`, the untied `mlm_head` only with `use_mlm_loss` — with the heads
its `super().__init__(use_*=...)` keeps plus its own task head: XVLMPlusForRetrieval (XRetrieval.py /
WIT.py), XVLMPlus4XVNLI (XVNLI.py), XVLMPlusForMARVL (MARVL.py), XVLMPlusForVQA (XGQA.py), and the
pre-training CrossViewLM (models/model_pretrain.py).
"""

import json

import numpy as np
import pytest
from convert_helpers import random_official_state_dict
from helpers.tools import load_tool

from tests.helpers.tiers import tiered
from tests.test_convert_tasks import ITC, _build_mlp
from tests.test_marvl import marvl_files  # noqa: F401  (fixture)
from tests.test_xvnli import files as xvnli_files  # noqa: F401  (fixture)
from x2vlm_jax import params_io
from x2vlm_jax.convert import task_heads
from x2vlm_jax.models import get_preset

XVNLI_LABELS = 3  # XVNLI.py: num_labels 3 (contradiction, entailment, neutral)

# Written from the official Plus classes (not from our layout): the pre-training heads each one builds.
PLUS_HEADS = ITC + ("itm_head.", "bbox_head.", "mlm_head.")
OFFICIAL_KEEPS = {
  "cclm_pretrain": PLUS_HEADS,  # CrossViewLM: every use_* True
  "xretrieval": ITC + ("itm_head.",),  # XVLMPlusForRetrieval: use_contrastive_loss, use_matching_loss
  "xvnli": (),  # XVLMPlus4XVNLI: none, + cls_head (H → num_labels)
  "marvl": (),  # XVLMPlusForMARVL: none, + cls_head (2H → 2)
  "xgqa": (),  # XVLMPlusForVQA: none, + text_decoder
}
# What each class lacks, as our param prefixes (freshly initialised, reported as new_params).
ALL_PRETRAIN = {"text/lm_head", "vision_proj", "text_proj", "temp", "itm_head", "bbox_head"}
ABSENT = {
  "cclm_pretrain": set(),
  "xretrieval": {"text/lm_head", "bbox_head"},
  "xvnli": ALL_PRETRAIN,
  "marvl": ALL_PRETRAIN,
  "xgqa": ALL_PRETRAIN,
}
TASKS = list(OFFICIAL_KEEPS)


def official_plus_file(task: str, seed: int = 0):
  """(state dict as the official Plus class saves it, the cclm_tiny config it was made for)."""
  cfg = get_preset("cclm_tiny")
  if task == "xgqa":
    # XVLMPlusForVQA.build_text_decoder asserts num_dec_layers == the cross encoder's depth.
    cfg.heads.decoder_layers = cfg.cross.num_layers
  full = random_official_state_dict(cfg, seed=seed, with_buffers=False)
  assert any(k.startswith("cross_encoder.") for k in full) and any(k.startswith("mlm_head.") for k in full)
  rng = np.random.default_rng(seed + 200)
  h = cfg.text.hidden
  sd = {k: v for k, v in full.items() if not k.startswith(PLUS_HEADS) or k.startswith(OFFICIAL_KEEPS[task])}
  # Buffers and tied duplicates a saved state dict holds.
  sd["text_encoder.embeddings.position_ids"] = np.arange(cfg.text.max_positions)[None]
  n_tok = (cfg.image_res // cfg.patch_size) ** 2 + 1
  for i in range(cfg.vision.depth):
    sd[f"vision_encoder.blocks.{i}.attn.relative_position_index"] = np.zeros((n_tok, n_tok), np.int64)
  if "mlm_head.predictions.bias" in sd:
    sd["mlm_head.predictions.decoder.bias"] = sd["mlm_head.predictions.bias"].copy()
  if task == "xvnli":
    sd.update(_build_mlp(rng, "cls_head", h, XVNLI_LABELS))
  if task == "marvl":
    sd.update(_build_mlp(rng, "cls_head", 2 * h, 2))
  if task == "xgqa":  # BertLMHeadModel: the tied copies and its position_ids buffer
    sd["text_decoder.bert.embeddings.position_ids"] = np.arange(512)[None]
    sd["text_decoder.cls.predictions.decoder.weight"] = sd["text_decoder.bert.embeddings.word_embeddings.weight"]
    sd["text_decoder.cls.predictions.decoder.bias"] = sd["text_decoder.cls.predictions.bias"]
  return {k: np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else v for k, v in sd.items()}, cfg


def _convert(task, tmp_path, vocab=None):
  sd, cfg = official_plus_file(task)
  np.savez(tmp_path / f"{task}.npz", **sd)
  out = tmp_path / f"{task}_ckpt"
  rc = load_tool("convert_checkpoint").main(
    ["--input", str(tmp_path / f"{task}.npz"), "--model", "cclm_tiny", "--output", str(out)]
    + (["--vocab", vocab] if vocab else [])
  )
  assert rc == 0
  return sd, cfg, out


@pytest.mark.parametrize("task", tiered(TASKS, fast=["xretrieval"]))
def test_official_plus_task_file_converts_with_no_flags(task, tmp_path):
  sd, cfg, out = _convert(task, tmp_path)
  report = json.loads((out / "conversion.json").read_text())
  assert report["official_task"]["task"] == task
  assert report["text_layout"] == "CrossViewLM"
  # Only the heads the official class does not build are fresh; every one of their params is listed.
  got = {"text/lm_head" if p.startswith("text/lm_head") else p.split("/")[0] for p in report["new_params"]}
  assert got == ABSENT[task]
  loaded, params = params_io.load(str(out))
  assert loaded.text_encoder == "xlmr"
  assert bool(loaded.heads.nlvr) == (task == "marvl")
  assert loaded.heads.num_labels == (XVNLI_LABELS if task == "xvnli" else 0)
  assert loaded.heads.decoder_layers == (cfg.cross.num_layers if task == "xgqa" else 0)
  # The task head holds the file's tensors (Linear weight [out, in] → kernel [in, out]).
  if task in ("xvnli", "marvl"):
    head = params["nlvr_head" if task == "marvl" else "cls_head"]
    np.testing.assert_array_equal(head["fc0"]["kernel"], sd["cls_head.0.weight"].T)
    np.testing.assert_array_equal(head["ln"]["scale"], sd["cls_head.1.weight"])
    np.testing.assert_array_equal(head["fc1"]["bias"], sd["cls_head.3.bias"])
  if task == "xgqa":
    np.testing.assert_array_equal(
      params["decoder"]["layers"][0]["output"]["kernel"], sd["text_decoder.bert.encoder.layer.0.output.dense.weight"].T
    )
  if task == "xretrieval":
    np.testing.assert_array_equal(params["itm_head"]["fc1"]["kernel"], sd["itm_head.3.weight"].T)
  if task == "cclm_pretrain":
    np.testing.assert_array_equal(params["text"]["lm_head"]["bias"], sd["mlm_head.predictions.bias"])
  # The two text towers hold the file's tensors too.
  np.testing.assert_array_equal(
    params["text"]["cross"][0]["cross_attn"]["key"]["kernel"],
    sd["cross_encoder.encoder.layer.0.crossattention.self.key.weight"].T,
  )
  np.testing.assert_array_equal(
    params["text"]["layers"][0]["self_attn"]["query"]["kernel"],
    sd["text_encoder.encoder.layer.0.attention.self.query.weight"].T,
  )


def test_cls_head_width_tells_marvl_from_xvnli():
  sd, cfg = official_plus_file("xvnli")
  h = cfg.text.hidden
  assert task_heads.detect(sd, h, xlmr=True).heads == {"num_labels": XVNLI_LABELS}
  pair = dict(sd, **_build_mlp(np.random.default_rng(0), "cls_head", 2 * h, 2))
  detected = task_heads.detect(pair, h, xlmr=True)
  assert detected.task == "marvl" and detected.heads == {"nlvr": 1}
  odd = dict(sd, **_build_mlp(np.random.default_rng(0), "cls_head", 3 * h, 2))
  assert task_heads.detect(odd, h, xlmr=True) is None  # no official class: the strict conversion names it


def test_files_of_the_other_family_are_refused_with_the_way_out(tmp_path):
  sd, cfg = official_plus_file("xvnli")
  with pytest.raises(ValueError, match="X²-VLM-Plus checkpoint.*cclm_\\* --model"):
    task_heads.detect(sd, cfg.text.hidden, xlmr=False)
  english = random_official_state_dict(get_preset("tiny"), seed=3)
  with pytest.raises(ValueError, match="no `cross_encoder.\\*` keys.*--cclm_init"):
    task_heads.detect(english, cfg.text.hidden, xlmr=True)
  # The command line says it in one line (exit code 2), for an English file given a cclm_* preset.
  np.savez(tmp_path / "english.npz", **english)
  tool = load_tool("convert_checkpoint")
  with pytest.raises(ValueError, match="--cclm_init"):
    tool.main(["--input", str(tmp_path / "english.npz"), "--model", "cclm_tiny", "--output", str(tmp_path / "o")])


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("task", ["xvnli", "marvl"])
def test_tools_evaluate_runs_on_the_converted_plus_file(task, request, tmp_path):
  """The converted XVNLI / MaRVL file evaluates on the official formats (the tiny multilingual files of
  tests/test_xvnli.py and tests/test_marvl.py) with no model flag: its head was read from the file."""
  from x2vlm_jax.data import shapes_ml

  _, _, ckpt = _convert(task, tmp_path, vocab=shapes_ml.SPM_MODEL)
  langs = {"xvnli": ("en", "de", "fr"), "marvl": ("id", "sw", "de")}[task]
  d = request.getfixturevalue("xvnli_files" if task == "xvnli" else "marvl_files")
  name = {"xvnli": "test_{}.jsonl", "marvl": "marvl-{}.json"}[task]
  annotations = ",".join(str(d / name.format(lang)) for lang in langs)
  rc = load_tool("evaluate").main(
    ["--task", task, "--checkpoint", str(ckpt), "--annotations", annotations, "--image_root", str(d)]
    + ["--output", str(tmp_path / "out"), "--config.batch_size=4"]
  )
  assert rc == 0
  metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert all(f"{lang}_acc" in metrics for lang in langs) and np.isfinite(metrics["acc"])


@pytest.mark.parametrize(
  "task,other,says",
  [
    ("xvnli", "xretrieval", "lacks the answer classifier"),
    ("marvl", "xvnli", "lacks the NLVR2 head"),
    ("xgqa", "xvnli", "lacks the VQA answer decoder"),
    ("xretrieval", "xvnli", "official xvnli file (XVLMPlus4XVNLI"),
  ],
)
def test_tools_evaluate_names_the_head_a_plus_checkpoint_lacks(task, other, says, tmp_path, capsys):
  """Evaluating a converted Plus file on another task is an error naming the head it lacks (or the
  freshly initialised one, with the official class the file came from), before any image is read."""
  _, _, ckpt = _convert(other, tmp_path)
  rc = load_tool("evaluate").main(
    ["--task", task, "--checkpoint", str(ckpt), "--output", str(tmp_path / "out"), "--annotations", "unused.json"]
  )
  assert rc == 2
  assert says in capsys.readouterr().err
