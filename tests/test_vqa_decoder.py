"""VQA answer decoder (docs/reference.md §5.2, §7.3): official names and layout, conversion of a fabricated VQA
checkpoint (BertModel `text_encoder.*` + `text_decoder.*`), parity with the PyTorch reference, the
answer loss against a numpy formula, the official decoder initialisation, memory sharing."""

import numpy as np
import pytest
import torch
from convert_helpers import random_official_state_dict
from flax import nnx
from reference.x2vlm_torch import X2VLMReference

from tests.helpers.tools import load_tool
from x2vlm_jax.convert import assemble
from x2vlm_jax.convert import layout as L
from x2vlm_jax.convert.x2vlm import ConversionError, checkpoint_decoder_layers, convert_official
from x2vlm_jax.models import X2VLM, get_preset
from x2vlm_jax.models.decoder import decoder_from_fusion, decoder_source_layers
from x2vlm_jax.training import optimizer as O

VQA_MISSING = ["text/mlm", "vision_proj", "text_proj", "temp", "itm_head", "bbox_head"]


def vqa_cfg(num_layers=4, fusion_start=2, decoder_layers=2, **kw):
  cfg = get_preset("tiny", **kw)
  cfg.text.num_layers, cfg.text.fusion_start = num_layers, fusion_start
  cfg.heads.decoder_layers = decoder_layers
  return cfg


def vqa_state_dict(cfg, seed):
  """(pre-training-layout dict for the reference, the fine-tuned VQA file as XVLMForVQA saves it)."""
  sd = random_official_state_dict(cfg, seed=seed)
  sd[L.DECODER_PREFIX + "embeddings.position_ids"] = np.arange(cfg.text.max_positions)[None]
  sd[L.DECODER_CLS_PREFIX + "decoder.weight"] = sd[L.DECODER_PREFIX + "embeddings.word_embeddings.weight"].copy()
  sd[L.DECODER_CLS_PREFIX + "decoder.bias"] = sd[L.DECODER_CLS_PREFIX + "bias"].copy()
  vqa = {}
  for k, v in sd.items():
    if k.startswith(("text_encoder.cls.", "vision_proj", "text_proj", "temp", "itm_head", "bbox_head")):
      continue
    vqa[k.replace("text_encoder.bert.", "text_encoder.")] = v
  return sd, vqa


@pytest.fixture(scope="module")
def converted():
  cfg = vqa_cfg()
  sd, vqa = vqa_state_dict(cfg, seed=7)
  zeros = lambda: {k: np.zeros(s, np.float32) for k, (s, _) in L.param_shapes(cfg).items()}  # noqa: E731
  flat, report = convert_official(vqa, cfg, allow_missing=VQA_MISSING, fresh=zeros)
  model = X2VLM(cfg, rngs=nnx.Rngs(0))
  from x2vlm_jax import params_io

  params_io.into_model(model, assemble.unflatten(cfg, flat))
  ref = X2VLMReference(
    sd,
    vision_heads=cfg.vision.num_heads,
    text_heads=cfg.text.num_heads,
    fusion_start=cfg.text.fusion_start,
    num_layers=cfg.text.num_layers,
  )
  return dict(cfg=cfg, sd=sd, vqa=vqa, flat=flat, report=report, model=model, ref=ref)


# --- names and layout -----------------------------------------------------------------------------


