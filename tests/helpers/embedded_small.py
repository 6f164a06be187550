"""The embedded `shapes` datasets at test sizes (x2vlm_jax.embedded.SIZES), seconds to build."""

import contextlib

import pytest

from x2vlm_jax import embedded

SMALL = {
  embedded.SHAPES: dict(num_train=24, num_test=8, num_train_videos=4, num_test_videos=2, num_frames=3),
  embedded.TASKS: dict(num_train=12, num_test=8, num_train_videos=8, num_test_videos=4),
  embedded.SHAPES_ML: dict(num_train=16, num_test=4, num_pairs=48),
  embedded.ML_TASKS: dict(num_train=12, num_test=6),
}


@contextlib.contextmanager
def small_sizes():
  with pytest.MonkeyPatch.context() as m:
    m.setattr(embedded, "SIZES", SMALL)
    yield
