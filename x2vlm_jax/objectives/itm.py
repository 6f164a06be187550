"""Image–text matching (ITM), docs/reference.md §3.2: hard negatives sampled by ITC similarity inside
groups of the official per-device batch, and the matching cross-entropy over the 3B pairs."""

import jax
import jax.numpy as jnp

from x2vlm_jax.objectives.common import MASKED_LOGIT, f32, hard_cross_entropy, row_mask, safe_div


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
  groups = b // group_size
  v = jax.lax.stop_gradient(f32(image_feat)).reshape(groups, group_size, -1)
  t = jax.lax.stop_gradient(f32(text_feat)).reshape(groups, group_size, -1)
  tau = jax.lax.stop_gradient(f32(temp))
  ok = (row_mask(valid, b) > 0).reshape(groups, group_size)

  if ids is None:
    positive = jnp.broadcast_to(jnp.eye(group_size, dtype=bool), (groups, group_size, group_size))
  else:
    group_ids = jnp.asarray(ids).reshape(groups, group_size)
    positive = (group_ids[:, :, None] == group_ids[:, None, :]) | jnp.eye(group_size, dtype=bool)
  candidate = ok[:, None, :] & ~positive

  sim_i2t = jnp.einsum("nie,nje->nij", v, t) / tau
  sim_t2i = jnp.swapaxes(sim_i2t, 1, 2)

  def weights(sim):
    probs = jax.nn.softmax(jnp.where(ok[:, None, :], sim, MASKED_LOGIT), axis=-1)
    return jnp.where(candidate, probs + 1e-5, 0.0)

  return weights(sim_i2t), weights(sim_t2i)


def _draw_one(key, w, anchor_ok):
  """One categorical draw per row of w [n,g,g] ∝ w → (global index [n·g], usable [n·g] float32)."""
  groups, group_size, _ = w.shape
  has_candidate = jnp.any(w > 0, axis=-1)
  logits = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
  # A row without any candidate (group of size 1, every other row padding or a positive) would be
  # all −inf; give it a uniform draw instead so the index is well defined, and flag it unusable.
  logits = jnp.where(has_candidate[..., None], logits, 0.0)
  local = jax.random.categorical(key, logits, axis=-1)
  glob = local + (jnp.arange(groups) * group_size)[:, None]
  usable = (has_candidate & anchor_ok).astype(jnp.float32)
  return glob.reshape(groups * group_size).astype(jnp.int32), usable.reshape(groups * group_size)


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
  anchor_ok = (row_mask(valid, b) > 0).reshape(w_i2t.shape[:2])
  key_img, key_txt = jax.random.split(rng)
  neg_image_idx, neg_image_valid = _draw_one(key_img, w_t2i, anchor_ok)
  neg_text_idx, neg_text_valid = _draw_one(key_txt, w_i2t, anchor_ok)
  return neg_image_idx, neg_text_idx, neg_image_valid, neg_text_valid


def itm_loss(logits_pos, logits_neg_img, logits_neg_txt, valid=None, neg_valid_img=None, neg_valid_txt=None):
  """Image–text matching CE (docs/reference.md §3.2 step 4).

  logits_*: [B,2] ITM head logits of the positive pairs, the (negative image, text b) pairs and the
  (image b, negative text) pairs. Labels: 1 for positives, 0 for the 2B negatives. Mean over the
  entries that are real: positives of valid rows, negatives of valid rows whose `neg_valid_*` is 1.
  With nothing padded this is the official mean over 3B.
  """
  b = logits_pos.shape[0]
  row = row_mask(valid, b)
  neg_img_ok = row * row_mask(neg_valid_img, b)
  neg_txt_ok = row * row_mask(neg_valid_txt, b)
  logits = jnp.concatenate([f32(logits_pos), f32(logits_neg_img), f32(logits_neg_txt)], axis=0)
  labels = jnp.concatenate([jnp.ones((b,), jnp.int32), jnp.zeros((2 * b,), jnp.int32)])
  weight = jnp.concatenate([row, neg_img_ok, neg_txt_ok])
  ce = hard_cross_entropy(logits, labels)
  return safe_div(jnp.sum(weight * ce), jnp.sum(weight))