@pytest.mark.parametrize(
  "ours,official",
  [
    ("decoder/embeddings/word/embedding", "text_decoder.bert.embeddings.word_embeddings.weight"),
    ("decoder/embeddings/ln/scale", "text_decoder.bert.embeddings.LayerNorm.weight"),
    ("decoder/layers/1/self_attn/query/kernel", "text_decoder.bert.encoder.layer.1.attention.self.query.weight"),
    ("decoder/layers/0/cross_attn/key/kernel", "text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"),
    ("decoder/layers/5/cross_attn/ln/bias", "text_decoder.bert.encoder.layer.5.crossattention.output.LayerNorm.bias"),
    ("decoder/layers/2/intermediate/bias", "text_decoder.bert.encoder.layer.2.intermediate.dense.bias"),
    ("decoder/layers/2/ln/scale", "text_decoder.bert.encoder.layer.2.output.LayerNorm.weight"),
    ("decoder/mlm/dense/kernel", "text_decoder.cls.predictions.transform.dense.weight"),
    ("decoder/mlm/bias", "text_decoder.cls.predictions.bias"),
  ],
)
def test_decoder_official_names(ours, official):
  assert O.official_name(ours) == official


def test_decoder_layout_agrees_with_optimizer_names_and_model():
  cfg = vqa_cfg()
  entries = [e for e in L.layout(cfg) if e.path.startswith("decoder/")]
  assert {e.path for e in entries} == {p for p in L.param_shapes(cfg) if p.startswith("decoder/")}
  assert all(O.official_name(e.path) == e.key for e in entries)
  # Every decoder layer has cross-attention whose K/V read width H (docs/reference.md §7.3).
  shapes = L.official_shapes(cfg)
  for j in range(cfg.heads.decoder_layers):
    assert shapes[f"text_decoder.bert.encoder.layer.{j}.crossattention.self.key.weight"] == (64, 64)
  assert not O.decays("decoder/mlm/bias") and O.decays("decoder/layers/0/cross_attn/key/kernel")


def test_presets_have_no_decoder_by_default():
  assert get_preset("base").heads.decoder_layers == 0
  assert X2VLM(get_preset("tiny"), rngs=nnx.Rngs(0)).decoder is None
  from x2vlm_jax.models import presets

  with pytest.raises(ValueError, match="decoder_layers"):
    presets.validate(vqa_cfg(decoder_layers=-1))


# --- conversion of a fabricated fine-tuned VQA file ---------------------------------------------------


def test_vqa_checkpoint_converts_every_decoder_tensor(converted):
  cfg, vqa, flat, report = converted["cfg"], converted["vqa"], converted["flat"], converted["report"]
  assert checkpoint_decoder_layers(vqa) == 2
  assert report["text_layout"] == "BertModel"
  assert all(p.startswith(tuple(VQA_MISSING)) for p in report["new_params"])
  n = 0
  for e in L.layout(cfg):
    if e.path.startswith("decoder/"):
      want = vqa[e.key].T if e.kind == "linear" else vqa[e.key]
      np.testing.assert_array_equal(flat[e.path], want, err_msg=e.path)
      n += 1
  # embeddings 3 tables + LN 2; per layer self/cross attention 2 × (4 linears × 2 + LN 2), FFN 4, LN 2;
  # head dense 2 + LN 2 + bias 1.
  assert n == 5 + 2 * (2 * 10 + 4 + 2) + 5
  # The encoder side came from the BertModel-layout keys.
  np.testing.assert_array_equal(
    flat["text/layers/3/cross_attn/value/kernel"],
    vqa["text_encoder.encoder.layer.3.crossattention.self.value.weight"].T,
  )


def test_untied_decoder_head_is_reported(converted):
  vqa = dict(converted["vqa"])
  vqa[L.DECODER_CLS_PREFIX + "decoder.weight"] = vqa[L.DECODER_CLS_PREFIX + "decoder.weight"] + 1.0
  zeros = lambda: {k: np.zeros(s, np.float32) for k, (s, _) in L.param_shapes(converted["cfg"]).items()}  # noqa: E731
  with pytest.raises(ConversionError, match="text_decoder.cls.predictions.decoder.weight differs"):
    convert_official(vqa, converted["cfg"], allow_missing=VQA_MISSING, fresh=zeros)


