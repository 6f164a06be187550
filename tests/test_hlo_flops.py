"""x2vlm_jax/hlo_flops.py: matmul FLOPs of a compiled program with loops counted per trip, checked
against hand formulas (2 × output elements × contracted elements) on programs whose matmuls are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from x2vlm_jax import hlo_flops


def _count(fn, *args):
  return hlo_flops.compiled_flops(jax.jit(fn).lower(*args).compile())


def _arrays(*shapes):
  rng = np.random.default_rng(0)
  return [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]


def test_two_matmuls_are_counted_by_the_formula():
  x, w1, w2 = _arrays((8, 16), (16, 32), (32, 4))
  got = _count(lambda x, a, b: jnp.tanh(x @ a) @ b, x, w1, w2)
  assert got.flops == 2 * 8 * 16 * 32 + 2 * 8 * 32 * 4
  assert got.loops == () and got.unknown_trip_loops == 0


def test_a_scan_counts_its_body_once_per_layer_where_cost_analysis_counts_it_once():
  layers = 5
  x, w = _arrays((8, 16), (layers, 16, 16))

  def stack(x, w):
    return jax.lax.scan(lambda h, wi: (jnp.tanh(h @ wi), None), x, w)[0]

  compiled = jax.jit(stack).lower(x, w).compile()
  got = hlo_flops.compiled_flops(compiled)
  per_layer = 2 * 8 * 16 * 16
  assert got.flops == layers * per_layer
  assert [n for _, n in got.loops] == [layers]
  # The reason this module exists: XLA's own count sees the loop body once.
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  assert float(cost["flops"]) < 2 * per_layer


def test_gradient_of_a_scan_is_three_matmuls_per_layer_and_equals_the_unrolled_program():
  layers = 4
  x, w = _arrays((8, 16), (layers, 16, 16))

  def scanned(w, x):
    return jnp.sum(jax.lax.scan(lambda h, wi: (jnp.tanh(h @ wi), None), x, w)[0])

  def unrolled(w, x):
    h = x
    for i in range(layers):
      h = jnp.tanh(h @ w[i])
    return jnp.sum(h)

  # Forward h @ w, backward dh @ wᵀ and hᵀ @ dh: three matmuls of 8 × 16 × 16 per layer. The first
  # layer's input gradient is not needed (x is not differentiated): the unrolled program drops it, the
  # loop body (one program for every layer) may compute it for the first layer too.
  per = 2 * 8 * 16 * 16
  want = layers * 3 * per - per
  assert _count(jax.grad(unrolled), w, x).flops == want
  assert _count(jax.grad(scanned), w, x).flops in (want, want + per)


def test_nested_loops_multiply_their_trip_counts():
  x, w = _arrays((8, 16), (3, 4, 16, 16))

  def nested(x, w):
    def outer(h, wo):
      return jax.lax.scan(lambda g, wi: (jnp.sin(g @ wi), None), h, wo)[0], None

    return jax.lax.scan(outer, x, w)[0]

  got = _count(nested, x, w)
  assert got.flops == 3 * 4 * 2 * 8 * 16 * 16
  assert sorted(n for _, n in got.loops) == [3, 4]


def test_patch_convolution_is_counted_by_its_window_and_features():
  # The ViT patch embedding: 8×8 patches of a 32×32 RGB image to 24 features, stride 8.
  x, k = _arrays((2, 32, 32, 3), (8, 8, 3, 24))

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (8, 8), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  assert _count(conv, x, k).flops == 2 * (2 * 4 * 4 * 24) * (8 * 8 * 3)


def test_strided_padded_dilated_convolution_counts_only_taps_on_data_as_xla_does():
  """Padding and input dilation put holes under the window: only taps that land on input elements are
  multiply-adds (TPU writes attention's batched matmuls as such convolutions). XLA's own count of a
  program holding nothing but the convolution is the reference here."""
  x, k = _arrays((2, 9, 7, 3), (3, 2, 3, 5))

  def conv(x, k):
    return jax.lax.conv_general_dilated(
      x,
      k,
      (2, 1),
      ((1, 2), (0, 1)),
      lhs_dilation=(3, 2),
      rhs_dilation=(1, 2),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )

  compiled = jax.jit(conv).lower(x, k).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  got = hlo_flops.compiled_flops(compiled).flops
  assert got == float(cost["flops"])
  assert got < 2 * (2 * 13 * 12 * 5) * (3 * 2 * 3)  # fewer than every output × the whole window


def test_valid_taps_equal_a_brute_force_enumeration():
  """The per-dimension count of (output, tap) pairs on data, in closed form, against enumerating every
  pair over strides, paddings (negative too) and dilations that share factors or not."""

  def brute(out_size, in_size, k, stride, pad_lo, lhs_dilate, rhs_dilate):
    last = (in_size - 1) * lhs_dilate
    return sum(
      1
      for o in range(out_size)
      for t in range(k)
      if 0 <= o * stride + t * rhs_dilate - pad_lo <= last and (o * stride + t * rhs_dilate - pad_lo) % lhs_dilate == 0
    )

  rng = np.random.default_rng(0)
  for _ in range(3000):
    args = (
      int(rng.integers(1, 40)),
      int(rng.integers(1, 30)),
      int(rng.integers(1, 12)),
      int(rng.integers(1, 7)),
      int(rng.integers(-6, 12)),
      int(rng.integers(1, 7)),
      int(rng.integers(1, 5)),
    )
    assert hlo_flops._valid_taps(*args) == brute(*args), args


# Hand-written HLO: the forms the CPU backend does not print (TPU tiled layouts, a cuBLAS matmul, a
# conditional, a loop without a recorded trip count).
_HLO = """HloModule jit_f, entry_computation_layout={()->f32[]}

%fused_dot (p0: bf16[8,64], p1: bf16[64,32]) -> bf16[8,32] {
  %p0 = bf16[8,64]{1,0:T(8,128)(2,1)} parameter(0)
  %p1 = bf16[64,32]{1,0:T(8,128)(2,1)} parameter(1)
  ROOT %dot.1 = bf16[8,32]{1,0:T(8,128)(2,1)} dot(bf16[8,64]{1,0:T(8,128)(2,1)} %p0, bf16[64,32]{1,0:T(8,128)(2,1)} %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%body (arg: (s32[], f32[4,10])) -> (s32[], f32[4,10]) {
  %arg = (s32[], f32[4,10]) parameter(0)
  %h = f32[4,10]{1,0} get-tuple-element(%arg), index=1
  %w = f32[10,10]{1,0} constant({...})
  %gemm = (f32[4,10]{1,0}, s8[0]{0}) custom-call(f32[4,10]{1,0} %h, f32[10,10]{1,0} %w), custom_call_target="__cublas$gemm", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}
  %v = f32[10,6]{1,0} constant({...})
  %lt = (f32[4,6]{1,0}, s8[4194304]{0}) custom-call(f32[4,10]{1,0} %h, f32[10,6]{1,0} %v), custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}
  %solve = f32[4,10]{1,0} custom-call(f32[4,4]{1,0} %t, f32[4,10]{1,0} %h), custom_call_target="__cublas$triangularSolve"
  ROOT %t = (s32[], f32[4,10]) tuple(%i, %h)
}

%cond (arg: (s32[], f32[4,10])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

%cond5 (arg: (s32[], f32[4,10])) -> pred[] {
  %five = s32[]{:T(128)} constant(5)
  %arg = (s32[]{:T(128)}, f32[4,10]) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%arg), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i, %five), direction=LT
}

