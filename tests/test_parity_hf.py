"""Parity against HF transformers' BERT and BEiT (random weights), with weights translated into the
official key layout and passed through our converter; plus real MiniLM weights through the HF-BERT
init path. float32, CPU, eval mode, 1e-5 absolute."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from convert_helpers import random_beit_checkpoint

from x2vlm_jax import params_io
from x2vlm_jax.convert import assemble, init_weights
from x2vlm_jax.convert.x2vlm import convert_official
from x2vlm_jax.models import get_preset, presets
from x2vlm_jax.models.vision import patchify, relative_position_index

ATOL = 1e-5


def randomize_(module, seed):
  """Random values for EVERY parameter (HF init leaves LayerNorm 1/0 and biases 0, which would hide
  mistakes); tied parameters are listed once by named_parameters, so ties survive."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name.endswith(("LayerNorm.weight", "layernorm_before.weight", "layernorm_after.weight", "layernorm.weight")):
        p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
      elif "lambda" in name:
        p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=g))
      elif "relative_position_bias_table" in name:
        p.copy_(torch.randn(p.shape, generator=g))
      else:
        p.copy_(0.05 * torch.randn(p.shape, generator=g))
  return module.eval()


def model_from_flat(cfg, flat):
  # An abstract model filled with the converted values: no (slow, eager) random init needed.
  return params_io.into_model(params_io.abstract_model(cfg), assemble.unflatten(cfg, flat))


def zeros_fresh(cfg):
  """`fresh` for tests that never look at the freshly initialised parts."""
  return lambda: {k: np.zeros(shape, np.float32) for k, (shape, _) in params_io.param_shapes(cfg).items()}


def non_prefixes(cfg, keep):
  """Every top-level part of our model except `keep`: allowed missing when a test feeds only one tower."""
  parts = ["vision", "text/embeddings", "text/mlm", "vision_proj", "text_proj", "temp", "itm_head", "bbox_head"]
  parts += [f"text/layers/{i}" for i in range(cfg.text.num_layers)]
  return [p for p in parts if p != keep and not p.startswith(keep + "/")]


# --- BERT -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_setup(tiny_cfg):
  from transformers import BertConfig, BertForMaskedLM

  t = tiny_cfg.text
  hf_cfg = BertConfig(
    hidden_size=t.hidden,
    num_attention_heads=t.num_heads,
    intermediate_size=t.ffn_dim,
    vocab_size=t.vocab_size,
    max_position_embeddings=t.max_positions,
    num_hidden_layers=t.num_layers,
    layer_norm_eps=t.layer_norm_eps,
    attn_implementation="eager",
  )
  hf = randomize_(BertForMaskedLM(hf_cfg), seed=3)
  # Official layout: BertForMaskedLM lives under `text_encoder.` (docs/reference.md §7.2), tied tensors stored twice.
  sd = {"text_encoder." + k: v.numpy() for k, v in hf.state_dict().items()}
  allow = [p for p in non_prefixes(tiny_cfg, "text") if p != "text/mlm"] + [
    f"text/layers/{i}/cross_attn" for i in range(t.fusion_start, t.num_layers)
  ]
  flat, report = convert_official(sd, tiny_cfg, allow_missing=allow, fresh=zeros_fresh(tiny_cfg))
  assert not any(p.startswith(("text/embeddings", "text/mlm")) for p in report["new_params"])
  rng = np.random.default_rng(0)
  ids = rng.integers(1, t.vocab_size, (3, 9))
  mask = np.ones((3, 9), np.int64)
  mask[1, 6:] = 0
  mask[2, 3:] = 0
  with torch.no_grad():
    out = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True)
  return dict(model=model_from_flat(tiny_cfg, flat), out=out, ids=ids.astype(np.int32), mask=mask.astype(np.int32))


def _valid(x, mask):
  """Padded positions' hidden states are not defined by either side's contract: compare real tokens."""
  return np.asarray(x)[np.asarray(mask).astype(bool)]


def test_bert_text_mode_matches_hf(bert_setup, tiny_cfg):
  s = bert_setup
  ours = s["model"].text.text(jnp.asarray(s["ids"]), jnp.asarray(s["mask"]))  # layers [0, fusion_start)
  theirs = s["out"].hidden_states[tiny_cfg.text.fusion_start].numpy()
  np.testing.assert_allclose(_valid(ours, s["mask"]), _valid(theirs, s["mask"]), rtol=0, atol=ATOL)


def test_bert_all_layers_without_vision_match_hf(bert_setup):
  s = bert_setup
  ours = s["model"].text.multi_modal(jnp.asarray(s["ids"]), jnp.asarray(s["mask"]))  # no vision: no cross-attn
  np.testing.assert_allclose(
    _valid(ours, s["mask"]), _valid(s["out"].hidden_states[-1].numpy(), s["mask"]), rtol=0, atol=ATOL
  )


