"""What every evaluator shares: its config (defaults + `config.evals.<name>`), the schedule, the
forward passes it is given, the tokenizer, image loading, and the call that returns (scalar metrics,
predictions).

An evaluator is built once per run (by `x2vlm_jax.tasks.build_evaluator`); `setup()` reads its
annotations lazily on the first call, and its jitted functions are compiled once per model graph (later
calls reuse them). It runs the model only through `predict_fns`, the forward passes of the task that
brings it (`PREDICT_FNS` names the ones it needs), as big_vision's evaluators get `predict_fn`: the
protocol lives here, the model's use in the task.
"""

import concurrent.futures
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from x2vlm_jax import sharding as shd
from x2vlm_jax.inference.images import BadImage, normalize, read_image, read_video

# The model's optional task heads (absent unless the config switches them on) → (config field, what it is).
_OPTIONAL_HEADS = {
  "nlvr_head": ("heads.nlvr", "the NLVR2 head (official `cls_head` over two fused [CLS])"),
  "cls_head": ("heads.num_labels", "the answer classifier (official `cls_head`)"),
  "decoder": ("heads.decoder_layers", "the VQA answer decoder (official `text_decoder`)"),
}


def missing_heads(model_cfg, heads: Sequence[str]) -> List[str]:
  """The optional heads among `heads` (our param prefixes) that `model_cfg` does not build, described."""
  out = []
  for head in heads:
    if head in _OPTIONAL_HEADS:
      field, what = _OPTIONAL_HEADS[head]
      group, name = field.split(".")
      if not model_cfg[group][name]:
        out.append(f"{what}: model.{field} is off")
  return out


def fresh_heads(new_params: Sequence[str], heads: Sequence[str]) -> List[str]:
  """The heads among `heads` whose parameters were freshly initialised (`new_params` of a conversion)."""
  return [h for h in heads if any(p == h or p.startswith(h + "/") for p in new_params)]


