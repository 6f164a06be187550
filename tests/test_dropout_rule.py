"""The text stack's dropout / drop-path rule against the official xbert.py.

BertEncoder.__init__: with text_drop_path_rate > 0 it sets config.hidden_dropout_prob = 0 (every layer
built after that has no hidden dropout; attention-probability dropout is untouched) and gives layer i
the drop-path rate torch.linspace(0, text_rate, fusion_layer) ++ torch.linspace(0, cross_rate,
num_layers − fusion_layer). BertModel builds BertEmbeddings BEFORE the encoder, so the embedding
dropout keeps 0.1 (refcoco_grounding_large.yaml: text/cross drop path 0.1).
"""

import numpy as np
import pytest
from flax import nnx

from x2vlm_jax.models import X2VLM, get_preset


def _text(drop_path, cross=None):
  cfg = get_preset("tiny")
  cfg.text.drop_path_rate = drop_path
  cfg.text.cross_drop_path_rate = drop_path if cross is None else cross
  return cfg, X2VLM(cfg, rngs=nnx.Rngs(0)).text


def test_drop_path_zeroes_layer_dropout_but_not_the_embeddings():
  cfg, text = _text(0.1)
  assert text.embeddings.hidden_dropout == pytest.approx(0.1)
  for layer in text.layers:
    assert layer.hidden_dropout == 0.0 and layer.self_attn.hidden_dropout == 0.0
    assert layer.self_attn.attention_dropout == pytest.approx(0.1)
  n, f = cfg.text.num_layers, cfg.text.fusion_start
  want = list(np.linspace(0, 0.1, f)) + list(np.linspace(0, 0.1, n - f))  # = torch.linspace
  assert [layer.drop_path for layer in text.layers] == pytest.approx(want)


def test_without_drop_path_every_dropout_is_kept():
  _, text = _text(0.0)
  assert text.embeddings.hidden_dropout == pytest.approx(0.1)
  assert all(layer.hidden_dropout == pytest.approx(0.1) for layer in text.layers)
  assert all(layer.drop_path == 0.0 for layer in text.layers)


def test_text_and_cross_rates_are_separate_ramps():
  cfg, text = _text(0.2, cross=0.05)
  f = cfg.text.fusion_start
  rates = [layer.drop_path for layer in text.layers]
  assert rates[:f] == pytest.approx(list(np.linspace(0, 0.2, f)))
  assert rates[f:] == pytest.approx(list(np.linspace(0, 0.05, cfg.text.num_layers - f)))
