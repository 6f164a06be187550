"""VQA evaluation (docs/reference.md §5.2): answers for every question of an official VQA file, sharded over the
mesh and the hosts, as the official server wants them, plus the local accuracy when the file has
answers.

  mode "rank"      the official `rank_answer` over `answer_list.json`: first-token top-k (k_test),
                   teacher-forced re-scoring (the first token counted twice unless
                   double_count_first=False), softmax, argmax.
  mode "generate"  free-form answers from the decoder, greedy or beam (not in the release; asked for in
                   github.com/zengyan-97/X2-VLM/issues/11).

Questions go through `pre_question` (50 words at test, as officially) and, as the official test
(`VQA.py: evaluation()`, `padding='longest'`, no truncation), are padded to the longest question of the
set (`max_tokens` 0; a positive value cuts them, counted as `questions_truncated`; `long_questions`
counts those longer than the training `data.max_tokens`). Images use the official test transform. predictions.json is
[{"question_id", "answer"}]. Metrics: `acc` = the official VQA accuracy (vqa_metrics, min(#humans
agreeing / 3, 1) with the official normalisation) over questions whose `answer` is a list, per
`answer_type` when the records have one; `exact_match` (the release's local check) over questions
whose `answer` is one string; counts.
"""

import dataclasses
import re
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from x2vlm_jax.data import annotations as ann
from x2vlm_jax.evaluation import vqa_metrics
from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.evaluation.sharded import EvalBatches, to_host
from x2vlm_jax.inference import generation
from x2vlm_jax.text_clean import pre_question

MODES = ("rank", "generate")


@dataclasses.dataclass
class VQASet:
  """Official test/val format: [{"question_id", "image", "question", "answer"?, "dataset"?}, ...]."""

  images: List[str]
  questions: List[str]
  question_ids: List[object]
  answers: List[object]  # list of human answers, one str, or None (test-dev/test-std)
  answer_types: List[Optional[str]]

  @classmethod
  def from_file(cls, path: str, image_root: str = "") -> "VQASet":
    records = ann.read_records(path, objects_only=True)
    ann.require(path, records, "image", str, non_empty=True)
    ann.require(path, records, "question", str)
    ann.require(path, records, "question_id", (int, str))
    for i, rec in enumerate(records):
      a = rec.get("answer")
      if a is not None and not (isinstance(a, str) or isinstance(a, list) and all(isinstance(x, str) for x in a)):
        raise ValueError(
          f"annotations {path!r}: record {i}: 'answer' is {type(a).__name__}, expected a list "
          "of the annotators' answers or one string"
        )
    out = cls([], [], [], [], [])
    for i, rec in enumerate(records):
      dataset = rec.get("dataset", "vqa")
      if dataset not in ("vqa", "vg", "gqa"):
        raise ValueError(f"annotations {path!r}: record {i}: unknown dataset {dataset!r} (vqa, vg or gqa)")
      out.images.append(rec["image"] if dataset == "gqa" else ann.image_path(image_root, rec["image"]))
      out.questions.append(rec["question"])
      out.question_ids.append(rec["question_id"])
      out.answers.append(rec.get("answer"))
      out.answer_types.append(rec.get("answer_type"))
    return out


def accuracy_metrics(predictions: Dict[object, str], data: VQASet) -> Dict[str, float]:
  """Local accuracies of {question_id: answer} against the annotation file's answers (see module doc)."""
  lists = {q: a for q, a in zip(data.question_ids, data.answers) if isinstance(a, list) and a and q in predictions}
  strs = {q: a for q, a in zip(data.question_ids, data.answers) if isinstance(a, str) and q in predictions}
  out: Dict[str, float] = {}
  if lists:
    types = dict(zip(data.question_ids, data.answer_types))
    with_types = all(types[q] for q in lists)
    scores = vqa_metrics.vqa_scores(
      {q: predictions[q] for q in lists}, lists, {q: types[q] for q in lists} if with_types else None
    )
    out["acc"] = float(scores["overall"])
    for t, v in scores.get("per_answer_type", {}).items():
      out["acc_" + re.sub(r"\W+", "_", t).strip("_")] = float(v)
  if strs:
    out["exact_match"] = 100.0 * float(np.mean([predictions[q].strip() == a.strip() for q, a in strs.items()]))
  return out


