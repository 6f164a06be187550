"""Multilingual pre-training, Cross-View Language Modeling (docs/reference.md §1.8, §3.7; official
`models/model_pretrain.py: CrossViewLM`, configs/pretrain/multilingual_cclm_x2vlm_{base,large}.yaml).

One optimizer step sums the image / region (/ video) streams' X²-VLM losses — computed by the same
code as English pre-training, on the XLM-R text side — and the parallel-text stream `mtext`'s
TTC + TTM + MLM (x2vlm_jax/objectives/para_text.py), weighted by `loss_weights.mtext`
(`mtexts.iter_perc`, 1.0 in both released configs).

The `mtext` batch (per host; B = data.mtext.batch_size / hosts, L = data.mtext.max_tokens,
M = data.mtext.max_masks):
  text_ids, text_mask            [B, L] int32    sentence 1: <s> pieces </s>, pad id 1
  para_ids, para_mask            [B, L] int32    its translation
  text_ids_masked                [B, L] int32    MLM input on sentence 1 (conditioned on sentence 2)
  masked_pos, mlm_labels         [B, M] int32    masked positions, gold ids (−100 padding)
  valid                          [B]    float32
"""

from typing import Dict

import jax
import numpy as np

from x2vlm_jax import objectives
from x2vlm_jax.batch import IGNORE_ID, check_stream
from x2vlm_jax.tasks.pretrain import PretrainTask, enabled_streams
from x2vlm_jax.tasks.synthetic import SyntheticIterator, _per_host, _seed

MTEXT = "mtext"
# XLM-R's fairseq-offset specials (docs/reference.md §4.4): <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> = last id.
BOS, PAD, EOS = 0, 1, 2


def mtext_enabled(data_cfg) -> bool:
  s = data_cfg.get(MTEXT)
  return bool(s) and s.get("enabled", True) and s.get("batch_size", 0) > 0 and len(s.get("datasets", ())) > 0


def mtext_spec(batch_size: int, max_tokens: int, max_masks: int) -> Dict[str, tuple]:
  b, length, m = batch_size, max_tokens, max_masks
  return {
    "text_ids": ((b, length), np.int32),
    "text_mask": ((b, length), np.int32),
    "para_ids": ((b, length), np.int32),
    "para_mask": ((b, length), np.int32),
    "text_ids_masked": ((b, length), np.int32),
    "masked_pos": ((b, m), np.int32),
    "mlm_labels": ((b, m), np.int32),
    "valid": ((b,), np.float32),
  }


def _sentence(rs, b: int, length: int, lengths, vocab_size: int):
  ids = rs.randint(4, vocab_size - 1, size=(b, length)).astype(np.int32)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = BOS
  ids[np.arange(b), lengths - 1] = EOS
  return np.where(mask > 0, ids, PAD).astype(np.int32), mask


