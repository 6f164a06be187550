"""Official fine-tuned task checkpoints convert with no flags and evaluate (x2vlm_jax/convert/task_heads.py).

Each file is fabricated as its official class saves it (`model.state_dict()`): `XVLMBase` with the heads
its `super().__init__(use_*=...)` keeps, the BertModel text layout unless it keeps the MLM loss, plus its
own task head (models/model_retrieval.py, model_grounding.py, model_classification.py,
model_generation.py). The converter must read the class from the keys, set the model's task heads, keep
the file's tensors, leave only the heads that class lacks freshly initialised, and tools/evaluate.py
must then run the task's evaluation on the converted directory (the embedded `shapes_tasks` files, in
the official annotation formats).
"""

import json

import numpy as np
import pytest
from convert_helpers import random_official_state_dict
from helpers.tools import load_tool

from tests.helpers.tiers import tiered
from x2vlm_jax import params_io
from x2vlm_jax.convert import task_heads
from x2vlm_jax.convert.x2vlm import ConversionError, convert_official
from x2vlm_jax.models import get_preset

SHAPES_VOCAB = "x2vlm_jax/data/shapes_vocab.txt"
NUM_LABELS = 5
FRAMES = 3

# Written from the official classes (not from our layout): the pre-training heads each one builds.
ITC = ("vision_proj.", "text_proj.", "temp")
OFFICIAL_KEEPS = {
  "retrieval": ITC + ("itm_head.",),  # XVLMForRetrieval: use_contrastive_loss, use_matching_loss
  "grounding": ("bbox_head.",),  # XVLMForGrounding: use_bbox_loss
  "nlvr2": (),  # XVLMForNLVR: none, + cls_head
  "video_qa": (),  # XVLMForClassification: none, + cls_head
  "vqa": (),  # XVLMForVQA: none, + text_decoder
  "captioning": ("text_encoder.cls.",),  # XVLMForMLMCaptioning: use_mlm_loss (BertForMaskedLM layout)
}
# What each class lacks, as our param prefixes (freshly initialised, reported as new_params).
ABSENT = {
  "retrieval": {"text/mlm", "bbox_head"},
  "grounding": {"text/mlm", "vision_proj", "text_proj", "temp", "itm_head"},
  "nlvr2": {"text/mlm", "vision_proj", "text_proj", "temp", "itm_head", "bbox_head"},
  "video_qa": {"text/mlm", "vision_proj", "text_proj", "temp", "itm_head", "bbox_head"},
  "vqa": {"text/mlm", "vision_proj", "text_proj", "temp", "itm_head", "bbox_head"},
  "captioning": {"vision_proj", "text_proj", "temp", "itm_head", "bbox_head"},
}
PRETRAIN_HEADS = ITC + ("itm_head.", "bbox_head.", "text_encoder.cls.")


def _build_mlp(rng, prefix, d_in, d_out):
  """models/xvlm.py: build_mlp = Sequential(Linear(in, 2in), LayerNorm(2in), GELU, Linear(2in, out))."""
  return {
    f"{prefix}.0.weight": 0.05 * rng.standard_normal((2 * d_in, d_in)),
    f"{prefix}.0.bias": 0.05 * rng.standard_normal(2 * d_in),
    f"{prefix}.1.weight": 1 + 0.1 * rng.standard_normal(2 * d_in),
    f"{prefix}.1.bias": 0.05 * rng.standard_normal(2 * d_in),
    f"{prefix}.3.weight": 0.05 * rng.standard_normal((d_out, 2 * d_in)),
    f"{prefix}.3.bias": 0.05 * rng.standard_normal(d_out),
  }


