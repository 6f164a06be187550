"""Loss math (x2vlm_jax.objectives) against hand-computed values and small numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from x2vlm_jax import objectives as _losses


class _Jitted:
  """The module under test with every function jitted: op-by-op eager dispatch of many tiny ops is
  what dominates runtime on CPU, one compile per test call is much cheaper."""

  _static = {
    "itc_loss": ("itc_grad_scale",),
    "itm_negative_weights": ("group_size",),
    "sample_itm_negatives": ("group_size",),
    "itc_targets": ("b",),
  }

  def __getattr__(self, name):
    fn = getattr(_losses, name)
    return jax.jit(fn, static_argnames=self._static.get(name, ())) if callable(fn) else fn


L = _Jitted()


def _normed(rng, b, e):
  x = rng.normal(size=(b, e)).astype(np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_itc(v, t, temp, valid=None, ids=None):
  """Reference written as the definition: drop padding rows, then the plain formula."""
  keep = np.ones(len(v), bool) if valid is None else np.asarray(valid) > 0
  v, t = v[keep].astype(np.float64), t[keep].astype(np.float64)
  s = v @ t.T / temp
  if ids is None:
    y = np.eye(len(v))
  else:
    ids = np.asarray(ids)[keep]
    y = (ids[:, None] == ids[None, :]).astype(np.float64)
    y /= y.sum(1, keepdims=True)
  i2t = -(y * _np_log_softmax(s)).sum(1).mean()
  t2i = -(y * _np_log_softmax(s.T)).sum(1).mean()
  return (i2t + t2i) / 2


# --- ITC ---------------------------------------------------------------------------------------------
def test_itc_hand_value_2x2():
  eye = jnp.eye(2)
  # S = [[2, 0], [0, 2]] → every row: −log(e²/(e²+1)) = log(1 + e⁻²)
  got = L.itc_loss(eye, eye, 0.5)
  np.testing.assert_allclose(got, math.log(1 + math.exp(-2)), rtol=1e-6)


def test_itc_matches_numpy_3x3():
  rng = np.random.default_rng(0)
  v, t = _normed(rng, 3, 5), _normed(rng, 3, 5)
  np.testing.assert_allclose(L.itc_loss(v, t, 0.07), _np_itc(v, t, 0.07), rtol=1e-5)


def test_itc_padding_rows_are_neither_anchors_nor_negatives():
  rng = np.random.default_rng(1)
  v, t = _normed(rng, 5, 4), _normed(rng, 5, 4)
  valid = np.array([1, 0, 1, 1, 0], np.float32)
  got = L.itc_loss(v, t, 0.1, valid=valid)
  np.testing.assert_allclose(got, _np_itc(v, t, 0.1, valid), rtol=1e-5)
  # Same as physically removing the padding rows; padding content is irrelevant.
  v2, t2 = v.copy(), t.copy()
  v2[1], t2[4] = v[0], t[0]
  np.testing.assert_allclose(L.itc_loss(v2, t2, 0.1, valid=valid), got, rtol=1e-6)
  np.testing.assert_allclose(L.itc_loss(v[valid > 0], t[valid > 0], 0.1), got, rtol=1e-6)


def test_itc_soft_targets_with_ids_hand_value():
  eye = jnp.eye(3)
  ids = jnp.array([0, 0, 1])
  # τ=0.5 → S = 2·I. Rows 0,1: targets (½,½,0), CE = log(e²+2) − 1; row 2: CE = log(e²+2) − 2.
  expected = math.log(math.exp(2) + 2) - 4 / 3
  np.testing.assert_allclose(L.itc_loss(eye, eye, 0.5, ids=ids), expected, rtol=1e-6)
  np.testing.assert_allclose(L.itc_targets(3, ids=ids), [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], atol=0)


def test_itc_ids_with_padding_matches_numpy():
  rng = np.random.default_rng(2)
  v, t = _normed(rng, 6, 4), _normed(rng, 6, 4)
  ids = np.array([3, 3, 7, 3, 7, 9])
  valid = np.array([1, 1, 1, 0, 1, 1], np.float32)
  got = L.itc_loss(v, t, 0.2, valid=valid, ids=ids)
  np.testing.assert_allclose(got, _np_itc(v, t, 0.2, valid, ids), rtol=1e-5)


def test_itc_all_padding_is_zero_not_nan():
  v = jnp.ones((2, 3)) / math.sqrt(3)
  loss, grads = jax.value_and_grad(L.itc_loss, argnums=(0, 2))(v, v, 0.07, jnp.zeros(2))
  assert float(loss) == 0.0
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_itc_grad_scale_changes_feature_grads_only():
  rng = np.random.default_rng(3)
  v, t = _normed(rng, 4, 3), _normed(rng, 4, 3)
  temp = jnp.float32(0.07)

  def f(s):
    loss = lambda a, b, c: L.itc_loss(a, b, c, itc_grad_scale=s)  # noqa: E731
    return jax.value_and_grad(loss, argnums=(0, 1, 2))(v, t, temp)

  (l1, (gv1, gt1, gtemp1)), (l8, (gv8, gt8, gtemp8)) = f(1.0), f(1 / 8)
  np.testing.assert_allclose(l8, l1, rtol=1e-6)
  np.testing.assert_allclose(gv8, gv1 / 8, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(gt8, gt1 / 8, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(gtemp8, gtemp1, rtol=1e-6)
  assert abs(float(gtemp1)) > 0


# --- ITM negatives -------------------------------------------------------------------------------------
def _np_weights(v, t, temp, valid, g, ids=None):
  """Official recipe per group, padding columns removed from the softmax."""
  b = len(v)
  ids = np.arange(b) if ids is None else np.asarray(ids)
  w_i2t = np.zeros((b // g, g, g))
  w_t2i = np.zeros((b // g, g, g))
  for n in range(b // g):
    sl = slice(n * g, (n + 1) * g)
    vv, tt, ok, gid = v[sl].astype(np.float64), t[sl].astype(np.float64), valid[sl] > 0, ids[sl]
    for out, sim in ((w_i2t, vv @ tt.T / temp), (w_t2i, tt @ vv.T / temp)):
      s = np.where(ok[None], sim, -np.inf)
      p = np.exp(s - s.max(1, keepdims=True))
      p /= p.sum(1, keepdims=True)
      w = p + 1e-5
      w[:, ~ok] = 0
      w[gid[:, None] == gid[None, :]] = 0
      out[n] = w
  return w_i2t, w_t2i


def test_itm_weights_exact_zeros_and_values():
  rng = np.random.default_rng(4)
  v, t = _normed(rng, 8, 6), _normed(rng, 8, 6)
  valid = np.array([1, 1, 0, 1, 1, 1, 1, 0], np.float32)
  w_i2t, w_t2i = L.itm_negative_weights(v, t, 0.1, valid, 4)
  r_i2t, r_t2i = _np_weights(v, t, 0.1, valid, 4)
  np.testing.assert_allclose(w_i2t, r_i2t, rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(w_t2i, r_t2i, rtol=1e-5, atol=1e-8)
  for w in (np.asarray(w_i2t), np.asarray(w_t2i)):
    assert (np.diagonal(w, axis1=1, axis2=2) == 0).all()  # positives: exactly zero
    assert (w[0, :, 2] == 0).all() and (w[1, :, 3] == 0).all()  # padding columns: exactly zero
    off = ~np.eye(4, dtype=bool)
    assert (w[0][:, [0, 1, 3]][off[:, [0, 1, 3]]] > 0).all()


def test_itm_weights_zero_same_ids():
  rng = np.random.default_rng(5)
  v, t = _normed(rng, 6, 4), _normed(rng, 6, 4)
  ids = np.array([1, 1, 2, 3, 3, 3])
  w_i2t, w_t2i = L.itm_negative_weights(v, t, 0.1, np.ones(6), 6, ids=ids)
  same = ids[:, None] == ids[None, :]
  assert (np.asarray(w_i2t)[0][same] == 0).all() and (np.asarray(w_t2i)[0][same] == 0).all()
  assert (np.asarray(w_i2t)[0][~same] > 0).all()
  r_i2t, _ = _np_weights(v, t, 0.1, np.ones(6), 6, ids)
  np.testing.assert_allclose(w_i2t, r_i2t, rtol=1e-5, atol=1e-8)


# Every sampling test uses one geometry (B=8 in groups of 4, N draws) so that the vmapped sampler is
# compiled at most twice (with and without ids): compiling the categorical draw dominates runtime.
_B, _G, _N = 8, 4, 8000
_sample_many = jax.jit(jax.vmap(_losses.sample_itm_negatives, in_axes=(0,) + (None,) * 6), static_argnums=5)


def _draw_many(v, t, valid, temp=0.1, ids=None, seed=0):
  keys = jax.random.split(jax.random.key(seed), _N)
  return [np.asarray(x) for x in _sample_many(keys, v, t, jnp.float32(temp), jnp.asarray(valid), _G, ids)]


def test_itm_samples_never_positive_or_padding_and_stay_in_group():
  rng = np.random.default_rng(6)
  v, t = _normed(rng, _B, 5), _normed(rng, _B, 5)
  valid = np.ones(_B, np.float32)
  valid[[2, 5]] = 0
  ni, nt, vi, vt = _draw_many(v, t, valid)
  rows = np.arange(_B)
  for idx, ok in ((ni, vi), (nt, vt)):
    assert idx.dtype == np.int32
    assert (idx // _G == rows // _G).all()  # within the anchor's group
    used = ok > 0
    assert (idx[used] != np.broadcast_to(rows, idx.shape)[used]).all()  # never the positive
    assert (valid[idx[used]] > 0).all()  # never a padding row
    np.testing.assert_array_equal(ok, np.broadcast_to(valid, ok.shape))  # padding anchors unusable
  assert set(ni[:, 0]) <= {1, 3} and set(nt[:, 4]) <= {6, 7}


def test_itm_samples_never_same_id_and_empty_rows_are_flagged():
  rng = np.random.default_rng(7)
  v, t = _normed(rng, _B, 5), _normed(rng, _B, 5)
  # group 0: ids 0,0,1,2; group 1: one id for all (nobody has a candidate) except the 4th... which is
  # padding, so row 4..6 have no negative at all
  ids = np.array([0, 0, 1, 2, 5, 5, 5, 6])
  valid = np.array([1, 1, 1, 1, 1, 1, 1, 0], np.float32)
  ni, nt, vi, vt = _draw_many(v, t, valid, ids=ids)
  expected_ok = np.array([1, 1, 1, 1, 0, 0, 0, 0], np.float32)
  for idx, ok in ((ni, vi), (nt, vt)):
    np.testing.assert_array_equal(ok, np.broadcast_to(expected_ok, ok.shape))
    used = ok > 0
    assert (np.broadcast_to(ids, idx.shape)[used] != ids[idx[used]]).all()
    assert (idx // _G == np.arange(_B) // _G).all()  # even unusable rows stay in their group


def test_itm_group_of_one_has_no_negative():
  rng = np.random.default_rng(10)
  v, t = _normed(rng, 4, 3), _normed(rng, 4, 3)
  ni, nt, vi, vt = L.sample_itm_negatives(jax.random.key(0), v, t, 0.1, jnp.ones(4), 1)
  np.testing.assert_array_equal(ni, np.arange(4))
  np.testing.assert_array_equal(nt, np.arange(4))
  assert (np.asarray(vi) == 0).all() and (np.asarray(vt) == 0).all()


def test_itm_sampling_deterministic_and_key_dependent():
  rng = np.random.default_rng(8)
  v, t = _normed(rng, _B, 5), _normed(rng, _B, 5)
  valid = np.ones(_B, np.float32)
  a, b, c = _draw_many(v, t, valid, seed=1), _draw_many(v, t, valid, seed=1), _draw_many(v, t, valid, seed=2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert (a[0] != c[0]).any() and (a[1] != c[1]).any()
  assert (a[0] != a[1]).any()  # the image and text draws use different keys


def test_itm_sampling_distribution_follows_weights():
  rng = np.random.default_rng(9)
  v, t = _normed(rng, _B, 3), _normed(rng, _B, 3)
  valid = np.ones(_B, np.float32)
  valid[6] = 0
  temp = 0.3  # soft enough that every candidate gets drawn often
  ni, nt, _, _ = _draw_many(v, t, valid, temp=temp)
  w_i2t, w_t2i = (np.asarray(w) for w in L.itm_negative_weights(v, t, temp, valid, _G))
  for idx, w in ((ni, w_t2i), (nt, w_i2t)):
    for r in range(_B):
      if not valid[r]:
        continue
      gr, lr = divmod(r, _G)
      p = w[gr, lr] / w[gr, lr].sum()
      freq = np.bincount(idx[:, r] - gr * _G, minlength=_G) / _N
      np.testing.assert_allclose(freq, p, atol=0.025)  # ≈ 4.5 σ of a frequency at N=8000


def test_itm_negatives_no_gradient():
  rng = np.random.default_rng(11)
  v, t = _normed(rng, 4, 3), _normed(rng, 4, 3)

  def f(a, b, tau):
    w1, w2 = L.itm_negative_weights(a, b, tau, jnp.ones(4), 4)
    return jnp.sum(w1) + jnp.sum(w2)

  for g in jax.grad(f, argnums=(0, 1, 2))(v, t, 0.1):
    assert not np.asarray(g).any()


def test_itm_negatives_group_size_must_divide():
  v = jnp.ones((6, 2))
  with pytest.raises(ValueError, match="group_size"):
    L.sample_itm_negatives(jax.random.key(0), v, v, 0.1, jnp.ones(6), 4)


# --- ITM loss ------------------------------------------------------------------------------------------
def _np_itm(lp, li, lt, valid=None, neg_valid_img=None, neg_valid_txt=None):
  """docs/reference.md §3.2 step 4 as written: the positive pairs (label 1), the (negative image, text) pairs and the
  (image, negative text) pairs (label 0), cross-entropy averaged over the entries that exist."""
  b = len(lp)
  valid, nvi, nvt = (np.ones(b) if m is None else np.asarray(m) for m in (valid, neg_valid_img, neg_valid_txt))
  entries = (
    [(lp[i], 1) for i in range(b) if valid[i]]
    + [(li[i], 0) for i in range(b) if valid[i] and nvi[i]]
    + [(lt[i], 0) for i in range(b) if valid[i] and nvt[i]]
  )
  if not entries:
    return 0.0
  return float(np.mean([-_np_log_softmax(np.asarray(x, np.float64))[y] for x, y in entries]))


def test_itm_loss_matches_numpy_reference():
  """Distinct logits per slot and per row and distinct masks, so that swapping the two negative slots,
  their masks, or the labels changes the value."""
  np.testing.assert_allclose(L.itm_loss(*(jnp.zeros((3, 2)),) * 3), math.log(2), rtol=1e-6)
  rng = np.random.default_rng(12)
  lp, li, lt = (rng.normal(scale=2.0, size=(4, 2)).astype(np.float32) + off for off in ([0, 1], [1, -1], [-2, 0]))
  valid = np.array([1, 1, 1, 0], np.float32)
  nvi = np.array([1, 0, 1, 1], np.float32)
  nvt = np.array([1, 1, 0, 1], np.float32)
  for args in [(), (valid, np.ones(4), np.ones(4)), (valid, nvi, nvt), (np.ones(4), nvi, nvt)]:
    np.testing.assert_allclose(L.itm_loss(lp, li, lt, *args), _np_itm(lp, li, lt, *args), rtol=1e-5)
  # the reference itself tells these apart
  ref = _np_itm(lp, li, lt, valid, nvi, nvt)
  assert (
    min(
      abs(ref - _np_itm(lp, li, lt, valid, nvt, nvi)),
      abs(ref - _np_itm(lp, lt, li, valid, nvi, nvt)),
      abs(ref - _np_itm(li, lp, lt, valid, nvi, nvt)),
    )
    > 1e-2
  )
  assert float(L.itm_loss(lp, li, lt, np.zeros(4), np.ones(4), np.ones(4))) == 0.0


# --- MLM -----------------------------------------------------------------------------------------------
def test_mlm_loss_matches_numpy_with_ignore_index():
  rng = np.random.default_rng(13)
  b, m, vocab = 3, 4, 7
  logits = rng.normal(size=(b, m, vocab)).astype(np.float32)
  labels = rng.integers(0, vocab, size=(b, m)).astype(np.int32)
  labels[0, 3] = labels[1, 2:] = -100
  valid = np.array([1, 1, 0], np.float32)
  loss, acc = L.mlm_loss(logits, labels, valid)
  logp = _np_log_softmax(logits.astype(np.float64))
  ce, hit = [], []
  for i in range(b):
    for j in range(m):
      if labels[i, j] != -100 and valid[i] > 0:
        ce.append(-logp[i, j, labels[i, j]])
        hit.append(logits[i, j].argmax() == labels[i, j])
  assert len(ce) == 5
  np.testing.assert_allclose(loss, np.mean(ce), rtol=1e-6)
  np.testing.assert_allclose(acc, np.mean(hit), rtol=1e-6)


def test_mlm_accuracy_and_zero_guard():
  logits = jnp.array([[[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]]])
  _, acc = L.mlm_loss(logits, jnp.array([[1, 2]]), jnp.ones(1))
  np.testing.assert_allclose(acc, 0.5)
  loss, acc = L.mlm_loss(logits, jnp.full((1, 2), -100), jnp.ones(1))
  assert float(loss) == 0.0 and float(acc) == 0.0
  g = jax.grad(lambda x: L.mlm_loss(x, jnp.full((1, 2), -100), jnp.ones(1))[0])(logits)
  assert np.isfinite(np.asarray(g)).all()


# --- boxes ---------------------------------------------------------------------------------------------
def test_cxcywh_to_xyxy():
  np.testing.assert_allclose(
    L.box_cxcywh_to_xyxy(jnp.array([[0.5, 0.5, 1.0, 1.0], [0.3, 0.6, 0.2, 0.4]])),
    [[0, 0, 1, 1], [0.2, 0.4, 0.4, 0.8]],
    atol=1e-7,
  )


def test_generalized_iou_hand_values():
  a = jnp.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 2, 2]], jnp.float32)
  b = jnp.array([[0, 0, 1, 1], [2, 0, 3, 1], [0.5, 0.5, 1.5, 1.5], [1, 1, 3, 3]], jnp.float32)
  # identical → 1; disjoint: IoU 0, U=2, C=3 → −1/3; nested: IoU ¼, C=U → ¼;
  # overlapping: I=1, U=7, C=9 → 1/7 − 2/9
  np.testing.assert_allclose(L.generalized_iou(a, b), [1.0, -1 / 3, 0.25, 1 / 7 - 2 / 9], rtol=1e-6)
  np.testing.assert_allclose(L.generalized_iou(b, a), L.generalized_iou(a, b), rtol=1e-6)


def test_box_losses_mask_is_image_and_valid():
  pred = jnp.array(
    [
      [0.5, 0.5, 0.2, 0.2],  # region, counted
      [0.1, 0.1, 0.1, 0.1],  # whole-image caption, ignored
      [0.9, 0.9, 0.1, 0.1],  # padding, ignored
      [0.5, 0.5, 0.4, 0.4],
    ]
  )  # region, counted
  target = jnp.array([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.2, 0.2]])
  is_image = jnp.array([0, 1, 0, 0])
  valid = jnp.array([1, 1, 0, 1.0])
  l_bbox, l_giou = L.box_losses(pred, target, is_image, valid)
  # row 0 exact (L1 0, GIoU 1); row 3: L1 = 0.4, nested box with IoU 0.04/0.16 = 0.25, C=U → 1−0.25
  np.testing.assert_allclose(l_bbox, (0 + 0.4) / 2, rtol=1e-6)
  np.testing.assert_allclose(l_giou, (0 + 0.75) / 2, rtol=1e-6)


def test_box_losses_zero_valid_guard():
  pred = jnp.full((3, 4), 0.5)
  target = jnp.zeros((3, 4))  # degenerate boxes too
  for is_image, valid in ((jnp.ones(3), jnp.ones(3)), (jnp.zeros(3), jnp.zeros(3))):
    (lb, lg) = L.box_losses(pred, target, is_image, valid)
    assert float(lb) == 0.0 and float(lg) == 0.0
    g = jax.grad(lambda p: sum(L.box_losses(p, target, is_image, valid)))(pred)
    assert np.isfinite(np.asarray(g)).all() and not np.asarray(g).any()


def test_clamp_temperature():
  np.testing.assert_allclose(L.clamp_temperature(jnp.array([1e-5, 0.07, 3.0])), [0.001, 0.07, 0.5])