%body_by2 (arg: (s32[], f32[4,10])) -> (s32[], f32[4,10]) {
  %arg = (s32[], f32[4,10]) parameter(0)
  %i = s32[] get-tuple-element(%arg), index=0
  %h = f32[4,10]{1,0} get-tuple-element(%arg), index=1
  %w = f32[10,10]{1,0} constant({...})
  %d = f32[4,10]{1,0} dot(%h, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %two = s32[] constant(2)
  %next = s32[] add(%i, %two)
  ROOT %t = (s32[], f32[4,10]) tuple(%next, /*index=1*/%d)
}

%body_by1 (arg: (s32[], f32[4,10])) -> (s32[], f32[4,10]) {
  %arg = (s32[], f32[4,10]) parameter(0)
  %i = s32[] get-tuple-element(%arg), index=0
  %h = f32[4,10]{1,0} get-tuple-element(%arg), index=1
  %w = f32[10,10]{1,0} constant({...})
  %d = f32[4,10]{1,0} dot(%h, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %one = s32[] constant(1)
  %next = s32[] add(%one, %i)
  ROOT %t = (s32[], f32[4,10]) tuple(%next, %d)
}

%cheap (a: f32[2,3], b: f32[3,5]) -> f32[2,5] {
  ROOT %d = f32[2,5]{1,0} dot(f32[2,3]{1,0} %a, f32[3,5]{1,0} %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%dear (a: f32[2,3], b: f32[3,5]) -> f32[2,5] {
  %e = f32[2,5]{1,0} dot(f32[2,3]{1,0} %a, f32[3,5]{1,0} %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %d = f32[2,5]{1,0} dot(f32[2,3]{1,0} %a, f32[3,5]{1,0} %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (x: bf16[8,64]) -> f32[] {
  %x = bf16[8,64]{1,0:T(8,128)(2,1)} parameter(0)
  %f = bf16[8,32]{1,0:T(8,128)(2,1)} fusion(bf16[8,64]{1,0:T(8,128)(2,1)} %x, bf16[64,32]{1,0} %y), kind=kOutput, calls=%fused_dot
  %lhs = bf16[4,5,6,1]{3,2,1,0} parameter(1)
  %rhs = bf16[6,2,3,1]{3,2,1,0} parameter(2)
  %rs = bf16[4,5,2,3]{3,2,1,0} convolution(%lhs, %rhs), window={size=1x2 pad=0_0x1_1 rhs_reversal=0x1}, dim_labels=b0f1_i1o0->b01f
  %w1 = (s32[], f32[4,10]) while((s32[], f32[4,10]) %init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"7"}}
  %w2 = (s32[], f32[4,10]) while((s32[], f32[4,10]) %init), condition=%cond, body=%body
  %w3 = (s32[], f32[4,10]) while((s32[], f32[4,10]) %init), condition=%cond5, body=%body
  %zero = s32[] constant(0)
  %three = s32[] constant(3)
  %start3 = s32[] copy(%three)
  %from0 = (s32[], f32[4,10]) tuple(%zero, %h0)
  %from3 = (s32[], f32[4,10]) tuple(%start3, %h0)
  %w4 = (s32[], f32[4,10]) while(%from0), condition=%cond5, body=%body_by2
  %w5 = (s32[], f32[4,10]) while((s32[], f32[4,10]) %from3), condition=%cond5, body=%body_by1
  %c = f32[2,5]{1,0} conditional(s32[] %i, f32[2,3] %a, f32[3,5] %b), branch_computations={%cheap, %dear}
  ROOT %r = f32[] constant(0)
}
"""  # noqa: E501 (HLO lines as XLA prints them)


def test_hand_written_hlo_tpu_layouts_cublas_conditional_and_trip_counts():
  got = hlo_flops.count(_HLO)
  tpu_dot = 2 * 8 * 32 * 64
  gemm = 2 * 4 * 10 * 10 + 2 * 4 * 6 * 10  # cuBLAS gemm + cuBLASLt matmul (the triangular solve is no matmul)
  branch = 2 * 2 * 5 * 3
  # TPU's reduce-scatter einsum: window dimension 1 (size 2, padded 1 each side) is spatial "1", which the
  # kernel labels `i1o0` list first; over an input of 1 it has 2 valid (output, tap) pairs, spatial "0" 5.
  reduce_scatter = 2 * (4 * 3) * 6 * (5 * 2)
  # The loop with 7 recorded trips counts 7 gemms; the one whose condition is `i < 5` (TPU records no
  # trip count) 5; the one with neither counts 1 and is reported. `i < 5` from 0 by 2 (TPU's windowed
  # einsums step by 2) runs 3 times; from 3 (through a copy) by 1, twice.
  dot = 2 * 4 * 10 * 10
  assert got.flops == tpu_dot + reduce_scatter + 7 * gemm + 5 * gemm + 1 * gemm + 2 * branch + 3 * dot + 2 * dot
  assert got.unknown_trip_loops == 1
  assert got.loops == (("body", 5), ("body", 7), ("body_by1", 2), ("body_by2", 3))


def test_text_without_an_entry_is_refused():
  with pytest.raises(ValueError, match="ENTRY"):
    hlo_flops.count("HloModule m\n")
