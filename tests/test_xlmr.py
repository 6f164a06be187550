"""The multilingual text side (docs/reference.md §1.8): XLM-R text encoder + cross encoder + untied MLM head.

Parity with HF transformers' XLMRobertaModel / XLMRobertaForMaskedLM (random tiny weights, float32,
1e-5), the CCLM official key layout round trip, the para-text losses against a PyTorch reference of
the official `CrossViewLM.forward_para_text` (tests/reference/cclm_torch.py), and the optimizer's
official names of the new parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from x2vlm_jax import params_io
from x2vlm_jax.convert import assemble
from x2vlm_jax.convert import layout as L
from x2vlm_jax.convert.x2vlm import ConversionError, convert_official, to_official
from x2vlm_jax.models import get_preset
from x2vlm_jax.models.xlmr import roberta_position_ids

ATOL = 1e-5


def cclm_cfg(**text):
  cfg = get_preset("cclm_tiny")
  # Eval-mode comparisons: no dropout anywhere (the para-text losses need an rng for the negatives).
  cfg.text.update(hidden_dropout=0.0, attention_dropout=0.0, **text)
  cfg.cross.update(hidden_dropout=0.0, attention_dropout=0.0)
  cfg.vision.drop_path_rate = 0.0
  return cfg


def hf_config(cfg):
  from transformers import XLMRobertaConfig

  t = cfg.text
  return XLMRobertaConfig(
    vocab_size=t.vocab_size,
    hidden_size=t.hidden,
    num_hidden_layers=t.num_layers,
    num_attention_heads=t.num_heads,
    intermediate_size=t.ffn_dim,
    max_position_embeddings=t.max_positions,
    type_vocab_size=1,
    layer_norm_eps=t.layer_norm_eps,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    attn_implementation="eager",
  )


def random_cclm_state_dict(cfg, seed):
  """A random CrossViewLM checkpoint in the official layout, with the tied decoder.bias and the buffer."""
  rng = np.random.default_rng(seed)
  sd = {}
  for key, shape in L.official_shapes(cfg).items():
    if key.endswith(("LayerNorm.weight", "norm1.weight", "norm2.weight", "fc_norm.weight", ".1.weight")):
      sd[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    elif key == "temp":
      sd[key] = np.asarray(0.07, np.float32)
    elif key.endswith(("gamma_1", "gamma_2")):
      sd[key] = (0.5 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    else:
      sd[key] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
  sd[L.XLMR_CLS_PREFIX + "decoder.bias"] = sd[L.XLMR_CLS_PREFIX + "bias"].copy()
  sd[L.XLMR_PREFIX + "embeddings.position_ids"] = np.arange(cfg.text.max_positions)[None]
  return sd


def model_from_sd(cfg, sd):
  flat, _ = convert_official(sd, cfg)
  return params_io.into_model(params_io.abstract_model(cfg), assemble.unflatten(cfg, flat))


def xlmr_batch(rng, cfg, b, length, min_len=3):
  """<s> pieces </s> + pad (id 1), distinct lengths; one row uses every position of the table."""
  lengths = np.linspace(min_len, length, b).astype(int)
  ids = rng.integers(4, cfg.text.vocab_size - 1, (b, length)).astype(np.int32)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = 0
  ids[np.arange(b), lengths - 1] = 2
  return np.where(mask > 0, ids, 1).astype(np.int32), mask


# --- HF parity -------------------------------------------------------------------------------------


def test_roberta_position_ids_match_hf():
  from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaEmbeddings

  ids = torch.tensor([[0, 5, 6, 2, 1, 1], [0, 7, 1, 8, 2, 1]])  # a pad id in the middle keeps its slot
  ref = XLMRobertaEmbeddings.create_position_ids_from_input_ids(ids, padding_idx=1)
  np.testing.assert_array_equal(np.asarray(roberta_position_ids(jnp.asarray(ids.numpy()), 1)), ref.numpy())


@pytest.fixture(scope="module")
def hf_parity():
  from test_parity_hf import randomize_
  from transformers import XLMRobertaForMaskedLM

  # 66 positions: a 64-token row reaches the last row of the position table (64 + padding_idx + 1).
  cfg = cclm_cfg()
  hf = randomize_(XLMRobertaForMaskedLM(hf_config(cfg)), seed=5)
  sd = random_cclm_state_dict(cfg, seed=6)  # vision, cross encoder, heads: random
  head = {
    "lm_head.dense.weight": "transform.dense.weight",
    "lm_head.dense.bias": "transform.dense.bias",
    "lm_head.layer_norm.weight": "transform.LayerNorm.weight",
    "lm_head.layer_norm.bias": "transform.LayerNorm.bias",
    "lm_head.decoder.weight": "decoder.weight",
    "lm_head.bias": "bias",
    "lm_head.decoder.bias": "decoder.bias",
  }
  for k, v in hf.state_dict().items():
    if k.startswith("roberta."):
      sd[L.XLMR_PREFIX + k[len("roberta.") :]] = v.numpy()
    elif k in head:
      sd[L.XLMR_CLS_PREFIX + head[k]] = v.numpy()
  model = model_from_sd(cfg, sd)
  rng = np.random.default_rng(0)
  ids, mask = xlmr_batch(rng, cfg, 3, 64)
  return cfg, hf, model, ids, mask


def test_text_encoder_matches_hf_xlm_roberta_model(hf_parity):
  _, hf, model, ids, mask = hf_parity
  with torch.no_grad():
    ref = hf.roberta(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask)).last_hidden_state
  ours = model.text.text(jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=0, atol=ATOL)
  # The model-level API (encode_text) is the same computation + text_proj.
  embeds, _ = model.encode_text(jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(embeds), ref.numpy(), rtol=0, atol=ATOL)


def test_mlm_head_matches_hf_xlm_roberta_for_masked_lm(hf_parity):
  _, hf, model, ids, mask = hf_parity
  with torch.no_grad():
    ref = hf(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask)).logits
  hidden = model.text.text(jnp.asarray(ids), jnp.asarray(mask))
  ours = model.text.mlm_logits(hidden)
  np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=0, atol=ATOL)
  # Without vision, multi_modal is the text encoder alone (XLM-R MLM).
  np.testing.assert_allclose(
    np.asarray(model.text.mlm_logits(model.text.multi_modal(jnp.asarray(ids), jnp.asarray(mask)))),
    ref.numpy(),
    rtol=0,
    atol=ATOL,
  )


# --- official layout -------------------------------------------------------------------------------


def test_cclm_layout_round_trip():
  cfg = cclm_cfg()
  sd = random_cclm_state_dict(cfg, seed=1)
  flat, report = convert_official(sd, cfg)
  assert report["text_layout"] == "CrossViewLM" and not report["new_params"]
  assert set(flat) == set(params_io.param_shapes(cfg))
  back = to_official(flat, cfg)
  assert set(back) == set(sd) - {L.XLMR_PREFIX + "embeddings.position_ids"}
  for k, v in back.items():
    np.testing.assert_array_equal(v, sd[k], err_msg=k)
  # The keys the official CrossViewLM names (docs/reference.md §7.2), a few by hand.
  for k in (
    "text_encoder.embeddings.token_type_embeddings.weight",
    "text_encoder.encoder.layer.1.attention.self.query.weight",
    "cross_encoder.encoder.layer.0.crossattention.self.key.weight",
    "mlm_head.predictions.decoder.weight",
  ):
    assert k in sd
  assert sd["text_encoder.embeddings.token_type_embeddings.weight"].shape == (1, cfg.text.hidden)
  assert not any(k.startswith("text_encoder.encoder.") and "crossattention" in k for k in sd)
  assert not any(k.startswith("cross_encoder.embeddings") for k in sd)


def test_cclm_layout_rejects_an_untied_decoder_bias_and_english_files():
  cfg = cclm_cfg()
  sd = random_cclm_state_dict(cfg, seed=2)
  sd[L.XLMR_CLS_PREFIX + "decoder.bias"] = sd[L.XLMR_CLS_PREFIX + "bias"] + 1.0
  with pytest.raises(ConversionError, match="decoder.bias differs"):
    convert_official(sd, cfg)
  from convert_helpers import random_official_state_dict

  with pytest.raises(ConversionError, match="missing keys"):
    convert_official(random_official_state_dict(get_preset("tiny")), cfg)


def test_english_layout_round_trip_via_to_official(tiny_cfg):
  from convert_helpers import random_official_state_dict

  sd = random_official_state_dict(tiny_cfg, seed=3)
  flat, _ = convert_official(sd, tiny_cfg)
  back = to_official(flat, tiny_cfg)
  for k, v in back.items():
    np.testing.assert_array_equal(v, sd[k], err_msg=k)


# --- the para-text losses against the official forward_para_text ------------------------------------


@pytest.fixture(scope="module")
def para_setup():
  from reference.cclm_torch import CCLMReference

  cfg = cclm_cfg()
  cfg.cross.num_layers = 2  # two cross layers: a layer-indexing mistake would show
  sd = random_cclm_state_dict(cfg, seed=7)
  sd["temp"] = np.asarray(0.3, np.float32)  # ITC logits of order 1: the loss is not saturated
  model = model_from_sd(cfg, sd)
  ref = CCLMReference(sd, hf_config(cfg), cross_heads=cfg.cross.num_heads, num_cross=cfg.cross.num_layers)
  return cfg, sd, model, ref


def para_batch(cfg, b=4, length=10, m=3, seed=0):
  rng = np.random.default_rng(seed)
  text, text_mask = xlmr_batch(rng, cfg, b, length, min_len=6)
  para, para_mask = xlmr_batch(rng, cfg, b, length, min_len=4)
  para, para_mask = para[::-1].copy(), para_mask[::-1].copy()  # other lengths than sentence 1
  masked = text.copy()
  masked_pos = np.zeros((b, m), np.int32)
  labels = np.full((b, m), -100, np.int32)
  for i in range(b):
    k = 1 + i % m  # different numbers of masks, −100 padding slots
    pos = np.sort(rng.choice(np.arange(1, int(text_mask[i].sum()) - 1), size=k, replace=False))
    masked_pos[i, :k] = pos
    labels[i, :k] = text[i, pos]
    masked[i, pos] = cfg.text.vocab_size - 1
  return dict(
    text_ids=text,
    text_mask=text_mask,
    para_ids=para,
    para_mask=para_mask,
    text_ids_masked=masked,
    masked_pos=masked_pos,
    mlm_labels=labels,
    valid=np.ones((b,), np.float32),
  )


def test_para_text_losses_match_official_forward_para_text(para_setup):
  from x2vlm_jax.objectives import itm, para_text_losses

  cfg, _, model, ref = para_setup
  batch = para_batch(cfg)
  jb = {k: jnp.asarray(v) for k, v in batch.items()}
  rng = jax.random.key(3)
  ours = para_text_losses(model, jb, rng, group_size=4)

  # The negatives our sampler drew (para_text_losses → contrastive_and_matching → _itm), fed to the reference.
  _, t1_feat = model.encode_text(jb["text_ids"], jb["text_mask"])
  _, t2_feat = model.encode_text(jb["para_ids"], jb["para_mask"])
  r_sample = jax.random.split(jax.random.split(rng, 4)[2])[0]
  neg_1, neg_2, ok_1, ok_2 = itm.sample_itm_negatives(r_sample, t1_feat, t2_feat, model.temp[...], jb["valid"], 4)
  assert np.all(np.asarray(ok_1)) and np.all(np.asarray(ok_2))
  assert not np.any(np.asarray(neg_1) == np.arange(4)) and not np.any(np.asarray(neg_2) == np.arange(4))

  t = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
  want = ref.forward_para_text(
    t["text_ids"].long(),
    t["text_mask"],
    t["text_ids_masked"].long(),
    t["masked_pos"].long(),
    t["mlm_labels"].long(),
    t["para_ids"].long(),
    t["para_mask"],
    [int(i) for i in np.asarray(neg_1)],
    [int(i) for i in np.asarray(neg_2)],
  )
  for ours_key, ref_key in (("ttc", "loss_ttc"), ("ttm", "loss_ttm"), ("mlm", "loss_mlm")):
    np.testing.assert_allclose(float(ours[ours_key]), float(want[ref_key]), rtol=0, atol=ATOL, err_msg=ours_key)
  # Distinct values: a swapped role (sentence 2 as memory) or an unconditioned MLM would differ.
  assert len({round(float(ours[k]), 4) for k in ("ttc", "ttm", "mlm")}) == 3


def test_para_text_mlm_is_conditioned_on_the_translation(para_setup):
  """MLM on sentence 1 must read sentence 2 through the cross encoder: the reference with another
  translation gives another loss, and ours follows it."""
  from x2vlm_jax.objectives import para_text_losses

  cfg, _, model, ref = para_setup
  batch = para_batch(cfg)
  other = dict(batch, para_ids=batch["para_ids"][::-1].copy(), para_mask=batch["para_mask"][::-1].copy())
  rng = jax.random.key(0)
  a = para_text_losses(model, {k: jnp.asarray(v) for k, v in batch.items()}, rng, group_size=4)["mlm"]
  b = para_text_losses(model, {k: jnp.asarray(v) for k, v in other.items()}, rng, group_size=4)["mlm"]
  t = {k: torch.from_numpy(np.asarray(v)) for k, v in other.items()}
  want = ref.get_mlm_loss(
    t["text_ids_masked"].long(),
    t["text_mask"],
    ref.get_text_embeds(t["para_ids"].long(), t["para_mask"]),
    t["para_mask"],
    t["masked_pos"].long(),
    t["mlm_labels"].long(),
  )
  np.testing.assert_allclose(float(b), float(want), rtol=0, atol=ATOL)
  assert abs(float(a) - float(b)) > 1e-4


def test_cross_encoder_fusion_and_itm_match_reference(para_setup):
  """The vision path of the multilingual model: cross encoder over region-masked image tokens, ITM head."""
  cfg, _, model, ref = para_setup
  rng = np.random.default_rng(1)
  ids, mask = xlmr_batch(rng, cfg, 2, 7)
  vision = rng.standard_normal((2, 5, cfg.vision.width)).astype(np.float32)
  vmask = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1]], np.int32)
  text = model.text.text(jnp.asarray(ids), jnp.asarray(mask))
  ours = model.fuse(jnp.asarray(vision), jnp.asarray(vmask), text, jnp.asarray(mask))
  t_text = ref.get_text_embeds(torch.from_numpy(ids).long(), torch.from_numpy(mask))
  want = ref.get_cross_embeds(torch.from_numpy(vision), torch.from_numpy(vmask), t_text, torch.from_numpy(mask))
  np.testing.assert_allclose(np.asarray(ours), want.numpy(), rtol=0, atol=ATOL)
  logits = model.itm_logits(jnp.asarray(vision), jnp.asarray(vmask), text, jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(logits), ref.cross.mlp(want[:, 0], "itm_head").numpy(), rtol=0, atol=ATOL)


# --- optimizer names -------------------------------------------------------------------------------


def test_every_cclm_param_has_its_official_name_and_group():
  from x2vlm_jax.training import optimizer

  cfg = cclm_cfg()
  sd = random_cclm_state_dict(cfg, seed=0)
  optim = {"lr": 4e-5, "vision_lr": 2e-5, "text_lr": 8e-5, "cross_lr": 4e-5, "lr_mult": 2.0}
  groups = {}
  for entry in L.layout(cfg):
    name = optimizer.official_name(entry.path)
    # Our XLM-R layers carry the English `bert.` infix in their official name; everything else is verbatim.
    assert name.replace("text_encoder.bert.", "text_encoder.") == entry.key, entry
    assert entry.key in sd
    groups[entry.path] = optimizer.param_group(entry.path, optim, frozenset())
  assert groups["text/cross/0/cross_attn/key/kernel"] == "cross"
  assert groups["text/layers/0/self_attn/query/kernel"] == "text"
  assert groups["text/embeddings/word/embedding"] == "text"
  assert groups["text/lm_head/decoder/kernel"] == "base"  # official mlm_head.*: not text_encoder.*
  assert groups["vision/cls_token"] == "vision"


# --- the multilingual answer decoder (xGQA, official XVLMPlusForVQA) ---------------------------------


def test_multilingual_answer_decoder_matches_reference_and_starts_from_the_cross_encoder():
  from reference.x2vlm_torch import X2VLMReference

  from x2vlm_jax.models.decoder import decoder_from_fusion

  cfg = cclm_cfg()
  cfg.heads.decoder_layers = cfg.cross.num_layers
  sd = random_cclm_state_dict(cfg, seed=9)
  # BERT-layout embeddings (512 positions from 0, 2 token types) over XLM-R's vocabulary.
  assert sd["text_decoder.bert.embeddings.position_embeddings.weight"].shape == (512, cfg.text.hidden)
  assert sd["text_decoder.bert.embeddings.word_embeddings.weight"].shape == (cfg.text.vocab_size, cfg.text.hidden)
  model = model_from_sd(cfg, sd)
  rng = np.random.default_rng(2)
  ids, mask = xlmr_batch(rng, cfg, 3, 6)
  memory = rng.standard_normal((3, 5, cfg.text.hidden)).astype(np.float32)
  memory_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.int32)
  ours = model.answer_logits(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(memory), jnp.asarray(memory_mask))
  ref = X2VLMReference(
    sd, vision_heads=1, text_heads=cfg.cross.num_heads, fusion_start=0, num_layers=cfg.heads.decoder_layers
  ).answer_decoder_logits(
    torch.from_numpy(ids).long(),
    torch.from_numpy(mask),
    torch.from_numpy(memory),
    torch.from_numpy(memory_mask),
    cfg.heads.decoder_layers,
  )
  np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=0, atol=ATOL)

  flat, _ = convert_official(sd, cfg)
  derived = decoder_from_fusion(flat, cfg)
  assert derived and all(p.startswith("decoder/layers/") for p in derived)  # no embeddings, no head
  np.testing.assert_array_equal(
    derived["decoder/layers/0/cross_attn/key/kernel"], flat["text/cross/0/cross_attn/key/kernel"]
  )
  assert len(derived) == len([p for p in flat if p.startswith("text/cross/")])
  cfg.heads.decoder_layers = cfg.cross.num_layers + 1
  with pytest.raises(ValueError, match="cross-encoder layers"):
    decoder_from_fusion(flat, cfg)
