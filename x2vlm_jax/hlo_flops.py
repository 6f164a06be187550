"""Matmul FLOPs per step of a compiled XLA program, with every while loop counted once per trip.

XLA's `compiled.cost_analysis()` walks each computation of the program once, so the body of a
`while` loop (a `jax.lax.scan` over layers) is counted once, not once per layer: a scanned model's
"FLOPs" then read about 1/L of the step's. This module reads the optimised HLO text instead
(`compiled.as_text()`), counts the FLOPs of every `dot` and `convolution` (2 × output elements ×
contracted elements; a convolution's contracted elements are its kernel's input features × window),
and multiplies each loop body by its trip count (`known_trip_count`, which XLA records for the
counted loops `lax.scan` / `fori_loop` lower to; where it is absent, as in TPU programs, from the loop
condition `i < N` against a constant). On GPUs the matmuls are cuBLAS custom calls
(`__cublas$gemm`, `__cublas$lt$matmul`; dimension numbers in their backend config): counted the same way. Fusions, calls
and loop bodies are followed recursively; a conditional counts its most expensive branch (an upper
bound: only one runs).

Why not a library: neither JAX nor XLA exposes a per-trip count for loops (the compiled object's cost
analysis is the one above), and the HLO text is the compiler's own account of what runs. Only matmuls
and convolutions are counted: they are ≥ 99 % of a transformer step's arithmetic (tests/test_hlo_flops.py
checks the count against hand formulas, and docs/performance.md against XLA's total on an unscanned step).
"""

import dataclasses
import math
import re
from typing import Dict, List, Optional, Tuple

