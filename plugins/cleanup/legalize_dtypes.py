"""legalize-dtypes: element types the target lacks, held in standard storage types with exact conversions.

ONNX has element types few runtimes take: the float8 variants (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ), E8M0,
FLOAT4E2M1, bfloat16, and the sub-byte integers INT4 / UINT4 / INT2 / UINT2. Models carry them at their edges
and through Cast / CastLike / QuantizeLinear / DequantizeLinear (FP8 and INT4 quantized models). For every such
type the target does not declare (``Capabilities.dtypes``), this pass

- holds each value of the type in its storage type (:attr:`edgec.ir.DType.storage`): a narrow float's or a
  bfloat16's bit pattern in uint8 / uint16, a sub-byte integer's value in int8 / uint8; constants are converted;
- rewrites the conversions into standard ops that compute exactly what onnx's reference computes:
  - *from* a narrow float or bfloat16: a lookup table indexed by the bits, whose entries are the reference's own
    conversion of every code;
  - *to* a narrow float or bfloat16 (from float32 / float16): a binary search of the input's magnitude among
    the thresholds where the reference's result changes, then a table of codes (one per sign). The thresholds
    are found by bisecting the reference's Cast over float32 bit patterns (``saturate`` and ``round_mode``
    included) and checked against it before use;
  - sub-byte integers: the stored value is the value; a float is truncated (out of range gives 0, as the
    reference does), an integer wraps;
  - QuantizeLinear / DequantizeLinear to / from these types: written out as the reference's arithmetic (per
    tensor, per axis, blocked) around those conversions.
- Data movement (Reshape, Transpose, Concat, Gather, Slice, ...) moves the stored elements as they are.

A value whose every producer and consumer is one of these is legalized; a group of such values touching any
other op (arithmetic on bfloat16, say) is left as it is, for the target's check to name: never computed on the
storage as if it were a number. A graph input or output that is legalized is fed and returned as its storage:
the model's metadata (:data:`STORAGE_KEY`) and the manifest name its type; :func:`edgec.ir.dtypes.to_storage`
and :func:`~edgec.ir.dtypes.from_storage` convert arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import ClassVar, cast

import numpy as np
import onnx

from ...ir import DType, Model, Node, Tensor, Value, infer_shapes
from ...ir.dtypes import STORAGE_KEY, code_range, from_storage, to_storage
from ...ir.passes import Pass, PassContext
from .decompose import Decompose, _Rewriter, rewriting_for, rule, target_arithmetic

EMULATED = (
    DType.FLOAT8E4M3FN,
    DType.FLOAT8E4M3FNUZ,
    DType.FLOAT8E5M2,
    DType.FLOAT8E5M2FNUZ,
    DType.FLOAT8E8M0,
    DType.FLOAT4E2M1,
    DType.BFLOAT16,
    DType.INT4,
    DType.UINT4,
    DType.INT2,
    DType.UINT2,
)
_INTS = (DType.INT4, DType.UINT4, DType.INT2, DType.UINT2)
# ops that move elements without reading them as numbers (the data inputs; index / shape inputs are standard)
MOVEMENT = frozenset(
    {
        "Identity",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Concat",
        "Split",
        "Slice",
        "Gather",
        "GatherElements",
        "GatherND",
        "Expand",
        "Tile",
        "Shape",
        "Size",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
CONVERSIONS = frozenset({"Cast", "CastLike", "QuantizeLinear", "DequantizeLinear"})
I64, F32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT


# ------------------------------------------------------------------------------------------------ the tables
def _reference_cast(x: np.ndarray, dtype: DType, saturate: bool, round_mode: str) -> np.ndarray:
    """onnx's reference Cast (the definition every rewrite here reproduces)."""
    from onnx.reference.ops.op_cast import cast_to

    with np.errstate(all="ignore"):
        # cast: the stubs type ``to`` as the TensorProto.DataType enum, whose values are these int codes
        return cast_to(x, cast("onnx.TensorProto.DataType", dtype.onnx), saturate, round_mode)


def _codes(dtype: DType) -> np.ndarray:
    """Every element of ``dtype``, as an array of that type, in code order."""
    n = 1 << (8 if dtype.is_narrow_float else 16)
    if dtype == DType.FLOAT4E2M1:
        n = 16
    return np.arange(n, dtype=np.int64).astype(dtype.storage.numpy).view(dtype.numpy)