def synthetic_mtext(spec: Dict[str, tuple], *, vocab_size: int, seed: int, mask_prob: float = 0.4):
  """A random `mtext` batch that follows the contract. The "translation" is a fixed relabelling of
  sentence 1's pieces in reverse order, so a model can learn to match the pair (tests, benchmarks)."""
  rs = np.random.RandomState(seed)
  b, length = spec["text_ids"][0]
  m = spec["masked_pos"][0][1]
  lengths = rs.randint(min(4, length), length + 1, size=b)
  text, text_mask = _sentence(rs, b, length, lengths, vocab_size)
  span = vocab_size - 5
  para = np.full_like(text, PAD)
  for i in range(b):
    inner = text[i, 1 : lengths[i] - 1]
    para[i, : lengths[i]] = np.concatenate([[BOS], 4 + (inner[::-1] - 4 + span // 2) % span, [EOS]])
  masked = text.copy()
  masked_pos = np.zeros((b, m), np.int32)
  labels = np.full((b, m), IGNORE_ID, np.int32)
  for i in range(b):
    k = int(min(m, lengths[i] - 2, max(1, round((lengths[i] - 2) * mask_prob))))
    pos = np.sort(rs.choice(np.arange(1, lengths[i] - 1), size=k, replace=False))
    masked_pos[i, :k] = pos
    labels[i, :k] = text[i, pos]
    masked[i, pos] = vocab_size - 1  # <mask>
  out = dict(
    text_ids=text,
    text_mask=text_mask,
    para_ids=para,
    para_mask=text_mask.copy(),
    text_ids_masked=masked,
    masked_pos=masked_pos,
    mlm_labels=labels,
    valid=np.ones((b,), np.float32),
  )
  check_stream(MTEXT, out, spec)
  return out


def _as_xlmr_ids(fields: Dict[str, np.ndarray], vocab_size: int) -> Dict[str, np.ndarray]:
  """The English synthetic streams use BERT's ids ([CLS]=101, [SEP]=102, [MASK]=103, pad 0); rewrite
  them with XLM-R's specials so positions and padding follow the multilingual tokenizer."""
  out = dict(fields)
  mask = fields["text_mask"] > 0
  for key in ("text_ids", "text_ids_masked"):
    ids = fields[key].copy()
    ids = np.where(ids == 101, BOS, np.where(ids == 102, EOS, np.where(ids == 103, vocab_size - 1, ids)))
    out[key] = np.where(mask, ids, PAD).astype(np.int32)
  return out


class CCLMSyntheticIterator(SyntheticIterator):
  """SyntheticIterator + the `mtext` stream, with XLM-R special ids in every text field."""

  def __init__(self, data_cfg, model_cfg, *, seed: int, process_index: int = 0, process_count: int = 1):
    super().__init__(data_cfg, model_cfg, seed=seed, process_index=process_index, process_count=process_count)
    self.mtext = None
    if mtext_enabled(data_cfg):
      s = data_cfg[MTEXT]
      self.mask_prob = float(s.get("mask_prob", 0.4))
      self.mtext = mtext_spec(
        _per_host(int(s.batch_size), process_count, "data.mtext"), int(s.max_tokens), int(s.max_masks)
      )

  def all_specs(self):
    return {**self.specs, **({MTEXT: self.mtext} if self.mtext else {})}

  def __next__(self):
    k = self.position
    batch = super().__next__()
    out = {stream: _as_xlmr_ids(fields, self.vocab_size) for stream, fields in batch.items()}
    if self.mtext:
      seed = _seed(self.seed, k, self.process_index, len(self.specs))
      out[MTEXT] = synthetic_mtext(self.mtext, vocab_size=self.vocab_size, seed=seed, mask_prob=self.mask_prob)
    return out


class CCLMPretrainTask(PretrainTask):
  name = "cclm_pretrain"

  def __init__(self, config):
    super().__init__(config)
    model = config.model
    if model.get("text_encoder", "bert") != "xlmr":
      raise ValueError("cclm_pretrain: the model must have the XLM-R text side (a cclm_* preset, text_encoder='xlmr')")
    if mtext_enabled(config.data) and model.text.hidden != model.vision.width:
      # TTM feeds sentence 1's text states to the cross-attention built for vision tokens.
      raise ValueError(
        f"cclm_pretrain: TTM needs text.hidden ({model.text.hidden}) == vision.width ({model.vision.width})"
      )

  def loss(self, model, batch, rng, step):
    others = {k: v for k, v in batch.items() if k != MTEXT}
    total, metrics = super().loss(model, others, rng, step) if others else (0.0, {})
    if MTEXT in batch:
      fields = batch[MTEXT]
      rows = int(fields["text_ids"].shape[0])
      # Official forward_para_text always computes TTM (no `stop_calc_itm` for parallel text).
      terms = objectives.para_text_losses(
        model,
        fields,
        jax.random.fold_in(rng, 1 << 16),
        group_size=min(int(self.group_sizes.get(MTEXT, rows)), rows),
        itc_grad_scale=self.itc_grad_scale,
      )
      total = total + self.weights.get(MTEXT, 1.0) * sum(terms[k] for k in objectives.PARA_TEXT_TERMS)
      metrics.update({f"{MTEXT}/{k}": v for k, v in terms.items()})
    return total, metrics

  def train_iterator(self, seed, process_index, process_count):
    data = self.config.data
    if data.get("source", "tfds") == "synthetic":
      return CCLMSyntheticIterator(
        data, self.config.model, seed=seed, process_index=process_index, process_count=process_count
      )
    from x2vlm_jax.data import pipeline  # tensorflow lives only behind this import

    streams = getattr(pipeline, "CCLM_STREAMS", None)  # image, region and the parallel text
    if streams is None:
      raise NotImplementedError("cclm_pretrain: this input pipeline has no `mtext` stream (data.source=synthetic)")
    it = pipeline.create_train_iterator
    return it(data, seed=seed, process_index=process_index, process_count=process_count, streams=streams)

  def batch_spec(self):
    return CCLMSyntheticIterator(self.config.data, self.config.model, seed=0, process_count=1).all_specs()

  def examples_per_step(self) -> int:
    n = sum(int(self.config.data[s].batch_size) for s in enabled_streams(self.config.data))
    return n + (int(self.config.data[MTEXT].batch_size) if mtext_enabled(self.config.data) else 0)
