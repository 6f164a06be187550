"""Video tasks (docs/reference.md §5.6, §1.7, §2.4): video encoding reduces to image encoding for identical frames,
video QA ignores out-of-vocabulary answers in training and counts them wrong in evaluation, the
video-QA data keeps questions with their video and label and never flips a "left"/"right" question."""

import base64
import io
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from x2vlm_jax import objectives
from x2vlm_jax.data.config import SHAPES_VOCAB
from x2vlm_jax.models import X2VLM, get_preset


def test_classification_loss_ignores_out_of_vocabulary_answers():
  logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0], [0.0, -2.0, 0.7]], np.float32)
  labels = np.array([0, -100, 2, 1])
  valid = np.array([1.0, 1.0, 1.0, 0.0])
  loss, acc = objectives.classification_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(valid))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  counted = [0, 2]  # the OOV row and the padding row give no loss
  assert float(loss) == pytest.approx(-np.mean([logp[i, labels[i]] for i in counted]), rel=1e-6)
  assert float(acc) == pytest.approx(0.5)  # row 0 right (argmax 0), row 2 a 3-way tie → argmax 0 ≠ 2


def _frames_file(path, n, size=(24, 32)):
  """n frames, each left half red and right half blue (so a flip is visible)."""
  frames = []
  for _ in range(n):
    a = np.zeros(size + (3,), np.uint8)
    a[:, : size[1] // 2] = (230, 20, 20)
    a[:, size[1] // 2 :] = (20, 20, 230)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    frames.append(base64.b64encode(buf.getvalue()).decode())
  path.write_text(json.dumps(frames))


@pytest.fixture(scope="module")
def video_qa_files(tmp_path_factory):
  d = tmp_path_factory.mktemp("vqa")
  (d / "frames").mkdir()
  for v in range(4):
    _frames_file(d / "frames" / f"video_{v}.json", 4 + v)
  (d / "frames" / "video_9.json").write_text("not json")
  qa = [
    {"video_id": f"video{v}", "question": q, "answer": a}
    for v in range(4)
    for q, a in (("what color is on the left", "red"), ("is it blue", "yes"), ("what is it", "banana"))
  ]
  qa.append({"video_id": "video9", "question": "is it broken", "answer": "yes"})
  qa.append({"video_id": "video1", "answer": "yes"})
  (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
  (d / "ans2label.json").write_text(json.dumps({"red": 0, "yes": 1, "blue": 2}))
  return d


def test_video_qa_data_labels_frames_and_careful_flip(video_qa_files, tmp_path):
  pytest.importorskip("tensorflow")
  from x2vlm_jax.configs.finetune.common import finetune_data
  from x2vlm_jax.data.finetune import video
  from x2vlm_jax.tasks.video_qa import VideoQATask

  d = video_qa_files
  report = video.build_qa(
    str(d / "train.jsonl"),
    str(d / "frames"),
    str(tmp_path),
    "toy_vqa",
    ans2label=str(d / "ans2label.json"),
    video_pattern="video_{num}.json",
  )
  assert report.written == 12 and report.extra["oov_answers"] == 4 and report.extra["videos"] == 4
  assert dict(report.skipped) == {"bad_video": 1, "missing_field": 1}
  c = ml_collections.ConfigDict(finetune_data(32, 12))
  c.update(
    data_dir=str(tmp_path),
    vocab_file=SHAPES_VOCAB,
    train=[("toy_vqa", "train")],
    max_tokens=12,
    num_frames=3,
    randaug=False,
  )
  batch = next(video.create_iterator(c, spec=VideoQATask.spec, seed=1, process_index=0, process_count=1, qa=True))
  assert batch["frames"].shape == (12, 3, 32, 32, 3)
  from x2vlm_jax.inference.tokenizer import Tokenizer

  tok = Tokenizer(SHAPES_VOCAB, 12)
  want = {"what color is on the left": 0, "is it blue": 1, "what is it": -100}
  # Every question keeps its own label (the words "on", "it" are [UNK] in the shapes vocab).
  texts = [tok.decode(ids) for ids in batch["text_ids"]]
  for text, label in zip(texts, batch["labels"]):
    key = next(q for q in want if [w for w in q.split() if w in tok.vocab] == text.split())
    assert label == want[key], (text, label)
  red_left = batch["frames"][..., :10, 0].mean(axis=(-1, -2)) > batch["frames"][..., -10:, 0].mean(axis=(-1, -2))
  for text, per_frame in zip(texts, red_left):
    if "left" in text:  # careful_hflip: never flipped
      assert per_frame.all(), text
  flipped = ~red_left[[("left" not in t) for t in texts]]
  assert 0 < flipped.mean() < 1  # the others flip per frame, sometimes


def _video_qa_eval_setup(files, tmp_path, image_root, seed):
  """12 questions of the shapes video QA set as a test file, a tiny 3-frame model with 3 answer labels
  (seed `seed`), and the video QA evaluator's configs reading frames from `image_root`."""
  records = [json.loads(line) for line in (files / "train.jsonl").read_text().splitlines()][:12]
  (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  cfg = get_preset("tiny", num_frames=3)
  cfg.heads.num_labels = 3
  model = X2VLM(cfg, rngs=nnx.Rngs(seed))
  c = ml_collections.ConfigDict({"model": cfg, "data": {"vocab_file": SHAPES_VOCAB}})
  e = ml_collections.ConfigDict(
    dict(
      type="video_qa",
      annotations=str(tmp_path / "test.jsonl"),
      image_root=str(image_root),
      ans2label=str(files / "ans2label.json"),
      video_pattern="video_{num}.json",
      batch_size=2,
      max_tokens=12,
    )
  )
  return records, model, c, e


def test_video_qa_evaluator_counts_oov_answers_as_wrong(video_qa_files, tmp_path):
  from x2vlm_jax import sharding as shd
  from x2vlm_jax import tasks
  from x2vlm_jax.inference.images import normalize, read_video
  from x2vlm_jax.inference.tokenizer import Tokenizer
  from x2vlm_jax.text_clean import pre_question

  d = video_qa_files
  records, model, c, e = _video_qa_eval_setup(d, tmp_path, d / "frames", seed=4)
  graphdef, state = nnx.split(model)
  mesh = shd.create_mesh((4, 1, 1))
  with jax.set_mesh(mesh):
    metrics, preds = tasks.build_evaluator("test", c, e, mesh)(graphdef, nnx.to_pure_dict(state))
  # Independent reference: each question through the model's own methods, one at a time.
  tok = Tokenizer(SHAPES_VOCAB, 12)
  labels = {"red": 0, "yes": 1, "blue": 2}
  right = 0
  for r in records:
    frames = normalize(read_video(str(d / "frames" / f"video_{r['video_id'][5:]}.json"), 3, 32))[None]
    ids, mask = tok([pre_question(r["question"], 50)])
    vis, _ = model.encode_video(jnp.asarray(frames))
    pred = int(jnp.argmax(model.cls_logits(vis, None, jnp.asarray(ids), jnp.asarray(mask))[0]))
    right += pred == labels.get(r["answer"], -100)
  assert metrics["num_questions"] == 12 and metrics["oov_answers"] == 4
  assert metrics["acc"] == pytest.approx(100.0 * right / 12)
  assert len(preds) == 12 and {p["answer"] for p in preds} <= set(labels)


def test_a_wrong_video_image_root_fails_first_with_a_clear_error(video_qa_files, tmp_path, caplog):
  """Every video missing (a wrong --image_root) is one error before anything is read, not one
  "(skipped)" warning per video followed by "no video could be read"."""
  from x2vlm_jax import sharding as shd
  from x2vlm_jax import tasks

  _, model, c, e = _video_qa_eval_setup(video_qa_files, tmp_path, tmp_path / "not_the_frames", seed=0)
  graphdef, state = nnx.split(model)
  mesh = shd.create_mesh((4, 1, 1))
  with (
    jax.set_mesh(mesh),
    pytest.raises(ValueError, match=r"none of 4 video files sampled from 4 exists under image_root"),
  ):
    tasks.build_evaluator("test", c, e, mesh)(graphdef, nnx.to_pure_dict(state))
  assert not [r for r in caplog.records if "skipped" in r.getMessage()], [r.getMessage() for r in caplog.records]


def test_the_file_check_samples_the_whole_set(tmp_path):
  """A set whose only readable video is its last one is not refused (the sample reaches the end)."""
  from types import SimpleNamespace

  from x2vlm_jax.evaluation.base import Evaluator

  paths = [str(tmp_path / f"video_{i}.json") for i in range(100)]
  (tmp_path / "video_99.json").write_text("{}")
  fake = SimpleNamespace(name="t", ecfg={"image_root": str(tmp_path)})
  Evaluator.require_some_files(fake, paths)
  (tmp_path / "video_99.json").unlink()
  with pytest.raises(ValueError, match="none of 16 video files sampled from 100"):
    Evaluator.require_some_files(fake, paths)
