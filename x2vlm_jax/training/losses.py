"""Pre-training objectives of X²-VLM as plain jnp functions (docs/reference.md §3.1–§3.4).

Conventions shared by every function here:
  * all math runs in float32, whatever dtype the model computed in;
  * `valid` is the batch contract's [B] float mask (1 real row, 0 padding row, see `x2vlm_jax.batch`):
    padding rows never contribute to a loss, never serve as a negative, never enter a denominator;
  * shapes are static and there is no Python branching on traced values, so everything is jit-able
    and works on globally sharded arrays (XLA inserts the gathers the contrastive terms need);
  * every mean is guarded: a batch with nothing to average over yields 0, not NaN.
"""

from typing import Tuple

import jax
import jax.numpy as jnp

# Large finite negative used instead of -inf for masked logits: exp() underflows to exactly 0 while
# log_softmax stays finite, so masked entries never produce NaN values or NaN gradients.
# |logit| ≤ 1/τ_min = 1000 for L2-normalised features, far away from this.
_MASKED_LOGIT = -1e9

TEMP_MIN = 0.001
TEMP_MAX = 0.5


def _f32(x):
  return jnp.asarray(x).astype(jnp.float32)


def _row_mask(valid, n: int):
  """`valid` (None = all real) → float32 [n]."""
  if valid is None:
    return jnp.ones((n,), jnp.float32)
  return (_f32(valid) > 0).astype(jnp.float32)


def _safe_div(num, den):
  # Denominators here are counts; max(·, 1) turns an empty batch into 0/1 = 0 without a NaN in
  # either the value or the gradient.
  return num / jnp.maximum(den, 1.0)


def clamp_temperature(temp):
  """τ ← clip(τ, 0.001, 0.5), docs/reference.md §3.1.

  The official code clamps `temp` in place once per optimizer step, before the forward pass; the
  trainer does the same by calling this on the `temp` param right after `optax.apply_updates`, so the
  losses below use τ directly (clamping inside a loss would zero its gradient outside the range).
  """
  return jnp.clip(temp, TEMP_MIN, TEMP_MAX)


def scale_gradient(x, scale: float):
  """Identity in the forward pass, gradient multiplied by `scale` in the backward pass.

  `x*s + stop_gradient(x*(1-s))`: the value equals x up to one float rounding, the derivative is s.
  """
  if isinstance(scale, (int, float)) and scale == 1.0:
    return x
  return x * scale + jax.lax.stop_gradient(x * (1.0 - scale))


# ---------------------------------------------------------------------------------------------------
# ITC
# ---------------------------------------------------------------------------------------------------
def _soft_cross_entropy(logits, targets, col_ok):
  """Row-wise −Σ_j y_ij log softmax(logits_i)_j with invalid columns removed from the softmax."""
  masked = jnp.where(col_ok[None, :], logits, _MASKED_LOGIT)
  logp = jax.nn.log_softmax(masked, axis=-1)
  return -jnp.sum(targets * logp, axis=-1)


def itc_targets(b: int, valid=None, ids=None):
  """[B,B] target distribution of ITC rows: identity without ids, else y_ij = 1[id_i=id_j]/Σ_k 1[id_i=id_k]
  (counting only real columns). Rows of padding entries are all zero."""
  ok = _row_mask(valid, b) > 0
  if ids is None:
    pos = jnp.eye(b, dtype=bool)
  else:
    ids = jnp.asarray(ids)
    pos = ids[:, None] == ids[None, :]
  pos = pos & ok[None, :] & ok[:, None]
  pos = pos.astype(jnp.float32)
  return _safe_div(pos, jnp.sum(pos, axis=-1, keepdims=True))