class VQAEvaluator(Evaluator):
  """config.evals.<name> = dict(type="vqa", annotations=..., image_root=..., answer_list=..., mode="rank").

  predict_fns: rank(model, images, ids, mask, answer_ids, answer_mask, *, k, double_count_first) →
  (answer index [B], probability [B]); generate(model, images, ids, mask, *, bos_id, eos_id, pad_id,
  num_beams, max_len, search) → answer tokens [B, max_len] (x2vlm_jax.inference.generation)."""

  PREDICT_FNS = ("rank", "generate")
  ANSWER_LABEL_FILE = False  # xGQA: the answer list may be an {answer: label} file (evaluation/xgqa.py)
  HEADS = ("decoder",)
  DEFAULTS = dict(
    annotations="",
    image_root="",
    answer_list="",
    mode="rank",
    k_test=128,
    double_count_first=True,
    batch_size=32,
    max_tokens=0,
    max_words=50,
    num_beams=3,
    search="beam",
    max_answer_tokens=10,
    strict=False,
  )

  def setup(self):
    ecfg = self.ecfg
    self._prepare_decoding()
    self.data = VQASet.from_file(ecfg.annotations, ecfg.image_root)
    questions = [pre_question(q, int(ecfg.max_words)) for q in self.data.questions]
    self.q_ids, self.q_mask, self.truncated, self.long = self.tokenize_questions(questions, int(ecfg.max_tokens))
    self.batches = EvalBatches(self.mesh, int(ecfg.batch_size))

  def _prepare_decoding(self):
    """The mode, the vocabulary and (ranking) the tokenised answer list: what decides the programs."""
    ecfg = self.ecfg
    if ecfg.mode not in MODES:
      raise ValueError(f"evals.{self.name}.mode: expected one of {MODES}, got {ecfg.mode!r}")
    if not self.model_cfg.heads.decoder_layers:
      raise ValueError(f"evals.{self.name}: the model has no answer decoder (heads.decoder_layers = 0)")
    self.tok = self.tokenizer()
    generation.check_vocab(self.tok, self.model_cfg, f"evals.{self.name}")
    if ecfg.mode == "rank":
      self.answer_list = generation.read_answer_list(ecfg.answer_list, allow_ans2label=self.ANSWER_LABEL_FILE)
      ids, mask = generation.tokenize_answers(self.tok, self.answer_list)
      replicated = EvalBatches(self.mesh, int(ecfg.batch_size)).replicated()
      self.answer_ids, self.answer_mask = jax.device_put(ids, replicated), jax.device_put(mask, replicated)
      self.k = min(int(ecfg.k_test), len(self.answer_list))

  def _fn(self, graphdef):
    ecfg, tok = self.ecfg, self.tok
    if ecfg.mode == "rank":
      rank = self.predict_fns["rank"]

      def run(params, batch, answer_ids, answer_mask):
        model = nnx.merge(graphdef, params)
        idx, _ = rank(
          model,
          batch["images"],
          batch["ids"],
          batch["mask"],
          answer_ids,
          answer_mask,
          k=self.k,
          double_count_first=bool(ecfg.double_count_first),
        )
        return idx, batch["valid"]
    else:
      generate = self.predict_fns["generate"]

      def run(params, batch):
        model = nnx.merge(graphdef, params)
        tokens = generate(
          model,
          batch["images"],
          batch["ids"],
          batch["mask"],
          bos_id=tok.cls_id,
          eos_id=tok.sep_id,
          pad_id=tok.pad_id,
          num_beams=int(ecfg.num_beams),
          max_len=int(ecfg.max_answer_tokens),
          search=ecfg.search,
        )
        return tokens, batch["valid"]

    return self.jitted(graphdef, lambda: jax.jit(run))

  def compile_targets(self, graphdef, params, *, num_images: int, num_texts: int):
    """The ranking (over the whole answer list, read from `answer_list`) or the generation program on
    one evaluation batch of questions; the vocabulary is read for its special ids."""
    del num_images, num_texts
    self._prepare_decoding()
    res, length = int(self.model_cfg.image_res), self.compile_text_tokens()
    batch = self.sharded_batch(
      EvalBatches(self.mesh, int(self.ecfg.batch_size)),
      {
        "images": ((res, res, 3), jnp.float32),
        "ids": ((length,), jnp.int32),
        "mask": ((length,), jnp.int32),
        "valid": ((), jnp.float32),
      },
    )
    if self.ecfg.mode == "rank":
      answers = tuple(
        jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) for x in (self.answer_ids, self.answer_mask)
      )
      return [(f"{self.name}/rank", self._fn(graphdef), (params, batch, *answers))]
    return [(f"{self.name}/generate", self._fn(graphdef), (params, batch))]

  def _load(self, idx: np.ndarray):
    pixels, valid = self.load_images(self.data.images, idx)
    safe = np.maximum(idx, 0)
    return {"images": pixels, "ids": self.q_ids[safe], "mask": self.q_mask[safe], "valid": valid}

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[list]]:
    fn, n = self._fn(graphdef), len(self.data.questions)
    self.bad_images = []
    if self.ecfg.mode == "rank":
      outs = self.batches.map(lambda b: fn(params, b, self.answer_ids, self.answer_mask), n, self._load)
    else:
      outs = self.batches.map(lambda b: fn(params, b), n, self._load)
    result, valid = (to_host(x)[:n] for x in self.batches.concat(outs))
    ok = valid > 0
    if self.ecfg.mode == "rank":
      answers = [self.answer_list[int(i)] for i in result]
    else:
      answers = generation.decode_all(self.tok, result)
    predictions = [{"question_id": self.data.question_ids[i], "answer": answers[i]} for i in np.flatnonzero(ok)]
    metrics = accuracy_metrics({p["question_id"]: p["answer"] for p in predictions}, self.data)
    metrics.update(
      num_questions=float(ok.sum()),
      skipped_images=float(n - ok.sum()),
      questions_truncated=float(self.truncated),
      long_questions=float(self.long),
    )
    if not ok.all():
      logging.warning(
        "vqa %s: %d of %d questions left out (their image could not be read), e.g. %s",
        self.name,
        n - ok.sum(),
        n,
        self.bad_images[:3],
      )
    return metrics, predictions
