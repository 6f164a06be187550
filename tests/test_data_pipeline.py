"""Train iterator: batch contract, determinism, resume, multi-host sharding, corrupt images, eval split."""

import io

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from x2vlm_jax import batch as batch_contract  # noqa: E402
from x2vlm_jax.data import pipeline, records, shapes  # noqa: E402
from x2vlm_jax.models.presets import CLIP_MEAN, CLIP_STD  # noqa: E402


def _strip(b):
  return {s: {k: v for k, v in f.items() if not k.startswith("_")} for s, f in b.items()}


def _equal(a, b):
  assert a.keys() == b.keys()
  for s in a:
    for k in a[s]:
      np.testing.assert_array_equal(a[s][k], b[s][k], err_msg=f"{s}.{k}")


@pytest.mark.slow
def test_contract_resume_and_determinism(small_data_cfg, tmp_path):
  c = small_data_cfg(image=True, region=True, video=True)
  a = pipeline.create_train_iterator(c, seed=7)
  first = [next(a) for _ in range(3)]
  for s, f in first[0].items():
    spec = batch_contract.stream_spec(
      s,
      batch_size=c[s].batch_size,
      image_res=32,
      patch_size=16,
      max_tokens=40,
      max_masks=12,
      num_images=c.region.num_images,
      num_frames=c.video.num_frames,
    )
    batch_contract.check_stream(s, f, spec)
  assert first[0]["video"]["frames"].shape == (4, 3, 32, 32, 3)
  assert (first[0]["image"]["valid"] == 1).all()
  a.save_state(str(tmp_path / "ckpt"))
  after = [next(a) for _ in range(3)]  # the uninterrupted run continues
  b = pipeline.create_train_iterator(c, seed=7)
  b.restore_state(str(tmp_path / "ckpt"))
  for x, y in zip(after, [next(b) for _ in range(3)]):
    _equal(x, y)
  assert b.stats()["image"]["batches"] == 6 and a.stats() == b.stats()
  # a fresh run with the same seed reproduces the first batch; another seed does not
  c2 = small_data_cfg(image=True)
  x, y = next(pipeline.create_train_iterator(c2, seed=7)), next(pipeline.create_train_iterator(c2, seed=8))
  _equal(x, {"image": first[0]["image"]})
  assert not np.array_equal(x["image"]["images"], y["image"]["images"])
  with pytest.raises(ValueError, match="not divisible by process_count=3"):
    pipeline.TrainIterator(c2, seed=7, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="process_count=1 was saved"):
    pipeline.TrainIterator(c, seed=7, process_index=0, process_count=2).restore_state(str(tmp_path / "ckpt"))


@pytest.mark.slow
def test_multi_host_disjoint_and_cover_epoch(small_data_cfg):
  c = small_data_cfg(image=True)
  per_host = 96 // 2 // 4  # batches per host per epoch (96 train records, 4 per host batch)
  seen = []
  for host in range(2):
    it = pipeline.TrainIterator(c, seed=1, process_index=host, process_count=2, keep_debug=True)
    recs = []
    for _ in range(per_host):
      b = next(it)["image"]
      assert b["images"].shape[0] == 4
      recs += b["_record"][:, 1].tolist()
    seen.append(recs)
    it.close()
  assert len(set(seen[0])) == len(seen[0]) == 48
  assert not set(seen[0]) & set(seen[1])
  assert set(seen[0]) | set(seen[1]) == set(range(96))


def _corrupt_dataset(data_dir, n_good=17):
  rs = np.random.RandomState(0)
  good = []
  for _ in range(n_good):
    img, _, cap = shapes.render_scene(rs)
    good.append(records.image_example(shapes.encode(img), 128, 128, caption=[cap]))
  bad = [b"not an image at all", good[0]["image"][:300], b"\x89PNG\r\n\x1a\n" + b"\x00" * 40]
  exs = (
    good[:5]
    + [dict(good[0], image=bad[0])]
    + good[5:11]
    + [dict(good[0], image=bad[1])]
    + good[11:]
    + [dict(good[0], image=bad[2])]
  )
  w = records.DatasetWriter(data_dir, "corrupt", "image_text")
  w.write_split("train", exs)
  w.finish()
  return len(exs)


