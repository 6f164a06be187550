"""Converter behaviour: strictness messages, other-preset files, rel-pos resize (docs/reference.md §12 figures),
frame-embedding copy, containers (.npz, {'model': ...}, torch.save .th with weights_only loading), CLI."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from convert_helpers import random_official_state_dict

from tests.helpers.tools import load_tool
from x2vlm_jax import params_io
from x2vlm_jax.convert import assemble, relpos
from x2vlm_jax.convert import layout as L
from x2vlm_jax.convert.init_weights import bert_layer_map
from x2vlm_jax.convert.state_dict import read_state_dict
from x2vlm_jax.convert.x2vlm import ConversionError, convert_official
from x2vlm_jax.models import get_preset
from x2vlm_jax.models.vision import relative_position_table_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "tools", "convert_checkpoint.py")  # the command a user types, run as a subprocess


def cli_main(argv):
  """tools/convert_checkpoint.py (= the x2vlm-convert console script, x2vlm_jax/cli/convert_checkpoint.py)."""
  return load_tool("convert_checkpoint").main(argv)


@pytest.fixture(scope="module")
def tiny_sd(tiny_cfg):
  return random_official_state_dict(tiny_cfg, seed=2)


# --- rel-pos resize (docs/reference.md §7.5, §12) --------------------------------------------------------------


@pytest.mark.parametrize("dst_grid,q,outer", [(24, 1.090307, 23.0), (48, 1.195487, 47.0), (16, 1.023493, None)])
def test_geometric_ratio_figures(dst_grid, q, outer):
  got = relpos.geometric_ratio(27, 2 * dst_grid - 1)
  assert got == pytest.approx(q, abs=1e-6)
  if outer is not None:
    assert relpos.source_axis(27, got)[-1] == pytest.approx(outer, abs=1e-3)


@pytest.mark.parametrize("dst_grid,rows", [(24, 2212), (48, 9028)])
def test_resize_table_rows_and_fixed_points(dst_grid, rows):
  table = np.random.default_rng(0).standard_normal((732, 3)).astype(np.float32)
  out, info = relpos.resize_rel_pos_table(table, dst_grid)
  assert out.shape == (rows, 3) and info["src_rows"] == 732 and info["dst_rows"] == rows
  np.testing.assert_array_equal(out[-3:], table[-3:])  # the 3 cls rows are kept as they are
  # Offsets −1, 0, +1 sit exactly on source points (d₀ = 1): the interpolating spline reproduces them.
  src, dst = 27, 2 * dst_grid - 1
  a = table[: src * src].reshape(src, src, 3)
  b = out[: dst * dst].reshape(dst, dst, 3)
  np.testing.assert_allclose(
    b[dst // 2 - 1 : dst // 2 + 2, dst // 2 - 1 : dst // 2 + 2],
    a[src // 2 - 1 : src // 2 + 2, src // 2 - 1 : src // 2 + 2],
    atol=1e-5,
  )


def test_resize_same_grid_is_identity():
  table = np.ones((732, 2), np.float32)
  out, _ = relpos.resize_rel_pos_table(table, 14)
  assert out is table


def test_grid_from_rows():
  assert [relpos.grid_from_rows(r) for r in (732, 2212, 9028, 12)] == [14, 24, 48, 2]
  with pytest.raises(ValueError, match="733 rows"):
    relpos.grid_from_rows(733)


# --- strictness -----------------------------------------------------------------------------------


def test_exact_checkpoint_converts_and_skips_buffers(tiny_sd, tiny_cfg):
  flat, report = convert_official(tiny_sd, tiny_cfg)
  assert set(flat) == set(params_io.param_shapes(tiny_cfg))
  assert report["new_params"] == [] and report["resized_tables"] == []
  w = tiny_sd["text_encoder.bert.encoder.layer.2.crossattention.self.key.weight"]
  np.testing.assert_array_equal(flat["text/layers/2/cross_attn/key/kernel"], w.T)
  qkv = tiny_sd["vision_encoder.blocks.1.attn.qkv.weight"]
  np.testing.assert_array_equal(flat["vision/blocks/1/attn/qkv/kernel"], qkv.T)
  conv = tiny_sd["vision_encoder.patch_embed.proj.weight"]  # [D,3,P,P]
  k = flat["vision/patch_embed/kernel"].reshape(16, 16, 3, -1)  # (h, w, c) rows
  np.testing.assert_array_equal(k[5, 7, 2], conv[:, 2, 5, 7])
  np.testing.assert_array_equal(flat["itm_head/fc1/kernel"], tiny_sd["itm_head.3.weight"].T)


def test_missing_unexpected_misshaped_listed_in_one_error(tiny_sd, tiny_cfg):
  sd = dict(tiny_sd)
  del sd["vision_encoder.fc_norm.bias"], sd["itm_head.3.weight"]
  sd["some.legacy.key"] = np.zeros(3, np.float32)
  sd["text_proj.weight"] = np.zeros((7, 5), np.float32)
  with pytest.raises(ConversionError) as e:
    convert_official(sd, tiny_cfg)
  msg = str(e.value)
  assert isinstance(e.value, ValueError)
  assert "2 missing, 1 unexpected, 1 mis-shaped" in msg
  assert "vision_encoder.fc_norm.bias" in msg and "itm_head.3.weight" in msg
  assert "some.legacy.key" in msg
  assert "text_proj.weight: expected [32, 64], found [7, 5]" in msg
  assert "hint" not in msg  # the geometry is right; no "wrong preset" hint


def test_untied_decoder_is_reported(tiny_sd, tiny_cfg):
  sd = dict(tiny_sd)
  sd[L.CLS_PREFIX + "decoder.weight"] = sd[L.CLS_PREFIX + "decoder.weight"] + 1.0
  with pytest.raises(ConversionError, match="decoder.weight differs"):
    convert_official(sd, tiny_cfg)


def test_other_preset_checkpoint_gives_clear_error(tiny_cfg):
  # A full base-size key set without 1 GB of memory: zero-stride arrays carry only the shapes.
  base = {k: np.broadcast_to(np.float32(0), s) for k, s in L.official_shapes(get_preset("base")).items()}
  with pytest.raises(ConversionError) as e:
    convert_official(base, get_preset("tiny", image_res=224))
  first = str(e.value).splitlines()[:2]
  assert "mis-shaped" in first[0] and "unexpected" in first[0]
  assert "another model size" in first[1] and "vision width 768 (model 64)" in first[1]
  assert "text layers 18 (model 3)" in first[1]


def test_bertmodel_layout_needs_explicit_allow_missing(tiny_sd, tiny_cfg):
  """Fine-tuned task files have `text_encoder.{embeddings,encoder}` and no MLM head (docs/reference.md §7.3)."""
  sd = {}
  for k, v in tiny_sd.items():
    if k.startswith("text_encoder.cls."):
      continue
    sd[k.replace("text_encoder.bert.", "text_encoder.")] = v
  with pytest.raises(ConversionError, match=r"text_encoder.cls.predictions.bias"):
    convert_official(sd, tiny_cfg)
  zeros = lambda: {k: np.zeros(s, np.float32) for k, (s, _) in params_io.param_shapes(tiny_cfg).items()}  # noqa: E731
  flat, report = convert_official(sd, tiny_cfg, allow_missing=["text/mlm"], fresh=zeros)
  assert report["text_layout"] == "BertModel"
  assert sorted(report["new_params"]) == [
    "text/mlm/bias",
    "text/mlm/dense/bias",
    "text/mlm/dense/kernel",
    "text/mlm/ln/bias",
    "text/mlm/ln/scale",
  ]
  np.testing.assert_array_equal(
    flat["text/embeddings/word/embedding"], tiny_sd["text_encoder.bert.embeddings.word_embeddings.weight"]
  )


def test_bert_layer_map():
  assert bert_layer_map(12, 12, 18) == {**{i: i for i in range(12)}, **{12 + j: 6 + j for j in range(6)}}
  assert bert_layer_map(6, 6, 6) == {i: i for i in range(6)}
  assert bert_layer_map(2, 2, 3) == {0: 0, 1: 1, 2: 1}
  with pytest.raises(ValueError, match="fusion layers"):
    bert_layer_map(4, 12, 18)


# --- frames, containers, CLI ----------------------------------------------------------------------


@pytest.mark.slow
def test_frame_embedding_copies_min_frames(tiny_cfg):
  sd = random_official_state_dict(get_preset("tiny", num_frames=3), seed=3)
  src = sd["absolute_frame_pos_embed"]
  fewer = get_preset("tiny", num_frames=2)
  flat, report = convert_official(sd, fewer)
  np.testing.assert_array_equal(flat["frame_pos"], src[:, :2])
  assert report["frames"] == {"checkpoint": 3, "model": 2, "copied": 2}
  more = get_preset("tiny", num_frames=5)
  fresh = {k: np.full(s, 7.0, np.float32) for k, (s, _) in params_io.param_shapes(more).items()}
  flat, report = convert_official(sd, more, fresh=lambda: fresh)
  np.testing.assert_array_equal(flat["frame_pos"][:, :3], src)
  np.testing.assert_array_equal(flat["frame_pos"][:, 3:], 7.0)  # the rest keeps its fresh init
  # A model without frame embeddings does not silently drop them.
  with pytest.raises(ConversionError, match="absolute_frame_pos_embed"):
    convert_official(sd, tiny_cfg)


def test_containers_npz_wrapper_and_torch_weights_only(tmp_path, tiny_sd):
  import torch

  np.savez(tmp_path / "a.npz", **tiny_sd)
  wrapped = {"model": {k: torch.from_numpy(np.array(v)) for k, v in tiny_sd.items()}, "config": {"image_res": 32}}
  torch.save(wrapped, tmp_path / "a.th")
  torch.save({"module": wrapped["model"]}, tmp_path / "b.pth")
  for name in ("a.npz", "a.th", "b.pth"):
    sd = read_state_dict(str(tmp_path / name))
    assert set(sd) == set(tiny_sd), name
    np.testing.assert_array_equal(sd["temp"], tiny_sd["temp"])


class _Payload:
  def __reduce__(self):
    return (os.system, ("touch /tmp/x2vlm_convert_pwned",))


def test_pickles_cannot_execute_code(tmp_path):
  import pickle

  import torch

  marker = "/tmp/x2vlm_convert_pwned"
  if os.path.exists(marker):
    os.remove(marker)
  torch.save({"model": {"w": torch.zeros(2)}, "evil": _Payload()}, tmp_path / "evil.th")
  with pytest.raises(pickle.UnpicklingError):
    read_state_dict(str(tmp_path / "evil.th"))
  assert not os.path.exists(marker)


@pytest.mark.slow
def test_cli_resizes_224_to_384_and_forward_runs(tmp_path):
  """The issue-#15 situation made boring: a 224 checkpoint converted for 384 just works."""
  from x2vlm_jax import inference

  cfg224 = get_preset("tiny", image_res=224)
  sd = random_official_state_dict(cfg224, seed=4)
  torch = pytest.importorskip("torch")
  torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, tmp_path / "ckpt.th")
  out = tmp_path / "out384"
  from x2vlm_jax.data.config import SHAPES_VOCAB

  assert (
    cli_main(
      [
        "--input",
        str(tmp_path / "ckpt.th"),
        "--model",
        "tiny",
        "--image_res",
        "384",
        "--output",
        str(out),
        "--vocab",
        SHAPES_VOCAB,
      ]
    )
    == 0
  )
  conv = json.loads((out / "conversion.json").read_text())
  assert conv["image_res"] == 384 and conv["num_frames"] == 0 and conv["new_params"] == []
  assert conv["source"]["checkpoint_image_res"] == 224
  assert [t["dst_rows"] for t in conv["resized_tables"]] == [2212, 2212]
  assert conv["resized_tables"][0]["q"] == pytest.approx(1.090307, abs=1e-6)
  cfg, params = params_io.load(str(out))
  assert params["vision"]["blocks"][0]["attn"]["rel_pos_table"].shape == (relative_position_table_rows(24), 4)
  model = inference.load(str(out))
  embeds, feat = model.encode_image(np.zeros((1, 384, 384, 3), np.float32))
  assert embeds.shape == (1, 577, 64) and bool(jnp.isfinite(embeds).all())
  # The directory carries its tokenizer: vocab.txt copied, tokenize() uses it.
  assert (out / "vocab.txt").read_text() == open(SHAPES_VOCAB).read()
  vocab = open(SHAPES_VOCAB).read().split("\n")
  ids, mask = model.tokenize(["A red circle!"])
  assert ids[0, : mask[0].sum()].tolist() == [vocab.index(w) for w in ("[CLS]", "a", "red", "circle", "[SEP]")]


