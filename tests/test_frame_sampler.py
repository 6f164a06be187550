"""Training frame selection (data/streams.py: sample_frame_ids) against the official
dataset/utils.py: sample_frame_ids(num_frames, num_segments, training=True), transcribed in numpy:
distributions of the whole index tuple (the tf sampler draws from its own stateless seeds); and the
evaluation choice (inference/images.py: eval_frame_ids, training=False) index for index, as read_video reads it."""

from collections import Counter

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from x2vlm_jax.data.streams import sample_frame_ids  # noqa: E402

N = 4000


def official_sample_frame_ids(rng, nf, ns):
  if nf <= ns:
    out = np.sort(np.concatenate((np.arange(nf), rng.integers(nf, size=ns - nf))))
    return tuple(int(i) for i in out)
  stride = nf // ns
  strides = np.array([stride] * ns)
  offsets = np.array([1] * (nf - ns * stride) + [0] * (ns * (stride + 1) - nf))
  rng.shuffle(offsets)
  strides += offsets
  out, cursor = [], 0
  for each in strides:
    out.append(int(rng.integers(cursor, cursor + each)))
    cursor += each
  return tuple(out)


def _ours(nf, ns):
  def one(i):
    return sample_frame_ids(tf.constant(nf), ns, tf.stack([i, tf.constant(5, tf.int64)]))

  return [tuple(int(v) for v in row) for row in next(iter(tf.data.Dataset.range(N).map(one).batch(N))).numpy()]


@pytest.mark.parametrize("nf,ns", [(7, 3), (2, 4), (10, 4), (5, 5), (1, 3)])
def test_frame_ids_follow_the_official_distribution(nf, ns):
  rng = np.random.default_rng(0)
  ref = Counter(official_sample_frame_ids(rng, nf, ns) for _ in range(N))
  ours = Counter(_ours(nf, ns))
  assert set(ours) <= set(ref) | {k for k in ours if ours[k] < 3}  # nothing the official sampler cannot give
  support = set(ref) | set(ours)
  tv = 0.5 * sum(abs(ours[k] / N - ref[k] / N) for k in support)
  assert tv < 0.06 + 0.02 * np.sqrt(len(support) / 10), (tv, len(support))


def official_eval_frame_ids(nf, ns):
  """dataset/utils.py: sample_frame_ids(nf, ns, training=False), transcribed: i mod nf sorted when
  nf ≤ ns; else the LEFT end of each of ns segments whose strides are nf // ns plus the unshuffled
  offsets [1] * (nf − ns·stride) + [0] * … (the first segments one frame longer)."""
  if nf <= ns:
    return sorted(i % nf for i in range(ns))
  stride = nf // ns
  strides = [stride + o for o in [1] * (nf - ns * stride) + [0] * (ns * (stride + 1) - nf)]
  out, cursor = [], 0
  for each in strides:
    out.append(cursor)
    cursor += each
  return out


def test_evaluation_frame_ids_are_the_official_ones_and_read_video_uses_them():
  import base64
  import io

  from PIL import Image

  from x2vlm_jax.inference.images import eval_frame_ids, read_video

  for nf in range(1, 41):
    for ns in range(1, 17):
      assert eval_frame_ids(nf, ns) == official_eval_frame_ids(nf, ns), (nf, ns)
  # The frames read are those: frame k of a 11-frame video is filled with grey level 20·k.
  frames = []
  for k in range(11):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 20 * k, np.uint8)).save(buf, format="PNG")
    frames.append(base64.b64encode(buf.getvalue()).decode())
  for ns in (3, 4, 11, 16):
    got = read_video(frames, ns, 8)
    assert got.shape == (ns, 8, 8, 3)
    assert [int(round(v / 20)) for v in got[:, 4, 4, 0]] == official_eval_frame_ids(11, ns)