# `name (params) -> result {` opens a computation; `ENTRY` marks the program's entry. The leading `%` of
# names is optional (XLA's printer has both forms).
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
# `name = <result type> opcode(operands), attributes`
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([\w\-]+)\((.*)$")
_ARRAY = re.compile(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]")
_BODY = re.compile(r"\bbody=%?([\w.\-]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")
_TRUE_FALSE = re.compile(r"\b(?:true|false)_computation=%?([\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)"?')


@dataclasses.dataclass
class _Computation:
  flops: float = 0.0
  # (callee, multiplier) for fusions / calls / loop bodies; conditionals as a list of alternatives.
  calls: List[Tuple[str, int]] = dataclasses.field(default_factory=list)
  branches: List[List[str]] = dataclasses.field(default_factory=list)
  # while loops: (body, condition, trip count if XLA recorded it, the name of the initial tuple)
  loops: List[Tuple[str, str, Optional[int], str]] = dataclasses.field(default_factory=list)
  # a loop condition `i < N` (ROOT compare, direction=LT, against a scalar integer constant): N, and the
  # index of `i` in the loop's tuple
  bound: Optional[int] = None
  induction: Optional[int] = None
  # What a loop's step and start are read from: scalar integer constants, tuple-element reads, adds,
  # copies/bitcasts/converts (one operand), tuples, and the ROOT tuple's operands — by instruction name.
  constants: Dict[str, int] = dataclasses.field(default_factory=dict)
  elements: Dict[str, int] = dataclasses.field(default_factory=dict)
  adds: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
  copies: Dict[str, str] = dataclasses.field(default_factory=dict)
  tuples: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
  root: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class FlopCount:
  """`flops`: matmul + convolution FLOPs of one call of the program (per device for an SPMD program),
  loops counted per trip. `loops`: the while loops that do matmuls, with their trip counts. `unknown_trip_loops`:
  loops whose trip count is neither recorded by XLA nor readable from their condition (counted once
  each: the figure is then a lower bound)."""

  flops: float
  loops: Tuple[Tuple[str, int], ...]
  unknown_trip_loops: int


def _dims(text: str) -> List[int]:
  return [int(d) for d in text.split(",") if d]


def _int_set(attrs: str, key: str) -> List[int]:
  m = re.search(rf"\b{key}=\{{([0-9,]*)\}}", attrs)
  return _dims(m.group(1)) if m else []


def _operand_arrays(rest: str, shapes: Dict[str, List[int]]) -> List[List[int]]:
  """Shapes of the operands, in order. `rest` starts after the opcode's `(`. An operand is printed with
  its type (`f32[8,16]{1,0} %x`) or by name only (`%x`: looked up in `shapes`, the computation's
  instructions so far); layouts may hold parentheses and commas (TPU tiles: `{1,0:T(8,128)}`)."""
  depth, start, operands = 0, 0, []
  for i, ch in enumerate(rest + ")"):
    if ch in "([{":
      depth += 1
    elif ch in ")]}" and depth > 0:
      depth -= 1
    elif (ch == "," and depth == 0) or (ch == ")" and depth == 0):
      operands.append(rest[start:i].strip())
      start = i + 1
      if ch == ")":
        break
  out = []
  for text in operands:
    typed = _ARRAY.search(text)
    out.append(_dims(typed.group(2)) if typed else shapes.get(text.split()[-1].lstrip("%"), []) if text else [])
  return out


def dot_flops(result_dims: List[int], lhs_dims: List[int], lhs_contracting: List[int]) -> float:
  """2 × output elements × contracted elements (one multiply and one add per term)."""
  return 2.0 * math.prod(result_dims) * math.prod(lhs_dims[i] for i in lhs_contracting)


def _window(attrs: str) -> Dict[str, List]:
  """`window={size=3x3 stride=2x2 pad=1_1x0_0 lhs_dilate=1x1 rhs_dilate=1x1}` → per-dimension lists."""
  m = re.search(r"\bwindow=\{([^}]*)\}", attrs)
  out: Dict[str, List] = {}
  for item in m.group(1).split() if m else []:
    key, value = item.split("=")
    out[key] = [tuple(int(p) for p in v.split("_")) if key == "pad" else int(v) for v in value.split("x")]
  return out


def _valid_taps(out_size: int, in_size: int, k: int, stride: int, pad_lo: int, lhs_dilate: int, rhs_dilate: int) -> int:
  """(output position, window tap) pairs of one spatial dimension that land on an input element (not
  on padding nor on a hole of the dilated input). Tap t of output o reads position o·stride + c with
  c = t·rhs_dilate − pad_lo; it is valid when 0 ≤ position ≤ (in_size − 1)·lhs_dilate and the position is
  a multiple of lhs_dilate. Per tap that is a range of o intersected with a congruence class, counted in
  closed form (TPU windows run to thousands of taps over thousands of outputs)."""
  last = (in_size - 1) * lhs_dilate
  count = 0
  for t in range(k):
    c = t * rhs_dilate - pad_lo
    lo = max(0, -(c // stride))  # smallest o with o·stride + c ≥ 0
    hi = min(out_size - 1, (last - c) // stride)  # largest o with o·stride + c ≤ last
    if hi < lo:
      continue
    # o·stride ≡ −c (mod lhs_dilate): solvable iff gcd divides −c; then o ≡ o0 (mod lhs_dilate / gcd).
    g = math.gcd(stride, lhs_dilate)
    if c % g:
      continue
    m = lhs_dilate // g
    o0 = (-c // g) * pow(stride // g, -1, m) % m if m > 1 else 0
    count += (hi - o0) // m - (lo - 1 - o0) // m
  return count


def convolution_flops(
  result_dims: List[int], lhs_dims: List[int], kernel_dims: List[int], dim_labels: str, window: Dict
) -> float:
  """2 × (batch × output features) × input features per group × the valid (output, tap) pairs of
  each spatial dimension. A dense convolution has out_size × window taps per dimension; TPU lowers a
  batched matmul (attention's QKᵀ, PV) to a convolution whose batch dimensions are windows over a
  dilated input, where only one tap per output lands on data."""
  lhs_labels, rest = dim_labels.split("_")
  rhs_labels, out_labels = rest.split("->")
  # Window dimension j is spatial dimension "j", whatever the order of the labels in the kernel (TPU
  # prints e.g. `i1o0`): by number, not by position.
  spatial = sorted((c for c in rhs_labels if c not in "io"), key=int)
  features_in = kernel_dims[rhs_labels.index("i")]
  non_spatial_out = math.prod(result_dims[i] for i, c in enumerate(out_labels) if c in "bf")
  taps = 1
  for j, c in enumerate(spatial):
    get = lambda key, default, j=j: window.get(key, [default] * len(spatial))[j]  # noqa: E731
    taps *= _valid_taps(
      result_dims[out_labels.index(c)],
      lhs_dims[lhs_labels.index(c)],
      kernel_dims[rhs_labels.index(c)],
      get("stride", 1),
      get("pad", (0, 0))[0],
      get("lhs_dilate", 1),
      get("rhs_dilate", 1),
    )
  return 2.0 * non_spatial_out * features_in * taps


# cuBLAS (`__cublas$gemm`) and cuBLASLt (`__cublas$lt$matmul`, `...$f8`) matmuls; not its triangular solve.
_CUBLAS_MATMUL = re.compile(r'custom_call_target="__cublas\$(?:gemm|lt\$matmul)')
_CONDITION = re.compile(r"\bcondition=%?([\w.\-]+)")
_INT_CONSTANT = re.compile(r"^[su](?:8|16|32|64)$")


def _parse(hlo_text: str) -> Tuple[Dict[str, _Computation], Optional[str]]:
  comps: Dict[str, _Computation] = {}
  entry = None
  current: Optional[_Computation] = None
  for line in hlo_text.splitlines():
    head = _COMPUTATION.match(line)
    if head:
      current = comps.setdefault(head.group(2), _Computation())
      shapes: Dict[str, List[int]] = {}
      constants = current.constants
      if head.group(1):
        entry = head.group(2)
      continue
    if current is None:
      continue
    if line.strip() == "}":
      current = None
      continue
    inst = _INSTRUCTION.match(line)
    if not inst:
      continue
    name, result_type, opcode, rest = inst.groups()
    result = _ARRAY.search(result_type)
    if result:
      shapes[name] = _dims(result.group(2))
      if opcode == "constant" and not result.group(2) and _INT_CONSTANT.match(result.group(1)):
        constants[name] = int(re.match(r"\s*(-?\d+)", rest).group(1))
    names = _operand_names(rest)
    if opcode == "get-tuple-element":
      current.elements[name] = int(re.search(r"\bindex=(\d+)", rest).group(1))
    elif opcode == "add" and len(names) == 2:
      current.adds[name] = names
    elif opcode in ("copy", "bitcast", "convert") and len(names) == 1:
      current.copies[name] = names[0]
    elif opcode == "tuple":
      current.tuples[name] = names
      if line.lstrip().startswith("ROOT"):
        current.root = names
    if opcode == "compare" and line.lstrip().startswith("ROOT") and "direction=LT" in rest:
      # A counted loop's condition: `i < N`. TPU's optimised HLO does not record known_trip_count; this
      # is where the count still is (with the step and start of `i`, read in `_trip_from_condition`).
      if len(names) == 2 and names[1] in constants:
        current.bound = constants[names[1]]
        current.induction = current.elements.get(names[0])
    if opcode == "dot" and result:
      operands = _operand_arrays(rest, shapes)
      current.flops += dot_flops(_dims(result.group(2)), operands[0], _int_set(rest, "lhs_contracting_dims"))
    elif opcode == "convolution" and result:
      operands = _operand_arrays(rest, shapes)
      labels = re.search(r"\bdim_labels=([\w>\-]+)", rest).group(1)
      current.flops += convolution_flops(_dims(result.group(2)), operands[0], operands[1], labels, _window(rest))
    elif opcode == "custom-call" and result and _CUBLAS_MATMUL.search(rest):
      # GPU: cuBLAS / cuBLASLt matmuls are custom calls; their dimension numbers are in the backend config.
      operands = _operand_arrays(rest, shapes)
      m = re.search(r'"lhs_contracting_dimensions"\s*:\s*\[([^\]]*)\]', rest)
      contracting = [int(d.strip().strip('"')) for d in m.group(1).split(",") if d.strip()] if m else []
      current.flops += dot_flops(_dims(result.group(2)), operands[0], contracting)
    if opcode == "while":
      trip = _TRIP.search(rest)
      condition = _CONDITION.search(rest)
      current.loops.append(
        (
          _BODY.search(rest).group(1),
          condition.group(1) if condition else "",
          int(trip.group(1)) if trip else None,
          names[0] if names else "",
        )
      )
    elif opcode == "conditional":
      branches = _BRANCHES.search(rest)
      names = [b.strip().lstrip("%") for b in branches.group(1).split(",")] if branches else _TRUE_FALSE.findall(rest)
      current.branches.append(names)
    elif opcode in ("fusion", "async-start", "custom-call"):
      current.calls.extend((c, 1) for c in re.findall(r"\bcalls=%?([\w.\-]+)", rest))
    elif opcode == "call":
      # (to_apply of a reduce / sort / scatter is a scalar combiner: no matmuls there, not followed.)
      current.calls.extend((c, 1) for c in re.findall(r"\b(?:calls|to_apply)=%?([\w.\-]+)", rest))
  return comps, entry


def _operand_names(rest: str) -> List[str]:
  """Operand names of an instruction, `rest` being the text after `opcode(`: `%a, %b` on TPU,
  `f32[2]{0} %a, (s32[], f32[4]) %t` on CPU (typed, tuple types nested), `/*index=5*/` comments."""
  rest = re.sub(r"/\*.*?\*/", "", rest)
  depth, start, names = 1, 0, []
  for i, ch in enumerate(rest):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    if depth == 0 or (ch == "," and depth == 1):
      token = rest[start:i].strip()
      if token:
        names.append(token.split()[-1].lstrip("%"))
      start = i + 1
      if depth == 0:
        break
  return names


def _constant_through_copies(comp: _Computation, name: str) -> Optional[int]:
  for _ in range(8):
    if name in comp.constants:
      return comp.constants[name]
    if name not in comp.copies:
      return None
    name = comp.copies[name]
  return None


def _trip_from_condition(caller: _Computation, body: _Computation, cond: _Computation, init: str) -> Optional[int]:
  """Trips of a loop whose condition is `i < N`: ⌈(N − start) / step⌉, the step read from the body's update
  of `i` (`i + c`; XLA's TPU windowed einsums step by 2) and the start from the loop's initial tuple (0
  where it is not a constant: a lax.scan's counter starts there)."""
  if cond.bound is None:
    return None
  step, start = 1, 0
  k = cond.induction
  if k is not None:
    update = body.root[k] if k < len(body.root) else None
    operands = body.adds.get(update, [])
    for i, j in ((0, 1), (1, 0)):
      if len(operands) == 2 and body.elements.get(operands[i]) == k:
        step = _constant_through_copies(body, operands[j]) or 1
    initial = caller.tuples.get(init, [])
    if k < len(initial):
      start = _constant_through_copies(caller, initial[k]) or 0
  if step <= 0:
    return None
  return max(0, -(-(cond.bound - start) // step))


def count(hlo_text: str) -> FlopCount:
  """Matmul FLOPs of one call of the program whose optimised HLO is `hlo_text` (see the module doc)."""
  comps, entry = _parse(hlo_text)
  if entry is None:
    raise ValueError("no ENTRY computation in this HLO text (pass compiled.as_text())")
  memo: Dict[str, Tuple[float, int]] = {}
  trips: List[Tuple[str, Optional[int]]] = []

  def visit(name: str, depth: int = 0) -> Tuple[float, int]:
    if name in memo:
      return memo[name]
    if depth > 200:
      raise ValueError(f"HLO call graph deeper than 200 at {name}")
    comp = comps.get(name)
    if comp is None:
      return 0.0, 0
    flops, unknown = comp.flops, 0
    for callee, times in comp.calls:
      f, u = visit(callee, depth + 1)
      flops += times * f
      unknown += u
    for body, condition, recorded, init in comp.loops:
      trip = recorded
      if trip is None and condition in comps and body in comps:
        trip = _trip_from_condition(comp, comps[body], comps[condition], init)
      f, u = visit(body, depth + 1)
      flops += (trip if trip is not None else 1) * f
      unknown += u + (trip is None)
      trips.append((body, trip))
    for names in comp.branches:
      alternatives = [visit(b, depth + 1) for b in names]
      if alternatives:
        flops += max(f for f, _ in alternatives)
        unknown += max(u for _, u in alternatives)
    memo[name] = (flops, unknown)
    return memo[name]

  flops, unknown = visit(entry)
  # Only the loops that do matmuls (the layer stacks); XLA also loops in RNG (threefry's rounds).
  loops = tuple(sorted((body, n) for body, n in trips if n is not None and visit(body)[0] > 0))
  return FlopCount(flops=flops, loops=loops, unknown_trip_loops=unknown)


def compiled_flops(compiled) -> FlopCount:
  """`count` of a `jax.stages.Compiled` (one device's program for an SPMD compile)."""
  return count(compiled.as_text())


def compiled_report(compiled) -> Dict[str, object]:
  """What the tools report side by side, per device: this module's count (`matmul_flops`, loops per
  trip, with the loops' trip counts) and XLA's cost analysis (`xla_flops`: every op, each loop body
  once; 0 where the backend has none, as a GPU compile without a device)."""
  matmuls = compiled_flops(compiled)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  return dict(
    matmul_flops=matmuls.flops,
    xla_flops=float(cost.get("flops", 0.0)),
    loop_trip_counts=[n for _, n in matmuls.loops],
    loops_without_trip_count=matmuls.unknown_trip_loops,
  )