def test_cli_reads_decoder_depth_from_the_file(tmp_path):
  from x2vlm_jax import params_io

  cfg = vqa_cfg(num_layers=3, decoder_layers=1)  # the tiny preset's own geometry
  _, vqa = vqa_state_dict(cfg, seed=8)
  np.savez(tmp_path / "vqa.npz", **vqa)
  mod = load_tool("convert_checkpoint")  # tools/convert_checkpoint.py's code (x2vlm_jax/cli)
  argv = ["--input", str(tmp_path / "vqa.npz"), "--model", "tiny", "--output", str(tmp_path / "out")]
  for p in VQA_MISSING:
    argv += ["--allow_missing", p]
  assert mod.main(argv) == 0
  loaded, params = params_io.load(str(tmp_path / "out"))
  assert loaded.heads.decoder_layers == 1
  np.testing.assert_array_equal(
    params["decoder"]["layers"][0]["cross_attn"]["query"]["kernel"],
    vqa["text_decoder.bert.encoder.layer.0.crossattention.self.query.weight"].T,
  )


# --- forward parity and the loss ------------------------------------------------------------------


@pytest.fixture(scope="module")
def vqa_batch():
  rng = np.random.default_rng(3)
  q = np.array([[2, 11, 12, 13, 3, 0], [2, 14, 15, 3, 0, 0]], np.int32)
  image = rng.standard_normal((2, 5, 64)).astype(np.float32)
  # Two questions × three answers; answers of different lengths, the last of question 1 is padding.
  ans = np.array(
    [[[2, 40, 3, 0], [2, 41, 42, 3], [2, 43, 3, 0]], [[2, 44, 45, 3], [2, 46, 3, 0], [0, 0, 0, 0]]], np.int32
  )
  weights = np.array([[0.6, 0.3, 0.1], [0.5, 1.0, 0.0]], np.float32)
  return q, (q > 0).astype(np.int32), image, ans, (ans > 0).astype(np.int32), weights


def _t(x):
  return torch.from_numpy(np.asarray(x))


def test_decoder_logits_match_reference(converted, vqa_batch):
  model, ref, cfg = converted["model"], converted["ref"], converted["cfg"]
  q, qm, image, ans, am, _ = vqa_batch
  memory = model.vqa_memory(q, qm, image)
  ref_memory = ref.multi_modal(_t(q).long(), _t(qm), _t(image))
  np.testing.assert_allclose(np.asarray(memory), ref_memory.numpy(), atol=1e-5, rtol=0)
  flat_ans = ans.reshape(6, 4)
  ours = model.answer_logits(flat_ans, am.reshape(6, 4), memory, qm)  # 3 answers share a question
  rep = torch.repeat_interleave(ref_memory, 3, 0)
  want = ref.answer_decoder_logits(
    _t(flat_ans).long(), _t(am.reshape(6, 4)), rep, torch.repeat_interleave(_t(qm), 3, 0), cfg.heads.decoder_layers
  )
  real = am.reshape(6, 4).astype(bool)
  np.testing.assert_allclose(np.asarray(ours)[real], want.numpy()[real], atol=2e-5, rtol=0)


def test_vqa_loss_matches_numpy_formula(converted, vqa_batch):
  """L = Σ_answers w · Σ_t CE(logits_t, ids_{t+1}) / #questions, pads ignored (docs/reference.md §5.2),
  computed from the PyTorch reference's logits of each answer on its own (unpadded)."""
  model, ref, cfg = converted["model"], converted["ref"], converted["cfg"]
  q, qm, image, ans, am, weights = vqa_batch
  memory = model.vqa_memory(q, qm, image)
  got = float(model.vqa_loss(ans, am, weights, memory, qm))
  ref_memory = ref.multi_modal(_t(q).long(), _t(qm), _t(image))
  total = 0.0
  for b in range(2):
    for a in range(3):
      n = int(am[b, a].sum())
      if n == 0:
        continue
      ids = ans[b, a, :n][None]
      logits = (
        ref.answer_decoder_logits(
          _t(ids).long(), torch.ones(1, n), ref_memory[b : b + 1], _t(qm[b : b + 1]), cfg.heads.decoder_layers
        )[0]
        .double()
        .numpy()
      )
      logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
      )
      nll = -sum(logp[t, ids[0, t + 1]] for t in range(n - 1))
      total += weights[b, a] * nll
  assert got == pytest.approx(total / 2, rel=1e-5)