def itc_loss(image_feat, text_feat, temp, valid=None, ids=None, itc_grad_scale: float = 1.0):
  """Symmetric image–text contrastive loss over the GLOBAL batch (docs/reference.md §3.1).

  image_feat, text_feat: [B,E] L2-normalised features of the whole global batch (row i of both is a
    positive pair). The trainer passes globally sharded arrays; XLA inserts the all-gather.
  temp: scalar τ (already clamped, see `clamp_temperature`).
  valid: [B] (None = all real). Padding rows are dropped as anchors (rows) and as negatives (columns).
  ids: [B] int (retrieval fine-tuning): soft targets y_ij = 1[id_i=id_j] / Σ_k 1[id_i=id_k]; the same
    targets serve both directions (the id relation is symmetric). None = pretraining (diagonal).

  S = v·tᵀ/τ;  L = ½·(mean_i CE(S_i, y_i) + mean_i CE((Sᵀ)_i, y_i)), means over real rows.

  itc_grad_scale: multiplies the gradient that flows into the FEATURES (hence into the encoders and
    projections) but not the gradient of τ. Why: the official all-gather's backward returns only the
    local slice of the gradient and DDP then averages parameter gradients over the W ranks, so the
    encoders effectively receive (1/W)·∂L_itc/∂θ while `temp`, used identically on every rank, gets
    the full ∂L_itc/∂τ (docs/reference.md §3.1, §10 item 3). 1.0 (default) = the clean global loss;
    1/W_official reproduces the official dynamics, W_official being the GPU count of the run being
    replicated: 1/8 for base 4M, 1/16 for large 4M and base stage 2, 1/24 for base 1B stage 1,
    1/32 for large stage 2 (docs/reference.md §6.4). Must be a Python float (it is a static hyper-parameter).
  """
  b = image_feat.shape[0]
  v = scale_gradient(_f32(image_feat), itc_grad_scale)
  t = scale_gradient(_f32(text_feat), itc_grad_scale)
  row = _row_mask(valid, b)
  ok = row > 0
  logits = (v @ t.T) / _f32(temp)
  targets = itc_targets(b, valid, ids)
  i2t = _soft_cross_entropy(logits, targets, ok)
  t2i = _soft_cross_entropy(logits.T, targets, ok)
  n = jnp.sum(row)
  return 0.5 * (_safe_div(jnp.sum(row * i2t), n) + _safe_div(jnp.sum(row * t2i), n))


# ---------------------------------------------------------------------------------------------------
# ITM hard negatives
# ---------------------------------------------------------------------------------------------------
def itm_negative_weights(image_feat, text_feat, temp, valid, group_size: int, ids=None):
  """Unnormalised sampling weights of ITM hard negatives, per group (docs/reference.md §3.2 step 1, §10 item 4).

  The global batch is cut into contiguous groups of `group_size` rows — the official per-device
  batch — and negatives are only drawn inside a group, so results do not depend on the device mesh.
  Within a group, for anchor i and candidate j:
    w_i2t[i, j] = softmax_j(v_i·t_j/τ) + 1e-5   (image i → candidate negative text j)
    w_t2i[i, j] = softmax_j(t_i·v_j/τ) + 1e-5   (text i  → candidate negative image j)
  with the softmax taken over the group's real columns (positives included, as officially), then
  EXACT zeros on positives (j = i, or id_j = id_i when ids are given) and on padding columns.
  No gradient flows through the weights.

  Returns (w_i2t, w_t2i), each [B // group_size, group_size, group_size] float32.
  """
  b = image_feat.shape[0]
  if group_size <= 0 or b % group_size:
    raise ValueError(f"itm negatives: group_size={group_size} must divide the global batch {b}")
  n, g = b // group_size, group_size
  v = jax.lax.stop_gradient(_f32(image_feat)).reshape(n, g, -1)
  t = jax.lax.stop_gradient(_f32(text_feat)).reshape(n, g, -1)
  tau = jax.lax.stop_gradient(_f32(temp))
  ok = (_row_mask(valid, b) > 0).reshape(n, g)

  if ids is None:
    positive = jnp.broadcast_to(jnp.eye(g, dtype=bool), (n, g, g))
  else:
    gid = jnp.asarray(ids).reshape(n, g)
    positive = (gid[:, :, None] == gid[:, None, :]) | jnp.eye(g, dtype=bool)
  candidate = ok[:, None, :] & ~positive

  sim_i2t = jnp.einsum("nie,nje->nij", v, t) / tau
  sim_t2i = jnp.swapaxes(sim_i2t, 1, 2)

  def weights(sim):
    probs = jax.nn.softmax(jnp.where(ok[:, None, :], sim, _MASKED_LOGIT), axis=-1)
    return jnp.where(candidate, probs + 1e-5, 0.0)

  return weights(sim_i2t), weights(sim_t2i)


def _draw_one(key, w, anchor_ok):
  """One categorical draw per row of w [n,g,g] ∝ w → (global index [n·g], usable [n·g] float32)."""
  n, g, _ = w.shape
  has_candidate = jnp.any(w > 0, axis=-1)
  logits = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
  # A row without any candidate (group of size 1, every other row padding or a positive) would be
  # all −inf; give it a uniform draw instead so the index is well defined, and flag it unusable.
  logits = jnp.where(has_candidate[..., None], logits, 0.0)
  local = jax.random.categorical(key, logits, axis=-1)
  glob = local + (jnp.arange(n) * g)[:, None]
  usable = (has_candidate & anchor_ok).astype(jnp.float32)
  return glob.reshape(n * g).astype(jnp.int32), usable.reshape(n * g)