@functools.lru_cache(maxsize=64)
def decode_table(dtype: DType, to: DType) -> np.ndarray:
    """The reference's conversion of every code of ``dtype`` (a narrow float or bfloat16) to ``to``."""
    return _reference_cast(_codes(dtype), to, True, "up").astype(to.numpy)


@dataclasses.dataclass(frozen=True)
class EncodeTable:
    """float32 -> ``dtype`` codes as the reference converts: on each sign, magnitudes from ``thresholds[k - 1]``
    up (to the next threshold) give ``codes[k]``; magnitudes below the first give ``codes[0]``."""

    thresholds: np.ndarray  # float32, strictly increasing
    pos_codes: np.ndarray  # int32, len(thresholds) + 1
    neg_codes: np.ndarray
    neg_thresholds: np.ndarray | None  # None: the negative side changes code at the same magnitudes
    nan_code: int
    signed_zero: bool  # -0.0 and +0.0 give different codes


def _magnitudes_to_codes(dtype: DType, sign: float, saturate: bool, round_mode: str):
    store = dtype.storage.numpy

    def f(u: np.ndarray) -> np.ndarray:  # float32 bit patterns of magnitudes -> codes (int64)
        x = u.astype(np.uint32).view(np.float32) * np.float32(sign)
        return _reference_cast(x, dtype, saturate, round_mode).view(store).astype(np.int64)

    return f


def _rank(dtype: DType, codes: np.ndarray, sign: float) -> np.ndarray:
    """An order of result codes along a sign's magnitudes: the decoded value times the sign, NaN last."""
    with np.errstate(invalid="ignore", over="ignore"):
        v = codes.astype(dtype.storage.numpy).view(dtype.numpy).astype(np.float64) * sign
    return np.where(np.isnan(v), np.inf, np.where(np.isinf(v), 1e300, v))