@pytest.mark.slow
def test_cli_other_preset_exits_with_message(tmp_path, tiny_sd):
  big = get_preset("tiny")
  big.vision.width = 96  # a different geometry, small enough to write to disk
  np.savez(tmp_path / "other.npz", **random_official_state_dict(big, seed=5))
  r = subprocess.run(
    [sys.executable, CLI, "--input", str(tmp_path / "other.npz"), "--model", "tiny", "--output", str(tmp_path / "o")],
    capture_output=True,
    text=True,
  )
  assert r.returncode == 2
  # Progress lines (absl INFO) may come first; the error is one plain line, not a traceback.
  assert any(line.startswith("error: checkpoint does not fit model preset 'tiny'") for line in r.stderr.splitlines())
  assert "vision width 96 (model 64)" in r.stderr and "Traceback" not in r.stderr
  assert not (tmp_path / "o").exists()


def test_cli_init_mode_beit_plus_bert(tmp_path, tiny_cfg):
  import torch
  from convert_helpers import random_beit_checkpoint
  from transformers import BertConfig, BertForPreTraining

  beit = random_beit_checkpoint(tiny_cfg, seed=6)
  torch.save({"model": {k: torch.from_numpy(v) for k, v in beit.items()}}, tmp_path / "beit.pth")
  t = tiny_cfg.text
  hf = BertForPreTraining(
    BertConfig(
      hidden_size=t.hidden,
      num_attention_heads=t.num_heads,
      intermediate_size=t.ffn_dim,
      vocab_size=t.vocab_size,
      max_position_embeddings=t.max_positions,
      num_hidden_layers=2,
    )
  )
  # Legacy TF names (bert-base-uncased's pytorch_model.bin) + pooler + NSP head, which are ignored.
  bert = {
    k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
    for k, v in hf.state_dict().items()
  }
  assert any(k.startswith("cls.seq_relationship") for k in bert) and any(k.startswith("bert.pooler") for k in bert)
  os.makedirs(tmp_path / "bert")
  torch.save(bert, tmp_path / "bert" / "pytorch_model.bin")
  out = tmp_path / "init"
  assert (
    cli_main(
      [
        "--beit",
        str(tmp_path / "beit.pth"),
        "--bert",
        str(tmp_path / "bert"),
        "--model",
        "tiny",
        "--seed",
        "3",
        "--output",
        str(out),
      ]
    )
    == 0
  )
  conv = json.loads((out / "conversion.json").read_text())
  new = conv["new_params"]
  assert any(p.startswith("text/layers/2/cross_attn/") for p in new)
  for head in ("vision_proj/kernel", "text_proj/kernel", "temp", "itm_head/fc0/kernel", "bbox_head/fc1/bias"):
    assert head in new
  assert not any(p.startswith(("vision/", "text/embeddings", "text/mlm", "text/layers/0/")) for p in new)
  assert conv["layer_map"] == {"0": 0, "1": 1, "2": 1}
  _, params = params_io.load(str(out))
  flat = assemble.flatten(params)
  sd = hf.state_dict()
  np.testing.assert_array_equal(
    flat["text/layers/2/self_attn/query/kernel"], sd["bert.encoder.layer.1.attention.self.query.weight"].numpy().T
  )
  np.testing.assert_array_equal(flat["text/mlm/ln/scale"], sd["cls.predictions.transform.LayerNorm.weight"].numpy())
  for i in range(tiny_cfg.vision.depth):  # the shared BEiT table went into every block
    np.testing.assert_array_equal(
      flat[f"vision/blocks/{i}/attn/rel_pos_table"], beit["rel_pos_bias.relative_position_bias_table"]
    )
  assert float(flat["temp"]) == pytest.approx(0.07)