def test_corrupt_images_dropped_and_counted(small_data_cfg, tmp_path):
  n = _corrupt_dataset(str(tmp_path))
  c = small_data_cfg(image=True)
  c.data_dir = str(tmp_path)
  c.image.datasets = [("corrupt", "train", 1.0)]
  c.image.batch_size = 17  # exactly the good records of one epoch
  it = pipeline.TrainIterator(c, seed=0, keep_debug=True)
  b = next(it)["image"]
  assert sorted(b["_record"][:, 1].tolist()) == [i for i in range(n) if i not in (5, 12, 19)]
  # Every position consumed so far that is not in the batch was a corrupt record (5, 12 or 19).
  p = it.get_state()["streams"]["image"]["position"]
  src = it._sources["image"]
  expected = sum(src.record_index(0, k) in (5, 12, 19) for k in range(p))
  assert p >= n - 1 and expected >= 2
  assert it.stats()["image"] == {"batches": 1, "records": 17, "dropped_corrupt": expected}
  it.close()
  c.strict = True
  with pytest.raises(tf.errors.InvalidArgumentError):
    next(pipeline.TrainIterator(c, seed=0))


@pytest.mark.slow
def test_mixture_proportional_to_size_unless_weighted(shapes_dir, small_data_cfg):
  """The official loader pools a stream's files, so datasets are drawn ∝ size; weights are an option.
  Sizes of conftest's build: shapes/train 96, shapes/test 32, shapes_video/train 24."""
  from x2vlm_jax.data.source import StreamSource

  def freq(datasets, n=40960):
    src = StreamSource(shapes_dir, datasets, seed=0, stream_id=1, process_index=0, process_count=1)
    return np.bincount([src.dataset_at(p) for p in range(n)], minlength=len(datasets)) / n

  np.testing.assert_allclose(freq([("shapes", "train"), ("shapes", "test")]), [0.75, 0.25], atol=0.01)
  np.testing.assert_allclose(freq([("shapes", "test", None), ("shapes", "train", None)]), [0.25, 0.75], atol=0.01)
  # explicit weights against the sizes' order
  np.testing.assert_allclose(freq([("shapes", "train", 1.0), ("shapes", "test", 3.0)]), [0.25, 0.75], atol=0.01)
  # mixed: the explicit weight is a probability, the rest is shared ∝ size (32 : 24)
  np.testing.assert_allclose(
    freq([("shapes", "test"), ("shapes", "train", 0.2), ("shapes_video", "train")]),
    [0.8 * 32 / 56, 0.2, 0.8 * 24 / 56],
    atol=0.01,
  )
  with pytest.raises(ValueError, match="must sum to < 1"):
    StreamSource(
      shapes_dir, [("shapes", "train", 1.5), ("shapes", "test")], seed=0, stream_id=1, process_index=0, process_count=1
    )
  # and the train iterator follows it (no weights given)
  c = small_data_cfg(image=True)
  c.image.datasets = [("shapes", "test"), ("shapes", "train")]
  it = pipeline.TrainIterator(c, seed=0, keep_debug=True)
  ds = np.concatenate([next(it)["image"]["_record"][:, 0] for _ in range(25)])
  assert abs((ds == 1).mean() - 0.75) < 0.08
  it.close()


def test_eval_split(small_data_cfg):
  c = small_data_cfg()
  e = pipeline.load_eval_split(c, "shapes", "test", max_examples=10)
  src = records.open_source(c.data_dir, "shapes", "test")
  n_texts = sum(1 + len(src[i]["boxes"]) for i in range(10))
  assert e["images"].shape == (10, 32, 32, 3) and e["text_ids"].shape == (n_texts, 40)
  assert e["text_image"].max() == 9 and (np.diff(e["text_image"]) >= 0).all()
  assert ((e["text_bbox"] >= 0) & (e["text_bbox"] <= 1)).all()
  assert (e["is_image"].sum() == 10) and (e["patch_mask"][e["is_image"] == 1] == 1).all()
  # The official test transform: PIL decode → Resize((R, R), BICUBIC) → ToTensor → Normalize.
  for i in (0, 3, 9):
    pil = Image.open(io.BytesIO(src[i]["image"])).convert("RGB").resize((32, 32), Image.BICUBIC)
    ref = np.asarray(pil, np.float64)
    got = (e["images"][i] * np.asarray(CLIP_STD) + np.asarray(CLIP_MEAN)) * 255.0
    d = np.abs(got - ref)
    assert d.mean() < 0.03 and d.max() < 2.01, (i, d.mean(), d.max())
  # the first element text of image 0 names its object and its box matches the stored box / 128
  i0 = np.nonzero((e["text_image"] == 0) & (e["is_image"] == 0))[0][0]
  x, y, w, h = src[0]["boxes"][0] / 128
  np.testing.assert_allclose(e["text_bbox"][i0], [x + w / 2, y + h / 2, w, h], atol=1e-6)
  v = pipeline.load_eval_split(c, "shapes_video", "test", max_examples=4)
  assert v["frames"].shape == (4, 3, 32, 32, 3) and v["text_ids"].shape == (4, 40)