def sample_itm_negatives(rng, image_feat, text_feat, temp, valid, group_size: int, ids=None):
  """Samples one hard negative per anchor for ITM (docs/reference.md §3.2 step 2), inside groups of `group_size`.

  Returns (neg_image_idx, neg_text_idx, neg_image_valid, neg_text_valid), each [B]:
    neg_image_idx[b]: GLOBAL row of the negative IMAGE for text b   → pair (V[neg_image_idx[b]], T[b]);
    neg_text_idx[b]:  GLOBAL row of the negative TEXT for image b   → pair (V[b], T[neg_text_idx[b]]);
    neg_*_valid[b]:   1.0 if that pair is a real negative; 0.0 when the anchor is padding or its group
                      offered no candidate (then the index is an arbitrary row of the group and
                      `itm_loss` must ignore the pair).
  Deterministic given `rng`; indices always stay within the anchor's group; never a positive or a
  padding row when usable. See `itm_negative_weights` for the weights.
  """
  b = image_feat.shape[0]
  w_i2t, w_t2i = itm_negative_weights(image_feat, text_feat, temp, valid, group_size, ids)
  anchor_ok = (_row_mask(valid, b) > 0).reshape(w_i2t.shape[:2])
  key_img, key_txt = jax.random.split(rng)
  neg_image_idx, neg_image_valid = _draw_one(key_img, w_t2i, anchor_ok)
  neg_text_idx, neg_text_valid = _draw_one(key_txt, w_i2t, anchor_ok)
  return neg_image_idx, neg_text_idx, neg_image_valid, neg_text_valid


# ---------------------------------------------------------------------------------------------------
# ITM / MLM
# ---------------------------------------------------------------------------------------------------
def _hard_cross_entropy(logits, labels):
  """Per-entry −log softmax(logits)[label]; labels outside [0, V) must be masked by the caller."""
  logp = jax.nn.log_softmax(_f32(logits), axis=-1)
  safe = jnp.clip(labels, 0, logits.shape[-1] - 1)
  return -jnp.take_along_axis(logp, safe[..., None].astype(jnp.int32), axis=-1)[..., 0]


def itm_loss(logits_pos, logits_neg_img, logits_neg_txt, valid=None, neg_valid_img=None, neg_valid_txt=None):
  """Image–text matching CE (docs/reference.md §3.2 step 4).

  logits_*: [B,2] ITM head logits of the positive pairs, the (negative image, text b) pairs and the
  (image b, negative text) pairs. Labels: 1 for positives, 0 for the 2B negatives. Mean over the
  entries that are real: positives of valid rows, negatives of valid rows whose `neg_valid_*` is 1.
  With nothing padded this is the official mean over 3B.
  """
  b = logits_pos.shape[0]
  row = _row_mask(valid, b)
  nvi = row * _row_mask(neg_valid_img, b)
  nvt = row * _row_mask(neg_valid_txt, b)
  logits = jnp.concatenate([_f32(logits_pos), _f32(logits_neg_img), _f32(logits_neg_txt)], axis=0)
  labels = jnp.concatenate([jnp.ones((b,), jnp.int32), jnp.zeros((2 * b,), jnp.int32)])
  weight = jnp.concatenate([row, nvi, nvt])
  ce = _hard_cross_entropy(logits, labels)
  return _safe_div(jnp.sum(weight * ce), jnp.sum(weight))


def mlm_loss(logits, labels, valid=None) -> Tuple[jax.Array, jax.Array]:
  """Masked-language-model CE over real masked tokens (docs/reference.md §3.3).

  logits [B,M,V] at the masked positions, labels [B,M] gold ids with −100 for padding slots,
  valid [B]. Returns (mean CE, accuracy), both over tokens with label ≠ −100 in real rows; 0 when
  there are none.
  """
  b = labels.shape[0]
  mask = (labels != -100) & (_row_mask(valid, b)[:, None] > 0)
  mask = mask.astype(jnp.float32)
  ce = _hard_cross_entropy(logits, labels)
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  n = jnp.sum(mask)
  return _safe_div(jnp.sum(mask * ce), n), _safe_div(jnp.sum(mask * hit), n)


