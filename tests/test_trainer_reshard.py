"""A checkpoint written on one mesh restores onto another (topology change between launches)."""

import jax
import numpy as np
import pytest

from tests.configs import synthetic_tiny
from x2vlm_jax import experiment


def _config(mesh):
  c = synthetic_tiny.get_config("steps=4")
  c.mesh = mesh
  c.async_checkpoints = False
  c.checkpoint_every = 2
  return c


@pytest.mark.slow
def test_restore_onto_a_different_mesh(tmp_path):
  saved, _, _ = experiment.train(_config((4, 1, 1)), str(tmp_path), max_steps=2)
  assert int(jax.device_get(saved["step"])) == 2
  # max_steps=0: restore only (no step is compiled), onto data=1 × fsdp=2 × tensor=2.
  restored, _, _ = experiment.train(_config((1, 2, 2)), str(tmp_path), max_steps=0)
  assert int(jax.device_get(restored["step"])) == 2
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(jax.device_get(a)), np.asarray(jax.device_get(b)))
  kernel = restored["params"]["text"]["layers"][0]["intermediate"]["kernel"]  # (embed, mlp)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert dict(kernel.sharding.mesh.shape) == {"data": 1, "fsdp": 2, "tensor": 2}
  mu = jax.tree.leaves(restored["opt_state"])  # optimizer moments follow their params' shardings
  assert any(
    getattr(x, "sharding", None) is not None and x.shape == kernel.shape and x.sharding.spec == kernel.sharding.spec
    for x in mu
  )