def _side(dtype: DType, sign: float, saturate: bool, round_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The thresholds (as float32 bit patterns, increasing) where the code changes along one sign's magnitudes
    0 .. +inf, and the code from each on (first entry: the code at magnitude 0). The results are ordered by
    their value times the sign (a sign-magnitude format) or by their value (E8M0, which ignores the sign)."""
    f = _magnitudes_to_codes(dtype, sign, saturate, round_mode)
    top = int(np.uint32(0x7F800000))  # +inf
    for order in (sign, -sign):
        candidates = np.unique(_rank(dtype, np.arange(len(_codes(dtype)), dtype=np.int64), order))
        lo = np.zeros(len(candidates), np.int64)
        hi = np.full(len(candidates), top + 1, np.int64)  # top + 1: no magnitude reaches the rank
        for _ in range(33):  # smallest u with rank(f(u)) >= candidate, per candidate (bisection)
            mid = (lo + hi) // 2
            ok = (_rank(dtype, f(np.minimum(mid, top)), order) >= candidates) & (mid <= top)
            hi = np.where(ok, mid, hi)
            lo = np.where(ok, lo, mid + 1)
        reach = hi <= top
        t, cand = hi[reach], candidates[reach]
        t = np.unique(t[_rank(dtype, f(t), order) == cand])
        if len(t) and t[0] == 0:
            return t, f(t)
    raise AssertionError(f"legalize-dtypes: the reference's {dtype.short} conversion is not monotonic in the magnitude")


@functools.lru_cache(maxsize=64)
def encode_table(dtype: DType, saturate: bool = True, round_mode: str = "up") -> EncodeTable:
    """The thresholds and codes of :class:`EncodeTable`, found on the reference and checked against it."""
    pt, pc = _side(dtype, 1.0, saturate, round_mode)
    nt, nc = _side(dtype, -1.0, saturate, round_mode)
    nan = int(_reference_cast(np.array([np.nan], np.float32), dtype, saturate, round_mode).view(dtype.storage.numpy)[0])
    tab = EncodeTable(
        pt[1:].astype(np.uint32).view(np.float32),
        pc.astype(np.int32),
        nc.astype(np.int32),
        None if np.array_equal(pt, nt) else nt[1:].astype(np.uint32).view(np.float32),
        nan,
        bool(pc[0] != nc[0]),
    )
    _check(dtype, saturate, round_mode, tab)
    return tab


def encode_numpy(x: np.ndarray, dtype: DType, tab: EncodeTable) -> np.ndarray:
    """What the rewritten graph computes, in numpy (for the self-check and tests)."""
    x = np.asarray(x, np.float32)
    a = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        neg = (x < 0) | ((x == 0) & (np.float32(1) / x < 0)) if tab.signed_zero else (x < 0)
    ip = np.searchsorted(tab.thresholds, a, side="right")
    ineg = ip if tab.neg_thresholds is None else np.searchsorted(tab.neg_thresholds, a, side="right")
    code = np.where(neg, tab.neg_codes[np.minimum(ineg, len(tab.neg_codes) - 1)], tab.pos_codes[ip])
    return np.where(np.isnan(x), tab.nan_code, code).astype(dtype.storage.numpy)


def _check(dtype: DType, saturate: bool, round_mode: str, tab: EncodeTable) -> None:
    """The table against the reference: every threshold and its neighbours, specials, and a sweep of bit
    patterns. A difference is a bug here, never shipped as a rewrite."""
    rng = np.random.default_rng(0)
    ts = [tab.thresholds] + ([tab.neg_thresholds] if tab.neg_thresholds is not None else [])
    near = np.concatenate(
        [np.concatenate([t, np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(np.inf))]) for t in ts]
    )
    sweep = rng.integers(0, 0x7F800001, 200_000, dtype=np.int64).astype(np.uint32).view(np.float32)
    specials = np.array([0.0, np.inf, np.nan, 1e-45, 3.4e38], np.float32)
    x = np.concatenate([near, sweep, specials, np.arange(-300, 300, 0.125, dtype=np.float32)])
    x = np.concatenate([x, -x[~np.isnan(x)]])  # a NaN's sign is not observable by standard ops: +NaN only
    want = _reference_cast(x, dtype, saturate, round_mode).view(dtype.storage.numpy)
    got = encode_numpy(x, dtype, tab)
    same = (got == want) | (np.isnan(x) & np.isnan(want.view(dtype.numpy).astype(np.float32)))
    if not same.all():
        k = int(np.argmin(same))
        raise AssertionError(
            f"legalize-dtypes: the {dtype.short} encoding table differs from onnx's reference at "
            f"{float(x[k])!r}: {int(got[k])} vs {int(want[k])}"
        )


# ------------------------------------------------------------------------------------------------ rewrites
def _decode(r: _Rewriter, x: Value, src: DType, to: DType) -> Value | None:
    """The ``to`` values (a standard type) of ``x``, stored as ``src`` (an emulated type)."""
    if src in _INTS:
        return r.op("Cast", [x], to=to.onnx)  # the stored value is the value
    if to not in (DType.FLOAT32, DType.FLOAT16, DType.FLOAT64):
        return None
    return r.op("Gather", [r.const(decode_table(src, to)), r.op("Cast", [x], to=I64)])


def _search(r: _Rewriter, a: Value, thresholds: np.ndarray) -> Value:
    """The number of ``thresholds`` (increasing) at most ``a``, elementwise: a binary search, one Gather per step."""
    n = len(thresholds)
    table = r.const(np.concatenate([[np.float32(0)], thresholds]).astype(np.float32))
    step = 1 << (n.bit_length() - 1)
    idx: Value | None = None
    while step:
        cand = r.const(np.int64(step)) if idx is None else r.op("Add", [idx, r.const(np.int64(step))])
        t = r.op("Gather", [table, r.op("Min", [cand, r.const(np.int64(n))])])
        ok = r.op("Not", [r.op("Less", [a, t])])
        if idx is not None:
            ok = r.op("And", [ok, r.op("Less", [cand, r.const(np.int64(n + 1))])])
        idx = r.op("Where", [ok, cand, r.const(np.int64(0)) if idx is None else idx])
        step //= 2
    assert idx is not None
    return idx


def _encode_float(r: _Rewriter, x: Value, dst: DType, saturate: bool, round_mode: str) -> Value | None:
    """``dst`` codes (storage) of float32 ``x`` (None on a target that does not compute float32 in float32)."""
    if not target_arithmetic()[0]:
        return None
    try:
        tab = encode_table(dst, saturate, round_mode)
    except (ValueError, AssertionError, KeyError):  # an attribute value the reference does not take
        return None
    a = r.op("Abs", [x])
    zero = r.const(np.float32(0))
    neg = r.op("Less", [x, zero])
    if tab.signed_zero:  # -0.0: the only value with 1 / x < 0 among those not below 0
        neg = r.op("Or", [neg, r.op("Less", [r.op("Div", [r.const(np.float32(1)), x]), zero])])
    ip = _search(r, a, tab.thresholds)
    code = r.op("Gather", [r.const(tab.pos_codes), ip])
    ineg = ip if tab.neg_thresholds is None else _search(r, a, tab.neg_thresholds)
    code = r.op("Where", [neg, r.op("Gather", [r.const(tab.neg_codes), ineg]), code])
    code = r.op("Where", [r.op("IsNaN", [x]), r.const(np.int32(tab.nan_code)), code])
    return r.op("Cast", [code], to=dst.storage.onnx)


def _encode_int(r: _Rewriter, x: Value, src: DType, dst: DType) -> Value | None:
    """``dst`` (a sub-byte integer) values of ``x`` as the reference converts: a float is truncated toward zero,
    and one out of range (or NaN / inf) gives 0; an integer (or bool) wraps modulo 2**bits."""
    lo, hi = _int_range(dst)  # type: ignore[misc]
    store = dst.storage.onnx
    if src in (DType.FLOAT32, DType.FLOAT16):
        if not target_arithmetic()[0]:
            return None
        f = r.op("Cast", [x], to=F32) if src == DType.FLOAT16 else x
        f = r.op("Where", [r.op("IsNaN", [f]), r.const(np.float32(0)), f])
        f = r.op("Min", [r.op("Max", [f, r.const(np.float32(lo - 1))]), r.const(np.float32(hi + 1))])
        t = r.op("Cast", [f], to=onnx.TensorProto.INT32)  # truncation toward zero, in range here
        ok = r.op(
            "And",
            [
                r.op("Not", [r.op("Less", [t, r.const(np.int32(lo))])]),
                r.op("Not", [r.op("Less", [r.const(np.int32(hi)), t])]),
            ],
        )
        return r.op("Cast", [r.op("Where", [ok, t, r.const(np.int32(0))])], to=store)
    if src.numpy.kind in "iub" and src not in EMULATED:
        span = 1 << dst.bits
        v = r.op("Cast", [x], to=I64)
        m = r.op("Mod", [v, r.const(np.int64(span))])  # in [0, span): fmod=0 takes the divisor's sign
        if lo < 0:
            wrap = r.op("Cast", [r.op("Less", [r.const(np.int64(hi)), m])], to=I64)
            m = r.op("Sub", [m, r.op("Mul", [wrap, r.const(np.int64(span))])])
        return r.op("Cast", [m], to=store)
    return None


def _to_f32(r: _Rewriter, x: Value, src: DType) -> Value | None:
    """float32 ``x``, exactly (None where float32 does not hold every value of ``src``)."""
    if src == DType.FLOAT32:
        return x
    if src == DType.FLOAT16:
        return r.op("Cast", [x], to=F32)
    if src in EMULATED:
        return _decode(r, x, src, DType.FLOAT32)
    if src in (DType.INT8, DType.UINT8, DType.INT16, DType.UINT16):  # every value exactly
        return r.op("Cast", [x], to=F32)
    return None


def _int_range(d: DType) -> tuple[int, int] | None:
    """The value range of an integer type of at most 16 bits (the quantized types), or None."""
    if d in _INTS or d in (DType.INT8, DType.UINT8, DType.INT16, DType.UINT16):
        return code_range(d.bits, d.numpy.kind == "i")
    return None


def convert(
    r: _Rewriter, x: Value, src: DType, dst: DType, saturate: bool = True, round_mode: str = "up"
) -> Value | None:
    """``x`` (stored as ``src``'s storage where ``src`` is emulated) converted to ``dst`` (its storage where
    emulated), exactly as onnx's Cast; None where no exact rewrite is known."""
    if src == dst:
        return r.op("Identity", [x])
    if dst not in EMULATED:
        if src in _INTS or dst in (DType.FLOAT32, DType.FLOAT16, DType.FLOAT64):
            return _decode(r, x, src, dst)
        return None
    if dst in _INTS:
        if src in _INTS:
            return _encode_int(r, r.op("Cast", [x], to=I64), DType.INT64, dst)
        if src in EMULATED:
            f = _decode(r, x, src, DType.FLOAT32)
            return None if f is None else _encode_int(r, f, DType.FLOAT32, dst)
        return _encode_int(r, x, src, dst)
    f = _to_f32(r, x, src)
    if f is None:
        return None
    return _encode_float(r, f, dst, saturate, round_mode)


def _attr_str(n: Node, name: str, default: str) -> str:
    v = n.attr(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _broadcast_param(r: _Rewriter, p: Value, x: Value, axis: int, block: int) -> Value | None:
    """A scale / zero point shaped to broadcast against ``x`` (per tensor, per axis or blocked), as the
    reference reshapes it."""
    shape = p.static_shape
    if shape is None:
        return None
    if len(shape) == 0 or int(np.prod(shape)) == 1:
        return r.op("Reshape", [p, r.const(np.array([], np.int64))]) if len(shape) else p
    xs = x.static_shape
    if xs is None:
        return None
    axis = axis + len(xs) if axis < 0 else axis
    if not 0 <= axis < len(xs):
        return None
    if not block:
        if len(shape) != 1:
            return None
        dims = [1] * len(xs)
        dims[axis] = shape[0]
        return r.op("Reshape", [p, r.const(np.array(dims, np.int64))])
    if len(shape) != len(xs):
        return None
    idx = np.arange(xs[axis], dtype=np.int64) // block
    return r.op("Gather", [p, r.const(idx)], axis=axis)


def _dequantize(r: _Rewriter, n: Node, lacking: set[DType]) -> list[Value] | None:
    """(x - zero point) * scale in float32, cast to the output type, as the reference computes it; values of a
    type in ``lacking`` (x, the zero point, the scale, the output) are held in its storage type. The zero point
    of a float8 must be 0; a float4's is ignored, as the reference ignores it."""
    x, scale = n.inputs[0], n.inputs[1]
    zp = n.inputs[2] if len(n.inputs) > 2 else None
    y = n.outputs[0]
    if x is None or scale is None or x.dtype is None or y.dtype is None or scale.dtype is None:
        return None
    integer = _int_range(x.dtype) is not None or x.dtype == DType.INT32
    if x.dtype not in lacking and (not integer or x.dtype in EMULATED):
        return None  # (an emulated type this pass left as it is is not rewritten on its storage)
    if any(d in EMULATED and d not in lacking for d in (scale.dtype, y.dtype)):
        return None
    axis, block = int(n.attr("axis", 1)), int(n.attr("block_size", 0))
    # int32 -> float32 rounds as the reference's astype(float32) does
    xf = r.op("Cast", [x], to=F32) if x.dtype == DType.INT32 else _to_f32(r, x, x.dtype)
    s = _broadcast_param(r, scale, x, axis, block)
    sf = None if s is None else _to_f32(r, s, scale.dtype)
    if xf is None or sf is None:
        return None
    if zp is not None and integer:
        z = _broadcast_param(r, zp, x, axis, block)
        zf = (
            None
            if z is None or zp.dtype is None
            else (r.op("Cast", [z], to=F32) if zp.dtype == DType.INT32 else _to_f32(r, z, zp.dtype))
        )
        if zf is None:
            return None
        xf = r.op("Sub", [xf, zf])
    elif (
        zp is not None
        and x.dtype != DType.FLOAT4E2M1
        and not (zp.is_const and not np.asarray(zp.numpy()).astype(np.float32).any())
    ):
        return None  # a float8 zero point must be 0 (the reference refuses any other)
    out = r.op("Mul", [xf, sf])
    if y.dtype == DType.FLOAT32:
        return [out]
    if y.dtype in EMULATED:
        enc = convert(r, out, DType.FLOAT32, y.dtype)
        return None if enc is None else [enc]
    return [r.op("Cast", [out], to=y.dtype.onnx)]


def _quantize(r: _Rewriter, n: Node, lacking: set[DType]) -> list[Value] | None:
    """saturate(round_half_even(x / scale) + zero point) for an integer type (NaN: the type's minimum, as the
    reference), the reference's Cast of x / scale for a float8 / float4 one; the result stored as its storage type
    where its type is in ``lacking``."""
    x, scale = n.inputs[0], n.inputs[1]
    zp = n.inputs[2] if len(n.inputs) > 2 else None
    y = n.outputs[0]
    if x is None or scale is None or y.dtype is None or x.dtype not in (DType.FLOAT32, DType.FLOAT16):
        return None
    if y.dtype not in lacking and (_int_range(y.dtype) is None or y.dtype in EMULATED):
        return None
    if target_arithmetic() != (True, True):  # round(x / scale) turns on the quotient's last bit
        return None
    if n.attr("precision", 0):
        return None
    axis, block = int(n.attr("axis", 1)), int(n.attr("block_size", 0))
    s = _broadcast_param(r, scale, x, axis, block)
    z = None if zp is None else _broadcast_param(r, zp, x, axis, block)
    if s is None or (zp is not None and z is None) or scale.dtype != x.dtype:
        return None
    q = r.op("Div", [x, s])  # in x's type, as the reference divides
    rng = _int_range(y.dtype)
    if rng is not None:
        lo, hi = rng
        f = r.op("Round", [q if x.dtype == DType.FLOAT32 else r.op("Cast", [q], to=F32)])
        if zp is not None and z is not None:
            zf = _to_f32(r, z, zp.dtype) if zp.dtype is not None else None
            if zf is None:
                return None
            f = r.op("Add", [f, zf])
        # NaN becomes the type's minimum, as the reference's int32 cast (its minimum, plus the zero point, clipped)
        # gives; beyond the range, the spec's saturation (the reference's int32 cast of such values is undefined)
        f = r.op("Where", [r.op("IsNaN", [f]), r.const(np.float32(lo)), f])
        f = r.op("Min", [r.op("Max", [f, r.const(np.float32(lo))]), r.const(np.float32(hi))])
        return [r.op("Cast", [f], to=y.dtype.storage.onnx)]
    f = q if x.dtype == DType.FLOAT32 else r.op("Cast", [q], to=F32)
    if y.dtype == DType.FLOAT4E2M1 and zp is not None and z is not None:
        zf = _to_f32(r, z, zp.dtype) if zp.dtype is not None else None
        if zf is None:
            return None
        f = r.op("Add", [f, zf])
    saturate = bool(int(n.attr("saturate", 1))) or y.dtype == DType.FLOAT4E2M1
    if y.dtype == DType.BFLOAT16:
        return None
    out = _encode_float(r, f, y.dtype, saturate, "up")
    return None if out is None else [out]


@rule("DequantizeLinear")
def _dequantize_rule(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """For a target that does not take the node (blocked quantization, say): the same arithmetic on standard
    integer types."""
    return _dequantize(r, n, set())


@rule("QuantizeLinear")
def _quantize_rule(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    return _quantize(r, n, set())


def _rewrite(r: _Rewriter, n: Node, lacking: set[DType]) -> list[Value] | None:
    if n.op_type == "DequantizeLinear":
        return _dequantize(r, n, lacking)
    if n.op_type == "QuantizeLinear":
        return _quantize(r, n, lacking)
    x, y = n.inputs[0], n.outputs[0]
    if x is None or x.dtype is None or y.dtype is None:
        return None
    saturate, round_mode = bool(int(n.attr("saturate", 1))), _attr_str(n, "round_mode", "up")
    if x.is_const and not _quantized(x) and y.dtype.numpy.kind != "O":  # a weight: converted here, by the reference
        arr = np.asarray(x.numpy())
        if x.dtype in _INTS:
            arr = from_storage(arr.astype(x.dtype.storage.numpy), x.dtype)
        out_arr = _reference_cast(arr, y.dtype, saturate, round_mode)
        if y.dtype in EMULATED:
            out_arr = to_storage(out_arr)
        return [r.const(out_arr)]
    out = convert(r, x, x.dtype, y.dtype, saturate, round_mode)
    return None if out is None else [out]


def _touches(n: Node, lacking: set[DType]) -> bool:
    return any(v is not None and v.dtype in lacking and not _quantized(v) for v in [*n.inputs, *n.outputs])


def _quantized(v: Value) -> bool:
    from ...ir import QuantizedTensor

    return v.is_const and isinstance(v.const, QuantizedTensor)


# ------------------------------------------------------------------------------------------------ the pass
@dataclasses.dataclass(frozen=True)
class LegalizeDtypes(Pass):
    name: ClassVar[str] = "legalize-dtypes"
    summary: ClassVar[str] = (
        "hold float8 / float4 / bfloat16 / int4 / int2 values the target lacks in standard "
        "storage types, with exact conversions"
    )

    def run(self, model: Model, ctx: PassContext) -> bool:
        caps = getattr(ctx.target, "capabilities", None)
        with rewriting_for(ctx.target):
            # no target: every such type is legalized (onnxruntime, the reference executor, lacks most of them)
            return self._run(model, caps.dtypes if caps is not None else frozenset())

    def _run(self, model: Model, dtypes: frozenset[str]) -> bool:
        lacking = {d for d in EMULATED if d.short not in dtypes}
        g = model.graph
        nodes = [n for n in g if _touches(n, lacking)]
        if not nodes and not any(v.dtype in lacking for v in list(g.inputs) + list(g.outputs)):
            return False
        # groups of emulated values joined by the nodes that touch them
        parent: dict[int, int] = {}

        def find(k: int) -> int:
            while parent.setdefault(k, k) != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        values: dict[int, Value] = {}
        for n in nodes:
            mine = [v for v in [*n.inputs, *n.outputs] if v is not None and v.dtype in lacking and not _quantized(v)]
            for v in mine:
                values[id(v)] = v
                parent[find(id(v))] = find(id(mine[0]))
        for v in list(g.inputs) + list(g.outputs):
            if v.dtype in lacking:
                values[id(v)] = v
                find(id(v))
        groups: dict[int, list[Node]] = {}
        for n in nodes:
            k = next(id(v) for v in [*n.inputs, *n.outputs] if v is not None and id(v) in values)
            groups.setdefault(find(k), []).append(n)
        bad: set[int] = set()
        for root, members in groups.items():
            for n in members:
                if n.domain:  # edgec's own ops (fused Gelu, Linear, ...) compute on their inputs
                    bad.add(root)
                elif n.op_type in MOVEMENT:
                    data = n.inputs[:1] if n.op_type not in ("Concat",) else n.inputs
                    if any(v is not None and id(v) in values for v in n.inputs if v not in data):
                        bad.add(root)  # an emulated index / shape input
                elif n.op_type not in CONVERSIONS:
                    bad.add(root)
        changed = False
        storage: dict[str, str] = json.loads(model.metadata.get(STORAGE_KEY, "{}"))
        io = {id(v): v.name for v in list(g.inputs) + list(g.outputs)}
        for root, members in groups.items():
            if root in bad:
                continue
            pending = []
            before = {id(n) for n in g}
            for n in members:
                if n.op_type in CONVERSIONS:
                    outs = _rewrite(_Rewriter(g, n), n, lacking)
                    if outs is None:
                        bad.add(root)
                        break
                    pending.append((n, outs))
            if root in bad:  # the group stays as it was: drop what its rewrites inserted
                for n in reversed([n for n in g if id(n) not in before]):
                    g.remove(n)
                continue
            for n, outs in pending:
                for o in n.outputs:
                    if id(o) in io and o.dtype in lacking:
                        storage[o.name] = o.dtype.short
                for o, new in zip(n.outputs, outs):
                    new.dtype = o.dtype.storage if o.dtype is not None else None
                Decompose._replace(g, n, outs)
            changed = True
        for k, v in values.items():
            if find(k) in bad or v.dtype not in lacking:
                continue
            if k in io:
                storage[v.name] = v.dtype.short
            if v.is_const:
                arr = np.asarray(v.numpy())
                v.const = Tensor(
                    to_storage(arr) if v.dtype.stored_as_bits else arr.astype(v.dtype.storage.numpy), v.dtype.storage
                )
            v.dtype = v.dtype.storage
            changed = True
        if storage:
            model.metadata[STORAGE_KEY] = json.dumps(storage, sort_keys=True)
        if changed:
            infer_shapes(model)
            g.remove_unused_consts()
        return changed