def official_task_file(task: str, seed: int = 0, num_labels: int = NUM_LABELS):
  """(state dict as the official class saves it, the tiny config it was made for)."""
  cfg = get_preset("tiny", num_frames=FRAMES if task == "video_qa" else 0)
  if task == "vqa":
    cfg.heads.decoder_layers = 2  # only to fabricate the decoder's keys below
  pre = random_official_state_dict(cfg, seed=seed)
  rng = np.random.default_rng(seed + 100)
  h = cfg.text.hidden
  sd = {}
  for k, v in pre.items():
    if k.startswith(PRETRAIN_HEADS) and not k.startswith(OFFICIAL_KEEPS[task]):
      continue
    if task != "captioning":  # BertModel(add_pooling_layer=False) instead of BertForMaskedLM
      k = k.replace("text_encoder.bert.", "text_encoder.")
    sd[k] = v
  if task == "nlvr2":
    sd.update(_build_mlp(rng, "cls_head", 2 * h, 2))
  if task == "video_qa":
    sd.update(_build_mlp(rng, "cls_head", h, num_labels))
  if task == "vqa":  # random_official_state_dict wrote text_decoder.bert.* / text_decoder.cls.*: add the tied copies
    sd["text_decoder.bert.embeddings.position_ids"] = np.arange(cfg.text.max_positions)[None]
    sd["text_decoder.cls.predictions.decoder.weight"] = sd["text_decoder.bert.embeddings.word_embeddings.weight"]
    sd["text_decoder.cls.predictions.decoder.bias"] = sd["text_decoder.cls.predictions.bias"]
  if task == "captioning":  # LabelSmoothingLoss.one_hot: a registered buffer, saved with the weights
    sd["crit_mask_lm_smoothed.one_hot"] = np.full((1, cfg.text.vocab_size), 0.1 / (cfg.text.vocab_size - 2))
  return {k: np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else v for k, v in sd.items()}, cfg


def _convert(task, tmp_path, **kw):
  sd, cfg = official_task_file(task, **kw)
  np.savez(tmp_path / f"{task}.npz", **sd)
  out = tmp_path / f"{task}_ckpt"
  rc = load_tool("convert_checkpoint").main(
    ["--input", str(tmp_path / f"{task}.npz"), "--model", "tiny", "--output", str(out), "--vocab", SHAPES_VOCAB]
  )
  assert rc == 0
  return sd, cfg, out


TASKS = ["retrieval", "grounding", "nlvr2", "video_qa", "vqa", "captioning"]


@pytest.mark.parametrize("task", tiered(TASKS, fast=["retrieval", "nlvr2"]))
def test_official_task_file_converts_with_no_flags(task, tmp_path):
  sd, cfg, out = _convert(task, tmp_path)
  report = json.loads((out / "conversion.json").read_text())
  assert report["official_task"]["task"] == task
  # Only the heads the official class does not build are fresh; every one of their params is listed.
  assert {p.split("/")[0] if not p.startswith("text/mlm") else "text/mlm" for p in report["new_params"]} == ABSENT[task]
  loaded, params = params_io.load(str(out))
  assert bool(loaded.heads.nlvr) == (task == "nlvr2")
  assert loaded.heads.num_labels == (NUM_LABELS if task == "video_qa" else 0)
  assert loaded.heads.decoder_layers == (2 if task == "vqa" else 0)
  assert loaded.num_frames == (FRAMES if task == "video_qa" else 0)
  # The task head holds the file's tensors (Linear weight [out, in] → kernel [in, out]).
  if task in ("nlvr2", "video_qa"):
    head = params["nlvr_head" if task == "nlvr2" else "cls_head"]
    np.testing.assert_array_equal(head["fc0"]["kernel"], sd["cls_head.0.weight"].T)
    np.testing.assert_array_equal(head["ln"]["scale"], sd["cls_head.1.weight"])
    np.testing.assert_array_equal(head["fc1"]["bias"], sd["cls_head.3.bias"])
  if task == "vqa":
    np.testing.assert_array_equal(
      params["decoder"]["layers"][1]["output"]["kernel"], sd["text_decoder.bert.encoder.layer.1.output.dense.weight"].T
    )
  if task == "captioning":
    np.testing.assert_array_equal(params["text"]["mlm"]["bias"], sd["text_encoder.cls.predictions.bias"])
  if task == "retrieval":
    np.testing.assert_array_equal(params["itm_head"]["fc1"]["kernel"], sd["itm_head.3.weight"].T)
  if task == "grounding":
    np.testing.assert_array_equal(params["bbox_head"]["fc0"]["bias"], sd["bbox_head.0.bias"])
  text = "text_encoder.bert." if task == "captioning" else "text_encoder."
  np.testing.assert_array_equal(
    params["text"]["layers"][0]["self_attn"]["query"]["kernel"],
    sd[text + "encoder.layer.0.attention.self.query.weight"].T,
  )