class Evaluator:
  DEFAULTS: Dict = {}
  # every: period in (micro-)steps; every_epochs: period in epochs (needs config.num_epochs), from the
  # 0-based epoch `start_eval` on, as the official scripts' `for epoch ...: train; if epoch >= start_eval:
  # evaluate` (schedule.epoch_steps gives the epoch length).
  SCHEDULE = dict(every=0, every_epochs=0, start_eval=0, at_start=False, at_end=True)
  PREDICT_FNS: Tuple[str, ...] = ()
  # The model's heads (our param prefixes) the evaluation reads: checked when it is built (a head the
  # config does not build) and by tools/evaluate.py (a head a conversion left freshly initialised).
  HEADS: Tuple[str, ...] = ()

  def __init__(self, name: str, config, ecfg, mesh, predict_fns: Optional[Dict[str, Callable]] = None):
    self.name = name
    self.predict_fns = dict(predict_fns or {})
    missing = [fn for fn in self.PREDICT_FNS if fn not in self.predict_fns]
    if missing:
      raise ValueError(
        f"evals.{name}: {type(self).__name__} needs the forward passes {missing} (predict_fns); "
        "build it with x2vlm_jax.tasks.build_evaluator"
      )
    self.config = config
    self.model_cfg = config.model
    self.mesh = mesh
    absent = missing_heads(config.model, self.HEADS)
    if absent:
      raise ValueError(
        f"evals.{name}: {type(self).__name__} needs {'; '.join(absent)}. Evaluate a checkpoint that has it "
        "(an official task file converted by tools/convert_checkpoint.py sets it from the file, or a run "
        "fine-tuned on this task)"
      )
    merged = ml_collections.ConfigDict({**self.SCHEDULE, **self.DEFAULTS, "type": ""})
    unknown = sorted(set(ecfg) - set(merged))
    if unknown:
      raise ValueError(
        f"evals.{name}: unknown field(s) {unknown} for type {ecfg.get('type')!r}; known: {sorted(merged)}"
      )
    merged.update(dict(ecfg))
    self.ecfg = merged
    self._ready = False
    self.bad_images: List[str] = []

  # --- schedule ----------------------------------------------------------------------------------
  def due(self, step: int, total: int, epoch_steps: int = 0) -> bool:
    """Whether to evaluate after `step` of `total` (micro-)steps; `epoch_steps`: steps per epoch (0 unknown)."""
    if step == 0:
      return bool(self.ecfg.at_start)
    every = int(self.ecfg.every or 0)
    if (every > 0 and step % every == 0) or (step == total and bool(self.ecfg.at_end)):
      return True
    every_epochs = int(self.ecfg.every_epochs or 0)
    if every_epochs <= 0:
      return False
    if epoch_steps <= 0:
      raise ValueError(
        f"evals.{self.name}.every_epochs={every_epochs} needs whole epochs: set config.num_epochs to a whole number"
      )
    epoch = step // epoch_steps - 1  # the 0-based epoch that just ended
    return step % epoch_steps == 0 and (epoch + 1) % every_epochs == 0 and epoch >= int(self.ecfg.start_eval)

  # --- helpers -----------------------------------------------------------------------------------
  def tokenizer(self):
    from x2vlm_jax.inference.tokenizer import Tokenizer

    vocab = self.ecfg.get("vocab_file") or self.config.get("data", {}).get("vocab_file")
    if not vocab:
      raise ValueError(f"evals.{self.name}: no vocabulary (set config.data.vocab_file or evals.{self.name}.vocab_file)")
    return Tokenizer(vocab, int(self.ecfg.get("max_tokens", 40)))

  def tokenize_texts(self, texts, max_tokens: int, max_words: int):
    """`pre_caption(max_words)` + WordPiece. max_tokens 0 = as the official NLVR2/grounding/VQA
    evaluation: padded to the longest text of the set, nothing truncated."""
    tok = self.tokenizer()
    if not max_tokens:
      from x2vlm_jax.text_clean import pre_caption

      max_tokens = max([len(tok.pieces(pre_caption(t, max_words))) + 2 for t in texts] + [2])
      if max_tokens > self.model_cfg.text.max_positions:
        raise ValueError(
          f"evals.{self.name}: the longest text has {max_tokens} tokens, more than the model's "
          f"{self.model_cfg.text.max_positions} positions; set max_tokens to truncate"
        )
    return tok(texts, max_tokens, clean=max_words)

  def tokenize_questions(self, questions: Sequence[str], max_tokens: int) -> Tuple[np.ndarray, np.ndarray, int, int]:
    """Cleaned questions → (ids, mask, number cut here, number longer than the training `max_tokens`).

    max_tokens 0 = as the official VQA / video-QA test (`tokenizer(question, padding='longest')`, no
    truncation; only training truncates): padded to the longest question of the set. The second count
    says how many questions a cut at the training length (config.data.max_tokens) would have changed."""
    tok = self.tokenizer()
    lengths = [len(tok.pieces(q)) + 2 for q in questions]
    longest = max(lengths + [2])
    if not max_tokens and longest > self.model_cfg.text.max_positions:
      raise ValueError(
        f"evals.{self.name}: the longest question has {longest} tokens, more than the model's "
        f"{self.model_cfg.text.max_positions} positions; set max_tokens to truncate"
      )
    length = int(max_tokens) or longest
    ids, mask = tok(questions, length)
    train_length = int(self.config.get("data", {}).get("max_tokens", 0) or 0)
    return ids, mask, sum(n > length for n in lengths), sum(n > train_length > 0 for n in lengths)

  def jitted(self, graphdef, make):
    """`make()`'s jitted function(s), built once per model graph (later calls reuse the compilation;
    usable before `setup`, e.g. by `compile_targets`)."""
    cache = self.__dict__.setdefault("_jitted", {})
    if id(graphdef) not in cache:
      cache[id(graphdef)] = make()
    return cache[id(graphdef)]

  def load_images(
    self, paths: Sequence[str], idx: np.ndarray, num_frames: int = 0, sizes: Optional[np.ndarray] = None
  ) -> Tuple[np.ndarray, np.ndarray]:
    """`load_images_parallel` at the model's resolution with the evaluator's `strict` (videos when
    num_frames > 0; `sizes` as there); unreadable files are collected in `self.bad_images` (reset by the caller for each
    evaluation)."""
    pixels, valid, bad = load_images_parallel(
      paths,
      idx,
      self.model_cfg.image_res,
      strict=self.ecfg.strict,
      num_frames=num_frames,
      sizes=sizes,
      truncated=self.__dict__.setdefault("truncated_images", []),
    )
    self.bad_images.extend(bad)
    return pixels, valid

  def require_some_files(self, paths: Sequence[str], what: str = "video", samples: int = 16) -> None:
    """Raises at once when none of up to `samples` paths spread over the set exists: a wrong
    `image_root`, which would otherwise surface only after one "(skipped)" warning per file (an
    MSRVTT test set: ~150 of them, each a remote stat on gs://) and then "no video could be read".
    A set with some files missing still evaluates them as counted skips."""
    unique = list(dict.fromkeys(paths))
    if not unique:
      return
    picks = [unique[i] for i in sorted({round(j * (len(unique) - 1) / max(1, samples - 1)) for j in range(samples)})]
    if not any(epath.Path(p).exists() for p in picks):
      raise ValueError(
        f"evals.{self.name}: none of {len(picks)} {what} files sampled from {len(unique)} exists under "
        f"image_root {self.ecfg.get('image_root', '')!r} (e.g. {picks[0]}); check --image_root "
        f"(evals.{self.name}.image_root) and the file-name pattern"
      )

  def setup(self):
    """Reads annotations etc. (first call only)."""

  def evaluate(self, graphdef, params) -> Tuple[Dict[str, float], Optional[dict]]:
    raise NotImplementedError

  def compile_targets(self, graphdef, params, *, num_images: int, num_texts: int) -> List[Tuple[str, object, tuple]]:
    """[(name, jitted fn, abstract args)] of the programs an evaluation runs, for an evaluation set of
    num_images images (videos, image pairs) and num_texts texts; `params` are ShapeDtypeStructs with
    shardings (tools/compile_check.py lowers them). Evaluators whose programs run batch by batch
    describe one evaluation batch (the set's size does not change them). No annotation is read; what
    decides a shape and is not in the config (a vocabulary's special ids, the answer list) is read from
    its file, and an evaluator that cannot describe its programs raises a ValueError saying why."""
    del graphdef, params, num_images, num_texts
    return []

  # --- abstract evaluation batches (compile_targets) ---------------------------------------------
  def sharded_batch(self, batches, fields: Dict[str, Tuple[tuple, object]]):
    """One global evaluation batch of `batches` (EvalBatches) as ShapeDtypeStructs split over the
    batch axes: fields {name: (shape of one row, dtype)}."""
    rows = batches.global_batch
    return {
      name: jax.ShapeDtypeStruct((rows,) + tuple(shape), dtype, sharding=shd.batch_sharding(self.mesh, 1 + len(shape)))
      for name, (shape, dtype) in fields.items()
    }

  def compile_text_tokens(self) -> int:
    """The text length of a compile-only check: `max_tokens`, or where the evaluation pads to the
    longest text of its set (max_tokens 0, unknown without the set), the training data's."""
    return int(self.ecfg.get("max_tokens", 0) or self.config.get("data", {}).get("max_tokens", 0) or 40)

  def __call__(self, graphdef, params):
    if not self._ready:
      self.setup()
      self._ready = True
    self.truncated_images = []
    metrics, predictions = self.evaluate(graphdef, params)
    if self.truncated_images:  # decoded as the official loaders do (ImageFile.LOAD_TRUNCATED_IMAGES)
      metrics = {**metrics, "truncated_images": float(len(self.truncated_images))}
    return metrics, predictions


