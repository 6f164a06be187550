"""Video QA evaluation (MSRVTT-QA, MSVD-QA; docs/reference.md §5.6): accuracy of the arg-max class over ALL test
questions, an answer outside the answer vocabulary counting as wrong (the official label −100 never
equals a prediction).

Annotations: the official JSON lines {video_id, question, answer}; the frames files under
`image_root` by `video_pattern` (MSRVTT "video_{num}.json", MSVD "{id}.json"); `ans2label` the
training answer vocabulary. Frames: the official evaluation choice (first frame of each segment),
each with the test transform; questions: `pre_question` with 50 words and, as at official test time
(`VQA_msrvtt.py: evaluation()`), padded to the longest question without truncation (`max_tokens` 0;
a positive value cuts, counted as `questions_truncated`; `long_questions` counts those longer than the
training `data.max_tokens`).
"""

import time
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from x2vlm_jax.data import annotations as ann
from x2vlm_jax.data.video_files import video_file_name
from x2vlm_jax.evaluation.base import Evaluator
from x2vlm_jax.evaluation.sharded import EvalBatches, to_host
from x2vlm_jax.text_clean import pre_question


class VideoQAEvaluator(Evaluator):
  """config.evals.<name> = dict(type="video_qa", annotations=..., image_root=..., ans2label=...).

  predict_fns: answer_logits(model, clips [B, F, R, R, 3], ids, mask) → [B, num_labels]."""

  PREDICT_FNS = ("answer_logits",)
  HEADS = ("cls_head",)

  DEFAULTS = dict(
    annotations="",
    image_root="",
    ans2label="",
    video_pattern="{id}.json",
    num_frames=0,
    batch_size=8,
    max_tokens=0,
    max_words=50,
    strict=False,
  )

  def setup(self):
    ecfg = self.ecfg
    records = ann.read_records(ecfg.annotations, objects_only=True)
    for key in ("video_id", "question", "answer"):
      ann.require(ecfg.annotations, records, key, (str, int) if key == "video_id" else str)
    if not ecfg.ans2label:
      raise ValueError(f"evals.{self.name}: ans2label is required (the training answer vocabulary)")
    import json

    self.ans2label: Dict[str, int] = json.loads(epath.Path(ecfg.ans2label).read_text())
    if self.model_cfg.heads.num_labels != len(self.ans2label):
      raise ValueError(
        f"evals.{self.name}: ans2label has {len(self.ans2label)} answers, the model's cls_head "
        f"{self.model_cfg.heads.num_labels}"
      )
    self.label2ans = {v: k for k, v in self.ans2label.items()}
    self.records = records
    self.labels = np.asarray([self.ans2label.get(r["answer"], -100) for r in records], np.int64)
    # Each question's video; a video's frames are read once per batch even when asked about twice.
    self.videos: List[str] = [
      ann.image_path(ecfg.image_root, video_file_name(r["video_id"], ecfg.video_pattern)) for r in records
    ]
    self.require_some_files(self.videos)
    self.num_frames = self._num_frames()
    questions = [pre_question(r["question"], int(ecfg.max_words)) for r in records]
    self.ids, self.mask, self.truncated, self.long = self.tokenize_questions(questions, int(ecfg.max_tokens))
    self.batches = EvalBatches(self.mesh, ecfg.batch_size)

  def _num_frames(self) -> int:
    frames = int(self.ecfg.num_frames or self.model_cfg.num_frames)
    if not frames:
      raise ValueError(f"evals.{self.name}: set num_frames (or config.model.num_frames)")
    return frames

  def _fn(self, graphdef):
    answer_logits = self.predict_fns["answer_logits"]

    def predict(params, batch):
      logits = answer_logits(nnx.merge(graphdef, params), batch["frames"], batch["ids"], batch["mask"])
      return jnp.argmax(logits, axis=-1), batch["valid"]

    return self.jitted(graphdef, lambda: jax.jit(predict))

  def compile_targets(self, graphdef, params, *, num_images: int, num_texts: int):
    """The classifier on one evaluation batch of clips (questions run batch by batch)."""
    del num_images, num_texts
    res, length = int(self.model_cfg.image_res), self.compile_text_tokens()
    batch = self.sharded_batch(
      EvalBatches(self.mesh, int(self.ecfg.batch_size)),
      {
        "frames": ((self._num_frames(), res, res, 3), jnp.float32),
        "ids": ((length,), jnp.int32),
        "mask": ((length,), jnp.int32),
        "valid": ((), jnp.float32),
      },
    )
    return [(f"{self.name}/answer_logits", self._fn(graphdef), (params, batch))]

  def _load(self, idx: np.ndarray):
    frames, valid = self.load_images(self.videos, idx, self.num_frames)
    safe = np.maximum(idx, 0)
    return {"frames": frames, "ids": self.ids[safe], "mask": self.mask[safe], "valid": valid}

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[list]]:
    t0, n = time.perf_counter(), len(self.records)
    self.bad_images = []
    outs = self.batches.map(lambda b: self._fn(graphdef)(params, b), n, self._load)
    pred, valid = (to_host(x)[:n] for x in self.batches.concat(outs))
    ok = valid > 0
    if not ok.any():
      raise ValueError(f"video_qa evaluation {self.name!r}: no video of {self.ecfg.annotations} could be read")
    correct = (pred == self.labels) & ok
    metrics = {
      "acc": 100.0 * float(correct[ok].mean()),
      "num_questions": float(ok.sum()),
      "skipped_questions": float(n - ok.sum()),
      "oov_answers": float(np.sum(self.labels[ok] == -100)),
      "questions_truncated": float(self.truncated),
      "long_questions": float(self.long),
      "seconds": time.perf_counter() - t0,
    }
    predictions = [
      {
        **({"question_id": r["question_id"]} if "question_id" in r else {}),
        "video_id": r["video_id"],
        "question": r["question"],
        "answer": self.label2ans[int(p)],
      }
      for r, p, v in zip(self.records, pred, ok)
      if v
    ]
    return metrics, predictions