def test_a_file_matching_no_official_class_stays_strict():
  """A pre-training file without its box head is no official class: nothing is allowed missing."""
  cfg = get_preset("tiny")
  sd = {k: v for k, v in random_official_state_dict(cfg, seed=1).items() if not k.startswith("bbox_head.")}
  assert task_heads.detect(sd, cfg.text.hidden) is None
  with pytest.raises(ConversionError, match="bbox_head.0.weight"):
    convert_official(sd, cfg)


def test_cls_head_width_tells_nlvr2_from_a_two_label_classifier():
  sd, cfg = official_task_file("video_qa")
  two = dict(sd, **_build_mlp(np.random.default_rng(0), "cls_head", cfg.text.hidden, 2))
  detected = task_heads.detect(two, cfg.text.hidden)
  assert detected.task == "video_qa" and detected.heads == {"num_labels": 2}
  nlvr, _ = official_task_file("nlvr2")
  assert task_heads.detect(nlvr, cfg.text.hidden).heads == {"nlvr": 1}


def test_multilingual_plus_file_is_named():
  sd, cfg = official_task_file("nlvr2")
  sd["cross_encoder.encoder.layer.0.output.dense.weight"] = np.zeros((4, 4), np.float32)
  with pytest.raises(ValueError, match="X²-VLM-Plus"):
    task_heads.detect(sd, cfg.text.hidden)


# --- tools/evaluate.py on each converted file ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_tasks_dir(tmp_path_factory):
  from x2vlm_jax.data import shapes_tasks

  d = tmp_path_factory.mktemp("shapes_tasks")
  return shapes_tasks.build(str(d), num_train=12, num_test=3, num_train_videos=12, num_test_videos=3)


def _eval_args(task, t):
  """The official-format evaluation files of `task` in shapes_tasks dir `t` → evaluate.py arguments."""
  return {
    "retrieval": ["--annotations", f"{t}/retrieval_test.json", "--image_root", t],
    "grounding": ["--annotations", f"{t}/grounding_test.json", "--image_root", t],
    "nlvr2": ["--annotations", f"{t}/nlvr_dev.json,{t}/nlvr_test.json", "--config.splits=dev,test", "--image_root", t],
    "video_qa": [
      "--annotations",
      f"{t}/video_qa_test.jsonl",
      "--image_root",
      f"{t}/videos",
      f"--config.ans2label={t}/video_qa_ans2label.json",
      "--config.video_pattern={id}.json",
    ],
    "vqa": ["--annotations", f"{t}/vqa_test.json", "--image_root", t, f"--config.answer_list={t}/answer_list.json"],
    "captioning": [
      "--annotations",
      f"{t}/captioning_test.json",
      "--image_root",
      t,
      f"--config.gt_file={t}/captioning_test_gt.json",
      "--config.metrics_tokenizer=python",
      "--config.meteor=off",
      "--config.max_length=5",
    ],
  }[task]


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_tools_evaluate_runs_on_the_converted_official_file(task, shapes_tasks_dir, tmp_path):
  labels = json.loads(open(f"{shapes_tasks_dir}/video_qa_ans2label.json").read())
  _, _, ckpt = _convert(task, tmp_path, num_labels=len(labels))  # the classifier matches the answer vocabulary
  evaluate = load_tool("evaluate")
  args = ["--task", task, "--checkpoint", str(ckpt), "--output", str(tmp_path / "out"), "--config.batch_size=4"]
  assert evaluate.main(args + _eval_args(task, shapes_tasks_dir)) == 0
  metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert metrics and all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("task,other", [("nlvr2", "retrieval"), ("retrieval", "grounding"), ("vqa", "captioning")])
def test_tools_evaluate_names_the_head_a_checkpoint_lacks(task, other, tmp_path, capsys):
  """An NLVR2 evaluation of a retrieval file has no NLVR2 head; a retrieval evaluation of a grounding
  file would read a freshly initialised ITM head: both are errors that say so, before any image is read."""
  _, _, ckpt = _convert(other, tmp_path)
  evaluate = load_tool("evaluate")
  rc = evaluate.main(
    ["--task", task, "--checkpoint", str(ckpt), "--output", str(tmp_path / "out"), "--annotations", "unused.json"]
  )
  assert rc == 2
  err = capsys.readouterr().err
  assert {"nlvr2": "NLVR2 head", "retrieval": "official grounding file", "vqa": "answer decoder"}[task] in err