def test_mlm_head_matches_hf(bert_setup):
  s = bert_setup
  hidden = s["model"].text.multi_modal(jnp.asarray(s["ids"]), jnp.asarray(s["mask"]))
  ours = s["model"].text.mlm_logits(hidden)
  np.testing.assert_allclose(_valid(ours, s["mask"]), _valid(s["out"].logits.numpy(), s["mask"]), rtol=0, atol=ATOL)


# --- BEiT -----------------------------------------------------------------------------------------


def hf_beit_to_beit_checkpoint(hf_sd):
  """HF BeitModel keys → the BEiT-v2 release layout the official loader reads (docs/reference.md §7.4)."""
  out = {
    "cls_token": hf_sd["embeddings.cls_token"],
    "patch_embed.proj.weight": hf_sd["embeddings.patch_embeddings.projection.weight"],
    "patch_embed.proj.bias": hf_sd["embeddings.patch_embeddings.projection.bias"],
    # With mean pooling BEiT's `fc_norm` is HF's pooler LayerNorm.
    "fc_norm.weight": hf_sd["pooler.layernorm.weight"],
    "fc_norm.bias": hf_sd["pooler.layernorm.bias"],
  }
  depth = len({k.split(".")[1] for k in hf_sd if k.startswith("layers.")})
  for i in range(depth):
    h, b = f"layers.{i}.", f"blocks.{i}."
    a = h + "attention."
    # One bias-free qkv with rows [q; k; v]; HF's k_proj has no bias, i.e. BEiT's implicit zero k bias.
    out[b + "attn.qkv.weight"] = np.concatenate(
      [hf_sd[a + "q_proj.weight"], hf_sd[a + "k_proj.weight"], hf_sd[a + "v_proj.weight"]], axis=0
    )
    out[b + "attn.q_bias"] = hf_sd[a + "q_proj.bias"]
    out[b + "attn.v_bias"] = hf_sd[a + "v_proj.bias"]
    out[b + "attn.proj.weight"] = hf_sd[a + "o_proj.weight"]
    out[b + "attn.proj.bias"] = hf_sd[a + "o_proj.bias"]
    out[b + "attn.relative_position_bias_table"] = hf_sd[h + "relative_position_bias.relative_position_bias_table"]
    out[b + "gamma_1"], out[b + "gamma_2"] = hf_sd[h + "lambda_1"], hf_sd[h + "lambda_2"]
    for ours, theirs in (
      ("norm1", "layernorm_before"),
      ("norm2", "layernorm_after"),
      ("mlp.fc1", "mlp.fc1"),
      ("mlp.fc2", "mlp.fc2"),
    ):
      out[f"{b}{ours}.weight"], out[f"{b}{ours}.bias"] = hf_sd[f"{h}{theirs}.weight"], hf_sd[f"{h}{theirs}.bias"]
  out["head.weight"] = np.zeros((5, hf_sd["embeddings.cls_token"].shape[-1]), np.float32)  # dropped by the loader
  out["head.bias"] = np.zeros((5,), np.float32)
  return out


@pytest.fixture(scope="module")
def beit_setup():
  from transformers import BeitConfig, BeitModel

  cfg = get_preset("tiny", image_res=48)  # 3×3 grid
  v = cfg.vision
  hf_cfg = BeitConfig(
    use_relative_position_bias=True,
    use_shared_relative_position_bias=False,
    use_absolute_position_embeddings=False,
    use_mean_pooling=True,
    layer_scale_init_value=0.1,
    image_size=cfg.image_res,
    patch_size=cfg.patch_size,
    hidden_size=v.width,
    num_hidden_layers=v.depth,
    num_attention_heads=v.num_heads,
    intermediate_size=v.mlp_dim,
    layer_norm_eps=v.layer_norm_eps,
    hidden_act="gelu",
    attn_implementation="eager",
  )
  hf = randomize_(BeitModel(hf_cfg), seed=4)
  hf_sd = {k: t.numpy() for k, t in hf.state_dict().items()}
  vision_sd = init_weights.beit_to_official(hf_beit_to_beit_checkpoint(hf_sd), v.depth)
  flat, _ = convert_official(vision_sd, cfg, allow_missing=non_prefixes(cfg, "vision"), fresh=zeros_fresh(cfg))
  images = np.random.default_rng(1).standard_normal((2, cfg.image_res, cfg.image_res, 3)).astype(np.float32)
  with torch.no_grad():
    # HF wants NCHW, we take NHWC.
    out = hf(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2), output_hidden_states=True)
  return dict(cfg=cfg, model=model_from_flat(cfg, flat), hf=hf, out=out, images=images)


def our_block_states(model, images):
  """Our tower's per-block hidden states (before fc_norm/pooling), the way VisionTower runs them."""
  vis = model.vision
  x = vis.patch_embed(patchify(jnp.asarray(images), vis.patch_size))
  x = jnp.concatenate([jnp.broadcast_to(vis.cls_token[...], (x.shape[0], 1, x.shape[-1])), x], axis=1)
  states = [x]
  for block in vis.blocks:
    x = block(x)
    states.append(x)
  return states


