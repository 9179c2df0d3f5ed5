"""Weight-only quantized Linear at a few rows (decode: one token, batch 1..4) as a hand-scheduled kernel.

At batch 1 a Linear reads each weight once: its speed is how fast the packed codes stream through the core. The
generic path (:func:`edgec.api.relax._dequant_te`, scheduled by :mod:`.schedule`) dequantizes every element
(``((c - zp) * s + offset) * x``: a subtraction, a multiply and a scale load per weight) and reads the codes
input-major (``[K / 2, N]``: a row of K is a different page every few output columns). Here:

- the codes are re-laid out at compile time in column tiles ``[N / T, K / per byte, T]`` (T = NB x vector
  width): one tile's codes, scales and zero points are contiguous, read once in order;
- the group's scale and offset leave the inner loop:
  ``sum_k x_k ((c_k - z) s + o) = s sum_k x_k (c_k - z) + o sum_k x_k`` per group of K, with ``sum_k x_k``
  computed once per row and group; the inner loop is the code (minus an integer zero point) widened to float and
  one FMA. The zero point stays inside (an integer subtraction): taken out as ``z sum_k x_k``, the two large sums
  cancel (measured 30x the float reference's error at K = 128);
- a signed nibble is decoded as 16 x code by a byte AND (high nibble) or byte shift (low nibble) and a
  sign-extending widen, the 1/16 applied with the group's scale (a power of two: exact).

The products and sums are those of the dequantized weight, reassociated by group: a float matmul's rounding
(verify's float tolerance), not an integer identity. llama.cpp's own kernels factor the offset (``dmin * m``) the
same way. The kernel is a matmul reduction, compiled with FMA
(:data:`.schedule.GEMM_KERNEL`). Other shapes (more rows: prefill; vector codebooks; a width no vector divides)
keep the generic path.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ...api.relax import RelaxBuilder, codes_per_byte, pack_codes, safe_name
from ...ir import DType, Model, Node, QuantizedTensor, Value
from .schedule import GEMM_KERNEL

# at most this many rows (M = product of the leading dimensions): the accumulators are M x NB vectors
MAX_ROWS = 4
_ACCUMULATORS = 16
_AFFINE = ("symmetric", "asymmetric", "affine")


def _grid(q: QuantizedTensor) -> dict[str, np.ndarray]:
    """The weight's scales, zero points and offsets (those it has), each as float32 ``[N, G]``: one column per group
    of K (G = 1 per channel), broadcast where a parameter is shared across rows or groups."""
    n = q.shape[0]
    params = {k: np.asarray(p, np.float32) for k, p in (("s", q.scales), ("z", q.zero_points), ("o", q.offsets))}
    flat = {k: a.reshape(a.shape[0], -1) for k, a in params.items() if a is not None and a.ndim}
    groups = max(a.shape[1] for a in flat.values())
    return {k: np.broadcast_to(a, (n, groups)) for k, a in flat.items()}


def gemv_plan(q: QuantizedTensor, m: int, lanes: int) -> tuple[int, int, int] | None:
    """(codes per byte, K per group, tile blocks NB) for a weight this kernel computes at ``m`` rows, else None."""
    if q.scheme not in _AFFINE or q.codes.ndim != 2 or q.axis not in (0, None) or m > MAX_ROWS or lanes < 4:
        return None
    if q.group_size and q.group_axis != 1 or q.scales is None:
        return None
    n, k = q.shape
    grid = _grid(q)
    groups = grid["s"].shape[1]
    if n % lanes or k % groups:
        return None
    if "z" in grid and not np.array_equal(grid["z"], np.round(grid["z"])):
        return None  # a fractional zero point: (c - z) is not an integer subtraction
    per_byte = codes_per_byte(q)
    gk = k // groups
    if gk % per_byte:
        return None
    nb = next(b for b in (4, 3, 2, 1) if (n // lanes) % b == 0 and m * b <= _ACCUMULATORS)
    return per_byte, gk, nb


def _tiles(a: np.ndarray, t: int) -> np.ndarray:
    """``[N, X]`` -> ``[N / t, X, t]``: each column tile's values contiguous, K-major inside the tile."""
    n, x = a.shape
    return np.ascontiguousarray(a.reshape(n // t, t, x).transpose(0, 2, 1))


def gemv_constants(q: QuantizedTensor, t: int) -> list[np.ndarray]:
    """The kernel's constants: packed codes ``[N/t, K/per byte, t]`` (as :func:`pack_codes` stores them), scales
    ``[N/t, G, t]`` float32, then the zero points (int32) and the offsets (float32) where the scheme has them."""
    packed, _ = pack_codes(q)
    if q.signed:
        packed = packed.view(np.int8)  # two's complement nibbles, read as signed bytes
    grid = _grid(q)
    consts = [_tiles(packed, t), _tiles(grid["s"], t)]
    if "z" in grid:
        consts.append(_tiles(grid["z"].astype(np.int32), t))
    if "o" in grid:
        consts.append(_tiles(grid["o"], t))
    return consts


def gemv_kernel(
    m: int, n: int, k: int, per_byte: int, gk: int, nb: int, lanes: int, signed: bool, has_z: bool, has_o: bool
) -> Any:
    """The scheduled PrimFunc ``(x [m, k], codes, scales[, z][, offsets], out [m, n])``."""
    from tvm import s_tir, te, tirx

    t = nb * lanes
    groups = k // gk
    X = te.placeholder((m, k), "float32", name="X")
    P = te.placeholder((n // t, k // per_byte, t), "int8" if signed else "uint8", name="P")
    S = te.placeholder((n // t, groups, t), "float32", name="S")
    Z = te.placeholder((n // t, groups, t), "int32", name="Z") if has_z else None
    O = te.placeholder((n // t, groups, t), "float32", name="O") if has_o else None
    # signed nibbles are decoded as 16 x code (the byte's high nibble with the low one cleared, the low one shifted
    # up: a sign-extending byte widen, no shift back); 1/16 is applied with the scale, exactly
    unit = 16.0 if per_byte == 2 and signed else 1.0

    def code(j: Any, g: Any, kk: Any, half: Any = None) -> Any:
        """(c - z) (times ``unit``) of column j at byte row kk, the low (half = 0) or high nibble."""
        b = P[j // t, kk, j % t]
        if per_byte == 2:
            if signed:
                b = tirx.Select(
                    half == 0, tirx.shift_left(b, tirx.const(4, "int8")), tirx.bitwise_and(b, tirx.const(-16, "int8"))
                )
            else:
                b = tirx.Select(half == 0, tirx.bitwise_and(b, tirx.const(15, "uint8")), tirx.shift_right(b, 4))
        v = b.astype("int32")
        if Z is not None:
            v = v - Z[j // t, g, j % t]
        return v.astype("float32")

    if per_byte == 1:
        r = te.reduce_axis((0, gk), "r")
        inner = te.compute(
            (m, groups, n), lambda i, g, j: te.sum(X[i, g * gk + r] * code(j, g, g * gk + r), axis=r), name="inner"
        )
    else:
        rp = te.reduce_axis((0, gk // 2), "rp")
        rh = te.reduce_axis((0, 2), "rh")
        inner = te.compute(
            (m, groups, n),
            lambda i, g, j: te.sum(X[i, g * gk + rp * 2 + rh] * code(j, g, g * (gk // 2) + rp, rh), axis=[rp, rh]),
            name="inner",
        )
    xs = None
    if O is not None:
        rx = te.reduce_axis((0, gk), "rx")
        xs = te.compute((m, groups), lambda i, g: te.sum(X[i, g * gk + rx], axis=rx), name="xs")
    rg = te.reduce_axis((0, groups), "rg")

    def term(i: Any, j: Any) -> Any:
        at = (j // t, rg, j % t)
        v = S[at] * inner[i, rg, j]
        if unit != 1.0:
            v = v * tirx.const(1.0 / unit, "float32")
        if O is not None and xs is not None:
            v = v + O[at] * xs[i, rg]
        return v

    out = te.compute((m, n), lambda i, j: te.sum(term(i, j), axis=rg), name="out")
    params = [X, P, S] + [p for p in (Z, O) if p is not None]
    sch = s_tir.Schedule(te.create_prim_func([*params, out]))
    ob = sch.get_sblock("out")
    i, j, g = sch.get_loops(ob)
    jo, jb, jv = sch.split(j, [None, nb, lanes])
    sch.reorder(jo, g, i, jb, jv)
    sch.parallel(jo)
    ib = sch.get_sblock("inner")
    sch.compute_at(ib, g)
    # the loops compute_at made under g: [i (omitted when m = 1)] j, then K within the group (pairs of nibbles)
    outer = {sch.get(lp) for lp in sch.get_loops(ob)[:2]}  # jo, g
    below = [lp for lp in sch.get_loops(ib) if sch.get(lp) not in outer]
    red = below[-(2 if per_byte == 2 else 1) :]
    ii = below[0] if len(below) == len(red) + 2 else None
    ijb, ijv = sch.split(below[len(below) - len(red) - 1], [nb, lanes])
    sch.reorder(*red, *([ii] if ii is not None else []), ijb, ijv)
    if per_byte == 2:
        sch.unroll(red[1])
    first = red[0]
    sch.vectorize(ijv)  # before the zeroing is split off: a vectorized loop's block must be a whole reduction
    sch.unroll(ijb)
    if ii is not None:
        sch.unroll(ii)
    sch.decompose_reduction(ib, first)
    sch.set_scope(ib, 0, "local")
    sch.vectorize(jv)
    sch.unroll(jb)
    sch.unroll(i)
    sch.decompose_reduction(ob, g)
    return sch.mod["main"]


def lower_gemv(b: RelaxBuilder, n: Node, lanes: int) -> bool:
    """Lower ``n`` (an edgec Linear) with :func:`gemv_kernel` when its weight and shape fit (:func:`gemv_plan`);
    sets ``b.env`` and returns True, else False (the generic lowering runs)."""
    if n.qualified_op != "edgec::Linear" or len(n.inputs) < 2:
        return False
    x, w = cast(Value, n.inputs[0]), cast(Value, n.inputs[1])
    q = w.const
    xs = x.static_shape
    if not isinstance(q, QuantizedTensor) or xs is None or x.dtype != DType.FLOAT32 or q.codebook is not None:
        return False
    m = int(np.prod(xs[:-1]))
    fit = gemv_plan(q, m, lanes)
    if fit is None:
        return False
    per_byte, gk, nb = fit
    N, K = q.shape
    consts = gemv_constants(q, nb * lanes)
    f = gemv_kernel(m, N, K, per_byte, gk, nb, lanes, q.signed, q.zero_points is not None, q.offsets is not None)
    f = f.without_attr("global_symbol").with_attrs({GEMM_KERNEL: True, "op_pattern": 8, "tirx.is_scheduled": True})
    gv = b.bb.add_func(f, f"gemv_{q.bits}b_{safe_name(n.name)}")
    relax = b.relax
    op = relax.op
    x2 = b.get(x)
    if list(xs) != [m, K]:  # a reshape is a copy kernel here, and a launch of the thread pool
        x2 = b.emit(op.reshape(x2, [m, K]))
    args = [x2] + [relax.const(c, str(c.dtype)) for c in consts]
    y = b.emit(relax.call_tir(gv, relax.Tuple(args), relax.TensorType([m, N], "float32")))
    bias = n.inputs[2] if len(n.inputs) > 2 else None
    if bias is not None:
        y = b.emit(op.add(y, b.get(bias)))
    o = n.outputs[0]
    if list(xs[:-1]) != [m]:
        y = b.emit(op.reshape(y, list(xs[:-1]) + [N]))
    b.env[id(o)] = b.fake_quant(y, o) if o.quant is not None else y
    return True


class CpuBuilder(RelaxBuilder):
    """The cpu target's Relax builder: weight-only quantized Linear layers at decode shapes as :func:`gemv_kernel`.

    ``lanes``: float32 lanes of the target's vector registers (16 with AVX-512, 8 with AVX2, 4 with NEON); 0 when the
    module is not scheduled (every kernel stays as Relax legalizes it)."""

    def __init__(self, model: Model, lanes: int, fallback_ops: frozenset[str] | None = None):
        super().__init__(model, fallback_ops=fallback_ops)
        self.lanes = lanes

    def lower_special(self, n: Node) -> bool:
        return self.lanes > 0 and lower_gemv(self, n, self.lanes)