def load_images_parallel(
  paths: Sequence[str],
  idx: np.ndarray,
  image_res: int,
  *,
  strict: bool = False,
  threads: Optional[int] = None,
  num_frames: int = 0,
  sizes: Optional[np.ndarray] = None,
  truncated: Optional[List[str]] = None,
) -> Tuple[np.ndarray, np.ndarray, List[str]]:
  """Rows `idx` (−1 = padding) of `paths` → (float32 [n,R,R,3] normalised, valid [n], bad files);
  with num_frames > 0 the paths are videos (official frames files) → [n,F,R,R,3].

  A file that is missing or does not decode is a counted skip (valid 0, its path returned) unless
  `strict`, which raises naming the file. `sizes` (int [n, 2], optional; images only) receives each
  image's original (width, height). A truncated image (or video frame) is decoded as officially and
  appended to `truncated` when given."""
  if sizes is not None and num_frames:
    raise ValueError("load_images_parallel: sizes are for images, not videos")
  lead = (num_frames,) if num_frames else ()
  if num_frames:
    read = lambda p: read_video(p, num_frames, image_res, truncated=truncated)  # noqa: E731
  else:
    read = lambda p: read_image(p, image_res, truncated=truncated)  # noqa: E731
  out = np.zeros((len(idx),) + lead + (image_res, image_res, 3), np.uint8)
  valid = np.zeros((len(idx),), np.float32)
  bad: List[str] = []

  def one(j):
    i = int(idx[j])
    if i < 0:
      return
    try:
      if sizes is None:
        out[j] = read(paths[i])
      else:
        out[j], sizes[j] = read_image(paths[i], image_res, return_size=True, truncated=truncated)
      valid[j] = 1.0
    except BadImage as e:
      if strict:
        raise
      logging.warning("%s (skipped)", e)
      bad.append(paths[i])

  with concurrent.futures.ThreadPoolExecutor(threads or min(16, (os.cpu_count() or 2) * 2)) as pool:
    list(pool.map(one, range(len(idx))))
  return normalize(out), valid, bad
