"""A checkpoint with another frame count (docs/reference.md §1.7): the first min(F_ckpt, F_model) frame
embeddings are copied and the table joins the lr × lr_mult group, as the official loader does
(`XVLMBase.load_pretrained` deletes a frame table of another length from the state dict, so it is a
missing key and lands in `init_params`); the same count is a plain load. Also: the VQA decoder's
lr × lr_mult for all its parameters is opt-in (`XVLMForVQA`: `config.get('large_lr_for_dec', False)`)."""

import json

import ml_collections
import numpy as np
import pytest
from convert_helpers import random_official_state_dict
from flax import nnx
from helpers.tools import load_tool

from tests.helpers.tiers import tiered
from x2vlm_jax import params_io
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.training import init_from


@pytest.fixture(scope="module")
def export_2_frames(tmp_path_factory):
  cfg = get_preset("tiny", num_frames=2)
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(3)), nnx.Param))
  params["frame_pos"] = np.arange(np.size(params["frame_pos"]), dtype=np.float32).reshape(np.shape(params["frame_pos"]))
  path = str(tmp_path_factory.mktemp("frames") / "export")
  params_io.save(path, cfg, params)
  return path, np.asarray(params["frame_pos"])


@pytest.mark.parametrize("frames", tiered([1, 2, 4], fast=[4]))
def test_init_from_another_frame_count_copies_the_first_frames_into_the_new_group(export_2_frames, frames):
  path, src = export_2_frames
  dst = get_preset("tiny", num_frames=frames)
  p = init_from.plan(path, dst)
  fresh_value = np.full((1, frames, 1, dst.vision.width), -7.0, np.float32)
  values = init_from.load_values(p, dst, fresh=lambda k: fresh_value if k == "frame_pos" else None)
  got = values["frame_pos"]
  n = min(2, frames)
  assert got.shape == (1, frames, 1, dst.vision.width)
  np.testing.assert_array_equal(got[:, :n], src[:, :n])
  np.testing.assert_array_equal(got[:, n:], fresh_value[:, n:])  # frames the checkpoint lacks stay fresh
  assert ("frame_pos" in p.new_params) == (frames != 2)
  assert p.actions["frame_pos"] == ("load" if frames == 2 else "frames")


def test_converter_puts_a_resized_frame_table_in_new_params(tmp_path):
  cfg = get_preset("tiny", num_frames=2)
  sd = random_official_state_dict(cfg, seed=4)
  np.savez(tmp_path / "video.npz", **sd)
  for frames, new in ((2, False), (3, True)):
    out = tmp_path / f"out{frames}"
    argv = ["--input", str(tmp_path / "video.npz"), "--model", "tiny", "--output", str(out)]
    assert load_tool("convert_checkpoint").main(argv + ["--num_frames", str(frames)]) == 0
    report = json.loads((out / "conversion.json").read_text())
    assert ("frame_pos" in report["new_params"]) == new, frames


def test_large_lr_for_dec_is_off_unless_set():
  from tests.configs import synthetic_vqa
  from x2vlm_jax.tasks.vqa import VQATask

  fields = synthetic_vqa.get_config().to_dict()
  fields.pop("large_lr_for_dec", None)
  assert VQATask(ml_collections.ConfigDict(fields)).large_lr_for_dec is False
  assert VQATask(ml_collections.ConfigDict({**fields, "large_lr_for_dec": True})).large_lr_for_dec is True