@pytest.mark.parametrize("dst_grid", [24, 9])
def test_resize_table_off_grid_is_the_bicubic_interpolating_spline(dst_grid):
  """Every resized value (not only offsets on source points): BEiT's interp2d(kind="cubic") on the
  geometric source axis is the tensor-product cubic interpolating spline (not-a-knot ends), here built
  separably with make_interp_spline along Δrow then Δcol; a bilinear interpolant would not pass."""
  from scipy.interpolate import make_interp_spline

  rng = np.random.default_rng(5)
  table = rng.standard_normal((732, 2)).astype(np.float32)
  out, info = relpos.resize_rel_pos_table(table, dst_grid)
  src, dst = 27, 2 * dst_grid - 1
  axis = relpos.source_axis(src, relpos.geometric_ratio(src, dst))
  target = np.arange(-(dst // 2), dst // 2 + 1, dtype=np.float64)
  # FITPACK (interp2d, as RectBivariateSpline) evaluates a point outside the data range at the range's
  # end (fpbisp clamps the argument); the outermost target offset can lie a hair beyond the geometric axis.
  target = np.clip(target, axis[0], axis[-1])
  for h in range(2):
    z = table[: src * src, h].astype(np.float64).reshape(src, src)
    rows = make_interp_spline(axis, z, k=3, axis=0)(target)  # [dst, src]
    want = make_interp_spline(axis, rows, k=3, axis=1)(target)  # [dst, dst]
    got = out[: dst * dst, h].reshape(dst, dst)
    np.testing.assert_allclose(got, want, atol=1e-4)
    bilinear = np.stack([np.interp(target, axis, r) for r in z])  # along Δcol
    bilinear = np.stack([np.interp(target, axis, c) for c in bilinear.T]).T  # then Δrow
    assert np.abs(bilinear - want).max() > 1e-2