def caption_mlm_loss(logits, masked_ids, weights, *, ignore_id: int, label_smoothing: float = 0.1):
  """The MLM captioner's loss (docs/reference.md §5.5, official `LabelSmoothingLoss` + `loss_mask_and_normalize`).

  logits [B,M,V] at the inserted [MASK]s, masked_ids [B,M] gold ids (`ignore_id` — the [CLS] id — on
  padding slots), weights [B,M] (1 real, 0 padding). Per position the KL divergence
  Σ_v q_v (log q_v − log p_v) to the smoothed target q: 1 − ε on the gold token, ε/(V−2) on every
  other token except `ignore_id`, which gets 0 (an ignored position has q ≡ 0, loss 0). Then
  Σ loss·w / (Σ w + 1e-5). Note the official smoothing puts ε/(V−2) on V−2 tokens, so q sums to 1.
  """
  v = logits.shape[-1]
  logp = jax.nn.log_softmax(_f32(logits), axis=-1)
  gold = jax.nn.one_hot(masked_ids, v, dtype=jnp.float32)
  q = jnp.where(gold > 0, 1.0 - label_smoothing, label_smoothing / (v - 2))
  q = q.at[..., ignore_id].set(0.0)
  q = jnp.where((masked_ids == ignore_id)[..., None], 0.0, q)
  kl = jnp.sum(jnp.where(q > 0, q * (jnp.log(jnp.where(q > 0, q, 1.0)) - logp), 0.0), axis=-1)
  w = _f32(weights)
  return jnp.sum(kl * w) / (jnp.sum(w) + 1e-5)


def classification_loss(logits, labels, valid=None) -> Tuple[jax.Array, jax.Array]:
  """Cross-entropy with ignore index −100 (official `F.cross_entropy(..., ignore_index=-100)`, video
  QA's answers outside the answer vocabulary) → (mean CE over counted rows, accuracy over them).
  logits [B, C], labels [B] int, valid [B] (padding rows never count)."""
  b = labels.shape[0]
  counted = ((labels != -100) & (_row_mask(valid, b) > 0)).astype(jnp.float32)
  ce = _hard_cross_entropy(logits, labels)
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  n = jnp.sum(counted)
  return _safe_div(jnp.sum(counted * ce), n), _safe_div(jnp.sum(counted * hit), n)


# ---------------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------------
def box_cxcywh_to_xyxy(box):
  """[..., 4] (cx, cy, w, h) → (x1, y1, x2, y2) = (cx − w/2, cy − h/2, cx + w/2, cy + h/2)."""
  cx, cy, w, h = jnp.moveaxis(_f32(box), -1, 0)
  return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def _nonzero(x):
  # Used for areas in denominators: a degenerate (zero-area) pair gives 0/1 instead of 0/0.
  return jnp.where(x > 0, x, 1.0)


def generalized_iou(a, b):
  """Elementwise GIoU of paired (x1, y1, x2, y2) boxes [..., 4] → [...].

  GIoU = IoU − (C − U)/C with U the union area and C the area of the smallest enclosing box.
  Boxes are assumed well formed (x2 ≥ x1, y2 ≥ y1), which sigmoid-predicted (cx,cy,w,h) boxes are.
  """
  a, b = _f32(a), _f32(b)
  area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
  area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  lt = jnp.maximum(a[..., :2], b[..., :2])
  rb = jnp.minimum(a[..., 2:], b[..., 2:])
  wh = jnp.clip(rb - lt, 0.0)
  inter = wh[..., 0] * wh[..., 1]
  union = area_a + area_b - inter
  iou = inter / _nonzero(union)
  elt = jnp.minimum(a[..., :2], b[..., :2])
  erb = jnp.maximum(a[..., 2:], b[..., 2:])
  ewh = jnp.clip(erb - elt, 0.0)
  enclosing = ewh[..., 0] * ewh[..., 1]
  return iou - (enclosing - union) / _nonzero(enclosing)


def box_losses(pred, target, is_image=None, valid=None) -> Tuple[jax.Array, jax.Array]:
  """Region box losses (docs/reference.md §3.4) → (L_bbox, L_giou).

  pred, target: [B,4] (cx, cy, w, h) in [0,1] (pred already through the sigmoid).
  is_image: [B] 1 for whole-image captions, which get no box loss (None = all regions).
  L_bbox = Σ_b m_b·Σ_c |pred_bc − target_bc| / Σ_b m_b,  L_giou = Σ_b m_b·(1 − GIoU_b) / Σ_b m_b,
  m_b = (1 − is_image_b)·valid_b.

  Deliberate deviation (docs/reference.md §10 item 8): the official code divides by Σ_b (1 − is_image_b) with no
  guard and returns NaN when a batch has no region box; here such a batch gives 0 for both losses
  (and zero gradient), so one unlucky batch cannot poison the parameters.
  Padding rows (e.g. all-zero boxes) never produce NaN either: degenerate areas are guarded.
  """
  b = pred.shape[0]
  m = _row_mask(valid, b)
  if is_image is not None:
    m = m * (1.0 - (_f32(is_image) > 0).astype(jnp.float32))
  l1 = jnp.sum(jnp.abs(_f32(pred) - _f32(target)), axis=-1)
  giou = generalized_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(target))
  n = jnp.sum(m)
  return _safe_div(jnp.sum(m * l1), n), _safe_div(jnp.sum(m * (1.0 - giou)), n)