def test_memory_is_shared_not_copied_and_misfits_raise(converted, vqa_batch):
  import jax
  import jax.numpy as jnp

  model = converted["model"]
  q, qm, image, ans, am, _ = vqa_batch
  memory = model.vqa_memory(q, qm, image)
  flat, fm = ans.reshape(6, 4), am.reshape(6, 4)
  folded = model.answer_logits(flat, fm, memory, qm)
  copied = model.answer_logits(flat, fm, jnp.repeat(memory, 3, 0), jnp.repeat(qm, 3, 0))
  np.testing.assert_allclose(np.asarray(folded), np.asarray(copied), atol=1e-5, rtol=0)
  # The folded program never builds a [6, Lq, H] memory.
  text = jax.jit(lambda m: model.answer_logits(flat, fm, m, qm)).lower(memory).as_text()
  assert "6x6x64" not in text
  text = (
    jax.jit(lambda m: model.answer_logits(flat, fm, jnp.repeat(m, 3, 0), jnp.repeat(qm, 3, 0))).lower(memory).as_text()
  )
  assert "6x6x64" in text  # the check above can see a copy
  with pytest.raises(ValueError, match="cannot share"):
    model.answer_logits(flat[:5], fm[:5], memory, qm)


# --- the official decoder initialisation ------------------------------------------------------------


def test_decoder_source_layers_rule():
  assert decoder_source_layers(18, 12, 6) == [12, 13, 14, 15, 16, 17]
  assert decoder_source_layers(18, 12, 3) == [13, 15, 17]  # the odd fusion layers (docs/reference.md §5.2)
  with pytest.raises(ValueError, match="no official initialisation"):
    decoder_source_layers(18, 12, 4)


@pytest.mark.parametrize("num_layers,decoder_layers,sources", [(4, 2, {0: 2, 1: 3}), (6, 2, {0: 3, 1: 5})])
def test_decoder_from_fusion_copies_layer_by_layer(num_layers, decoder_layers, sources):
  cfg = vqa_cfg(num_layers=num_layers, decoder_layers=decoder_layers)
  flat = assemble.fresh_flat(cfg, seed=1)
  init = decoder_from_fusion(flat, cfg)
  decoder_paths = {p for p in flat if p.startswith("decoder/")}
  assert set(init) == decoder_paths  # same vision width and H: everything, cross K/V included
  for path in decoder_paths:
    parts = path.split("/")
    if parts[1] == "layers":
      src = "/".join(["text", "layers", str(sources[int(parts[2])])] + parts[3:])
    else:
      src = "text/" + "/".join(parts[1:])
    np.testing.assert_array_equal(init[path], flat[src], err_msg=path)
  # Distinct source layers really differ, so a wrong index would be caught.
  assert not np.array_equal(flat["text/layers/2/self_attn/query/kernel"], flat["text/layers/3/self_attn/query/kernel"])


def test_decoder_from_fusion_keeps_fresh_cross_kv_when_widths_differ():
  cfg = vqa_cfg(decoder_layers=2)
  cfg.vision.width = 96
  flat = assemble.fresh_flat(cfg, seed=2)
  init = decoder_from_fusion(flat, cfg)
  missing = {p for p in flat if p.startswith("decoder/")} - set(init)
  assert missing == {
    f"decoder/layers/{j}/cross_attn/{n}/{leaf}"
    for j in range(2)
    for n in ("key", "value")
    for leaf in ("kernel", "bias")
  }
  np.testing.assert_array_equal(
    init["decoder/layers/1/cross_attn/query/kernel"], flat["text/layers/3/cross_attn/query/kernel"]
  )