@pytest.mark.parametrize("grid", [2, 3, 14, 24])
def test_relative_position_index_layout_equals_hf(grid):
  from transformers.models.beit.modeling_beit import BeitRelativePositionBias

  hf_index = BeitRelativePositionBias.generate_relative_position_index((grid, grid)).numpy()
  np.testing.assert_array_equal(relative_position_index(grid), hf_index)


def test_beit_block_states_match_hf(beit_setup):
  s = beit_setup
  ours = our_block_states(s["model"], s["images"])
  assert len(ours) == len(s["out"].hidden_states)
  for i, (a, b) in enumerate(zip(ours, s["out"].hidden_states)):
    np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=0, atol=ATOL, err_msg=f"hidden state {i}")
  np.testing.assert_allclose(np.asarray(ours[-1]), s["out"].last_hidden_state.numpy(), rtol=0, atol=ATOL)


def test_beit_official_pooling(beit_setup):
  """Slot 0 = mean of fc_norm-ed patches (not HF's fc_norm of the mean); slots 1.. = fc_norm(patches)."""
  s = beit_setup
  tokens = np.asarray(s["model"].vision(jnp.asarray(s["images"])))
  last = s["out"].last_hidden_state[:, 1:]
  ln = s["hf"].pooler.layernorm
  normed = ln(last).detach().numpy()
  np.testing.assert_allclose(tokens[:, 1:], normed, rtol=0, atol=ATOL)
  np.testing.assert_allclose(tokens[:, 0], normed.mean(1), rtol=0, atol=ATOL)
  # and it is NOT HF's pooler output (guards against silently adopting HF's convention)
  assert np.abs(tokens[:, 0] - s["out"].pooler_output.numpy()).max() > 1e-3


# --- real weights: MiniLM (6-layer BERT, hidden 384) through the HF-BERT init path ----------------


def minilm_cfg(num_layers, fusion_start):
  cfg = get_preset("tiny")
  cfg.text.update(
    hidden=384,
    num_heads=12,
    ffn_dim=1536,
    num_layers=num_layers,
    fusion_start=fusion_start,
    vocab_size=30522,
    max_positions=512,
  )
  presets.validate(cfg)
  return cfg


@pytest.fixture(scope="module")
def minilm(minilm_dir):
  from transformers import BertModel, BertTokenizer

  from x2vlm_jax.convert.state_dict import read_state_dict

  tok = BertTokenizer.from_pretrained(minilm_dir)
  hf = BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
  sentences = [
    "a man riding a horse on the beach.",
    "two dogs play with a red frisbee in the park",
    "X²-VLM aligns images and texts at multiple granularities.",
  ]
  enc = tok(sentences, padding=True, return_tensors="np")
  with torch.no_grad():
    out = hf(
      input_ids=torch.from_numpy(enc["input_ids"]),
      attention_mask=torch.from_numpy(enc["attention_mask"]),
      output_hidden_states=True,
    )
  return dict(
    bert=read_state_dict(minilm_dir),
    out=out,
    ids=enc["input_ids"].astype(np.int32),
    mask=enc["attention_mask"].astype(np.int32),
  )


def test_minilm_text_stack_matches_transformers(minilm):
  """6 text layers + 2 fusion layers: the text part must equal BertModel; fusion layers 6,7 = BERT 4,5."""
  cfg = minilm_cfg(num_layers=8, fusion_start=6)
  flat, report = init_weights.init_from_pretrained(random_beit_checkpoint(cfg), minilm["bert"], cfg, zeros_fresh(cfg))
  assert report["layer_map"] == {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 4, "7": 5}
  assert "pooler.dense.weight" in report["ignored_bert_keys"]
  # MiniLM is a BertModel: no MLM head in the file, so it is new like the cross-attention and the heads.
  assert any(p.startswith("text/mlm/") for p in report["new_params"])
  assert any(p.startswith("text/layers/6/cross_attn/") for p in report["new_params"])
  assert not any(p.startswith(("vision/", "text/embeddings", "text/layers/0/")) for p in report["new_params"])
  for name in ("self_attn/query/kernel", "intermediate/kernel", "ln/scale"):
    np.testing.assert_array_equal(flat[f"text/layers/7/{name}"], flat[f"text/layers/5/{name}"])
  model = model_from_flat(cfg, flat)
  ours = model.text.text(jnp.asarray(minilm["ids"]), jnp.asarray(minilm["mask"]))
  theirs = minilm["out"].last_hidden_state.numpy()
  np.testing.assert_allclose(_valid(ours, minilm["mask"]), _valid(theirs, minilm["mask"]), rtol=0, atol=ATOL)
