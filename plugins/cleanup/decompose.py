"""decompose: rewrite every op the target does not take into ops it does.

The canonical op set is the target's own: ``Capabilities.ops`` (its builder's lowerings) plus
``Capabilities.fallback_ops`` (ops its library's ONNX importer lowers), narrowed per node by
``Target.accepts_node`` (a variant the target does not take: a dtype, an attribute). Any other node is rewritten,
and the rewrite is rewritten again until only accepted ops remain. A node whose rewrite does not get there stays
as it is, so the target's check names the model's own op (not a piece of its rewrite). Sources of rewrites, tried
in this order:

1. **edgec rules** (:data:`RULES`) for ops ONNX does not define as functions: variadic Sum / Mean / Max / Min,
   Gemm with every attribute and a run-time B, IsNaN / IsInf, LRN, Trilu with a constant k, ReduceL1 / L2 /
   SumSquare / LogSum / LogSumExp before opset 18 (onnx has bodies from 18), Reciprocal, Flatten of a static
   shape, integer CumSum; Conv / pooling with auto_pad or one spatial axis. These variants are rewritten for every target
   (:func:`_canonical`): variadic Sum / Max / Min with other than two inputs, auto_pad, 1-D windows.
2. **edgec's own ops** (``edgec::Linear``, ``RMSNorm``, ``Gelu``, ``Attention``) by their defining expansion into
   standard ONNX (:mod:`edgec.ir.ops`), for a target that lowers them not (unquantized weights only).
3. **onnx's own function bodies**: the schema's function (or context-dependent function, built from the node's
   attributes and input types) for the model's opset, inlined with ``onnx.inliner``; a body written in another
   opset is brought to the model's by ``onnx.version_converter``. Control flow in a body (Range's Loop,
   LinearAttention's Scan, ...) is rewritten into plain ops where it is static for the node's input shapes and
   constant inputs (:func:`edgec.ir.onnx_static.eliminate_control_flow`, before any conversion); a body whose
   control flow is not static is not used.

Each rewrite is exact: it computes what the op's ONNX definition computes. An op with no exact rewrite is left
alone, never approximated.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...ir import DType, Graph, Model, Node, Tensor, Value, from_onnx, infer_shapes
from ...ir.onnx_io import attribute_proto
from ...ir.onnx_static import eliminate_control_flow, needs_rewrite
from ...ir.passes import Pass, PassContext, option
from .simplify_shapes import SimplifyShapes

_DOMAIN = "edgec.decompose"  # where a schema's function goes while it is inlined
MAX_ROUNDS = 16  # a rewrite's own ops are rewritten again; bodies nest a few levels at most


# ------------------------------------------------------------------------------------------------ rules
class _Rewriter:
    """Builds the replacement of one node before it in the graph."""

    def __init__(self, g, n: Node):
        self.g, self.n = g, n

    def op(self, op_type: str, inputs: Sequence[Value | None], **attrs) -> Value:
        with self.g.inserting_before(self.n):
            return self.g.op(op_type, inputs, attrs or None, name=f"{self.n.name or 'n'}_{op_type}").output

    def const(self, arr, like: Value | None = None) -> Value:
        a = np.asarray(arr, like.dtype.numpy if like is not None and like.dtype is not None else None)
        return self.g.add_const(self.g.unique_name(f"{self.n.name or 'n'}_c"), Tensor(a, DType.from_numpy(a.dtype)))


Rule = Callable[[_Rewriter, Node, int], "list[Value] | None"]
_TARGET: contextvars.ContextVar = contextvars.ContextVar("edgec_rewrite_target", default=None)


@contextlib.contextmanager
def rewriting_for(target):
    """Rules run inside see ``target`` through :func:`target_arithmetic` (set by the passes that run rules)."""
    token = _TARGET.set(target)
    try:
        yield
    finally:
        _TARGET.reset(token)


def target_dtypes() -> frozenset[str] | None:
    """The element types (short names) the target being rewritten for takes, or None where none is known."""
    caps = getattr(_TARGET.get(), "capabilities", None)
    return None if caps is None else caps.dtypes


def target_arithmetic() -> tuple[bool, bool]:
    """(float32 computed in float32, float division correctly rounded) on the target being rewritten for: a rule
    whose integer result turns on a float32 comparison or a quotient's last bit applies only where both hold
    (True, True where no target is known: the IR's own semantics)."""
    t = _TARGET.get()
    if t is None:
        return True, True
    f32 = t.float32_exact() if hasattr(t, "float32_exact") else True
    caps = getattr(t, "capabilities", None)
    return bool(f32), bool(getattr(caps, "exact_division", True))


RULES: dict[str, list[Rule]] = {}  # per op, tried in order until one applies (returns values, not None)


def rule(*ops: str):
    def deco(fn: Rule) -> Rule:
        for op in ops:
            RULES.setdefault(op, []).append(fn)
        return fn

    return deco


_WINDOWED = ("Conv", "MaxPool", "AveragePool", "LpPool")


def _canonical(n: Node) -> bool:
    """Variants rewritten for every target into the core form: variadic Sum / Max / Min with other than two
    inputs (the binary form), and Conv / pooling with ``auto_pad`` (explicit pads) or one spatial axis (2-D with
    a unit height)."""
    if n.domain:
        return False
    if n.op_type in ("Sum", "Max", "Min"):
        return len(n.inputs) != 2
    if n.op_type in _WINDOWED and len(n.outputs) == 1 and n.inputs[0] is not None:
        return n.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET") or n.inputs[0].rank == 3
    return False


@rule("Sum", "Max", "Min")
def _variadic(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """A left fold of the binary form (Sum: Add); one input is an Identity."""
    ins = [v for v in n.inputs if v is not None]
    if len(ins) != len(n.inputs) or not ins or (n.op_type != "Sum" and len(ins) == 2):
        return None
    if len(ins) == 1:
        return [r.op("Identity", ins)]
    op = {"Sum": "Add"}.get(n.op_type, n.op_type)
    acc = ins[0]
    for v in ins[1:]:
        acc = r.op(op, [acc, v])
    return [acc]


@rule("Mean")
def _mean(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    ins = list(n.inputs)
    if not ins or any(v is None or v.dtype is None or not v.dtype.is_float for v in ins):
        return None
    acc = ins[0]
    for v in ins[1:]:
        acc = r.op("Add", [acc, v])
    return [r.op("Div", [acc, r.const(len(ins), ins[0])])] if len(ins) > 1 else [r.op("Identity", [acc])]


@rule("IsNaN")
def _isnan(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    x = n.inputs[0]
    if x is None or x.dtype is None or not x.dtype.is_float:
        return None
    return [r.op("Not", [r.op("Equal", [x, x])])]  # NaN is the only value unequal to itself


@rule("IsInf")
def _isinf(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    x = n.inputs[0]
    if x is None or x.dtype is None or not x.dtype.is_float:
        return None
    pos, neg = int(n.attr("detect_positive", 1)), int(n.attr("detect_negative", 1))
    if pos and neg:
        return [r.op("Equal", [r.op("Abs", [x]), r.const(np.inf, x)])]
    if pos or neg:
        return [r.op("Equal", [x, r.const(np.inf if pos else -np.inf, x)])]
    same = r.op("Equal", [x, x])
    return [r.op("And", [same, r.op("Not", [same])])]  # all false, in x's shape


@rule("Gemm")
def _gemm(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """Y = alpha * A' @ B' + beta * C, with A' / B' transposed as asked; an alpha or beta of 1 is skipped (the
    definition's multiplication by 1 leaves every value unchanged)."""
    a, b = n.inputs[0], n.inputs[1]
    c = n.inputs[2] if len(n.inputs) > 2 else None
    if a is None or b is None or a.rank not in (2, None) or b.rank not in (2, None):
        return None
    if a.dtype is None or not a.dtype.is_float:
        return None
    alpha, beta = float(n.attr("alpha", 1.0)), float(n.attr("beta", 1.0))
    if int(n.attr("transA", 0)):
        a = r.op("Transpose", [a], perm=[1, 0])
    if int(n.attr("transB", 0)):
        b = r.op("Transpose", [b], perm=[1, 0])
    y = r.op("MatMul", [a, b])
    if alpha != 1.0:
        y = r.op("Mul", [y, r.const(alpha, n.inputs[0])])
    if c is not None and beta != 0.0:
        if beta != 1.0:
            c = r.op("Mul", [c, r.const(beta, n.inputs[0])])
        y = r.op("Add", [y, c])
    return [y]


@rule("LRN")
def _lrn(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """square_sum[c] = the sum of x^2 over channels c - floor((size-1)/2) .. c + ceil((size-1)/2) (zero outside);
    y = x / (bias + alpha / size * square_sum) ^ beta. The window sum adds shifted slices of the channel-padded
    squares (zeros concatenated on both sides: Concat is in every target's set, Pad is not)."""
    x = n.inputs[0]
    if x is None or x.static_shape is None or len(x.static_shape) < 3 or x.dtype is None or not x.dtype.is_float:
        return None
    size = int(n.attr("size"))
    alpha, beta, bias = float(n.attr("alpha", 1e-4)), float(n.attr("beta", 0.75)), float(n.attr("bias", 1.0))
    c = x.static_shape[1]
    lo, hi = (size - 1) // 2, (size - 1) - (size - 1) // 2
    sq = r.op("Mul", [x, x])
    shape = list(x.static_shape)
    parts = [r.const(np.zeros(shape[:1] + [k] + shape[2:], x.dtype.numpy)) for k in (lo, hi)]
    padded = r.op("Concat", [p for p, k in zip([parts[0], sq, parts[1]], (lo, 1, hi)) if k], axis=1)
    acc = None
    for k in range(size):
        s = r.op(
            "Slice",
            [
                padded,
                r.const(np.array([k], np.int64)),
                r.const(np.array([k + c], np.int64)),
                r.const(np.array([1], np.int64)),
            ],
        )
        acc = s if acc is None else r.op("Add", [acc, s])
    den = r.op("Add", [r.const(bias, x), r.op("Mul", [r.const(alpha / size, x), acc])])
    return [r.op("Div", [x, r.op("Pow", [den, r.const(beta, x)])])]


@rule("Trilu")
def _trilu(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """A constant mask over the last two axes (static sizes, constant k): Where(mask, x, 0)."""
    x = n.inputs[0]
    k_in = n.inputs[1] if len(n.inputs) > 1 else None
    if x is None or x.static_shape is None or len(x.static_shape) < 2 or x.dtype is None:
        return None
    if k_in is not None and not k_in.is_const:
        return None
    k = int(np.asarray(k_in.numpy()).reshape(-1)[0]) if k_in is not None else 0
    h, w = x.static_shape[-2:]
    mask = (np.triu if int(n.attr("upper", 1)) else np.tril)(np.ones((h, w), bool), k)
    return [r.op("Where", [r.const(mask), x, r.const(np.zeros((), x.dtype.numpy))])]


@rule("Mod")
def _float_mod(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """fmod=0 of floats, the sign of the divisor's (as numpy's mod): the truncated remainder (fmod=1), plus the
    divisor where the two signs differ and the remainder is not 0."""
    x, y = n.inputs[0], n.inputs[1]
    if int(n.attr("fmod", 0)) or x is None or y is None or x.dtype is None or not x.dtype.is_float:
        return None
    if not target_arithmetic()[1]:  # a target whose fmod divides through a reciprocal
        return None
    m = r.op("Mod", [x, y], fmod=1)
    zero = r.const(0.0, x)
    negative_y = r.op("Less", [y, zero])
    differ = r.op("Xor", [r.op("Less", [m, zero]), negative_y])
    is_zero = r.op("Equal", [m, zero])
    fix = r.op("And", [differ, r.op("Not", [is_zero])])
    out = r.op("Where", [fix, r.op("Add", [m, y]), m])
    # a zero remainder takes the divisor's sign (numpy: copysign(0, y)); 0 * sign(y), as a Where between +0 and -0
    # constants is folded to one of them (onnxruntime takes them for equal)
    signed_zero = r.op("Mul", [zero, r.op("Sign", [y])])
    return [r.op("Where", [is_zero, signed_zero, out])]


@rule("Dropout")
def _dropout(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """Inference mode (no training_mode input, or a constant false one): the input, and an all-true mask."""
    x = n.inputs[0]
    tm = n.inputs[2] if len(n.inputs) > 2 else None
    if x is None or x.static_shape is None or (tm is not None and (not tm.is_const or np.asarray(tm.numpy()).any())):
        return None
    outs = [r.op("Identity", [x])]
    if len(n.outputs) > 1:
        outs.append(r.const(np.ones(x.static_shape, bool)))
    return outs


@rule("Reciprocal")
def _reciprocal(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    x = n.inputs[0]
    if x is None or x.dtype is None or not x.dtype.is_float:
        return None
    return [r.op("Div", [r.const(1.0, x), x])]  # IEEE 1 / x is the reciprocal, correctly rounded


@rule("Flatten")
def _flatten(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    x = n.inputs[0]
    if x is None or x.static_shape is None:
        return None
    shape = x.static_shape
    axis = int(n.attr("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    return [r.op("Reshape", [x, r.const(np.array([outer, int(np.prod(shape[axis:], dtype=np.int64))], np.int64))])]


@rule("BitShift")
def _bitshift(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """Shifts as arithmetic on a table of powers of two indexed by the amount. LEFT is x * 2**y (a product wraps
    modulo 2**bits, exactly the bits shifted out; for a signed T, 2**(bits-1) wraps to the minimum, which is the
    same residue). RIGHT is x / 2**y for an unsigned T, and floor(x / 2**y) for a signed one (an arithmetic
    shift: the truncated quotient less one where the remainder is negative). An amount that is negative or
    of the width or more gives what sign extension alone gives: -1 for a right shift of a negative x, else 0
    (onnx opset 28; earlier opsets take unsigned types only)."""
    x, y = n.inputs[0], n.inputs[1]
    if x is None or y is None or x.dtype is None or x.dtype != y.dtype or x.dtype.numpy.kind not in "iu":
        return None
    dt = x.dtype.numpy
    signed, bits, left = dt.kind == "i", dt.itemsize * 8, n.attr("direction") in ("LEFT", b"LEFT")
    top = bits - 2 if signed and not left else bits - 1  # the largest amount computed through the table
    powers = np.array([1 << k for k in range(bits)], dtype=np.uint64).astype(dt)  # 2**(bits-1) wraps if signed

    def c(v):
        return r.const(np.array(v, dt))

    amount = r.op("Min", [y, c(top)])
    if signed:
        amount = r.op("Max", [amount, c(0)])
    p = r.op("Gather", [r.const(powers), r.op("Cast", [amount], to=onnx.TensorProto.INT64)])
    if left:
        z = r.op("Mul", [x, p])
    else:
        z = r.op("Div", [x, p])
        if signed:
            rem = r.op("Sub", [x, r.op("Mul", [z, p])])
            z = r.op("Sub", [z, r.op("Cast", [r.op("Less", [rem, c(0)])], to=x.dtype.onnx)])
    valid = r.op("Less", [y, c(top + 1)])
    if signed:
        valid = r.op("And", [valid, r.op("Not", [r.op("Less", [y, c(0)])])])
    # select with arithmetic on 0 / 1 (Where has no int16 / uint64 kernel in onnxruntime)
    v = r.op("Cast", [valid], to=x.dtype.onnx)
    z = r.op("Mul", [z, v])
    if signed and not left:  # -1 for a negative x shifted right by an amount out of range
        neg = r.op("Cast", [r.op("Less", [x, c(0)])], to=x.dtype.onnx)
        z = r.op("Sub", [z, r.op("Mul", [neg, r.op("Sub", [c(1), v])])])
    return [z]


@rule("OneHot")
def _onehot(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """Equal(indices, range(depth)) on a new axis, selecting on / off values; negative indices count from the
    end, and indices outside [-depth, depth) match nothing (all off), as the spec says."""
    ind, depth, values = n.inputs
    if ind is None or ind.rank is None or depth is None or not depth.is_const or values is None:
        return None
    d = int(np.asarray(depth.numpy()).reshape(-1)[0])
    rank = ind.rank + 1
    axis = int(n.attr("axis", -1))
    axis = axis + rank if axis < 0 else axis
    if d < 0 or not 0 <= axis < rank or ind.dtype is None:
        return None
    i = ind if ind.dtype.numpy.kind in "iu" else r.op("Cast", [ind], to=onnx.TensorProto.INT64)
    it = i.dtype.numpy if i.dtype is not None else np.dtype(np.int64)
    if it.kind == "i":
        i = r.op("Where", [r.op("Less", [i, r.const(np.array(0, it))]), r.op("Add", [i, r.const(np.array(d, it))]), i])
    shape = [1] * rank
    shape[axis] = d
    hit = r.op(
        "Equal",
        [r.op("Unsqueeze", [i, r.const(np.array([axis], np.int64))]), r.const(np.arange(d, dtype=it).reshape(shape))],
    )
    off = r.op("Gather", [values, r.const(np.array(0, np.int64))])
    on = r.op("Gather", [values, r.const(np.array(1, np.int64))])
    return [r.op("Where", [hit, on, off])]


@rule("EyeLike")
def _eyelike(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """A constant: the output depends on the input's (static) shape only."""
    x = n.inputs[0]
    if x is None or x.static_shape is None or len(x.static_shape) != 2:
        return None
    to = n.attr("dtype")
    dt = DType.from_onnx(int(to)).numpy if to is not None else (x.dtype.numpy if x.dtype is not None else None)
    if dt is None:
        return None
    return [r.op("Identity", [r.const(np.eye(*x.static_shape, k=int(n.attr("k", 0)), dtype=dt))])]


@rule("LpNormalization")
def _lpnorm(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """x / ||x||_p along ``axis`` (p = 1 or 2); a zero norm gives 0, as onnxruntime computes it."""
    x = n.inputs[0]
    p = int(n.attr("p", 2))
    if x is None or x.rank is None or x.dtype is None or not x.dtype.is_float or p not in (1, 2):
        return None
    op, axis = "ReduceL2" if p == 2 else "ReduceL1", int(n.attr("axis", -1))
    norm = (
        r.op(op, [x, r.const(np.array([axis], np.int64))], keepdims=1)
        if opset >= 18
        else r.op(op, [x], axes=[axis], keepdims=1)
    )
    zero = r.const(np.zeros((), x.dtype.numpy))
    return [r.op("Where", [r.op("Equal", [norm, zero]), zero, r.op("Div", [x, norm])])]


def _window(n: Node) -> tuple[list[int], int] | None:
    """(kernel shape, spatial rank) of a Conv / pooling node, when known."""
    x = n.inputs[0]
    k = n.attr("kernel_shape")
    if k is None and n.op_type == "Conv" and n.inputs[1] is not None and n.inputs[1].static_shape is not None:
        k = list(n.inputs[1].static_shape[2:])
    if k is None or x is None or x.rank is None:
        return None
    return [int(v) for v in k], x.rank - 2


@rule(*_WINDOWED)
def _windowed(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """auto_pad becomes explicit pads (static spatial sizes: ONNX's SAME_UPPER / SAME_LOWER formula, VALID = 0);
    one spatial axis becomes two, with a unit height (Unsqueeze, the 2-D op, Squeeze: the same numbers)."""
    win = _window(n)
    if win is None or len(n.outputs) != 1 or not _canonical(n):
        return None  # nothing to make canonical: the next rule for the op (dilations) may apply
    kernel, nsp = win
    attrs = dict(n.attributes)
    auto = attrs.pop("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    strides = [int(v) for v in attrs.get("strides", [1] * nsp)]
    dil = [int(v) for v in attrs.get("dilations", [1] * nsp)]
    if auto != "NOTSET":
        shape = n.arg(0).static_shape  # _canonical: input 0 is present
        if shape is None or int(attrs.get("ceil_mode", 0)):
            return None
        if auto == "VALID":
            pads = [0] * (2 * nsp)
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for size, k, s, d in zip(shape[2:], kernel, strides, dil):
                total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                small, big = total // 2, total - total // 2
                begin.append(small if auto == "SAME_UPPER" else big)
                end.append(big if auto == "SAME_UPPER" else small)
            pads = begin + end
        else:
            return None
        attrs["pads"] = pads
    if nsp != 1:
        return [r.op(n.op_type, list(n.inputs), **attrs)]
    pads = [int(v) for v in attrs.get("pads", [0, 0])]
    attrs.update(kernel_shape=[1] + kernel, strides=[1] + strides, pads=[0, pads[0], 0, pads[1]])
    if "dilations" in attrs or n.op_type == "Conv":
        attrs["dilations"] = [1] + dil
    axis = r.const(np.array([2], np.int64))
    ins: list[Value | None] = [r.op("Unsqueeze", [n.inputs[0], axis])]
    if n.op_type == "Conv":
        ins.append(r.op("Unsqueeze", [n.inputs[1], axis]))
        ins += list(n.inputs[2:])
    return [r.op("Squeeze", [r.op(n.op_type, ins, **attrs), axis])]


@rule("CumSum", "CumProd")
def _cumulative(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """Integer CumSum / CumProd over a static axis as a log-step scan (y op= y shifted by 1, 2, 4, ...: Concat of
    the identity element and a Slice), exact in integer (modular) arithmetic; ``exclusive`` shifts the input
    once more, ``reverse`` shifts the other way. Floats are accumulated in the reference's order instead
    (:func:`_sequential_scan`): another order rounds differently, and a partial product of a segment can
    overflow where every prefix product is finite."""
    x, ax = n.inputs[0], n.inputs[1] if len(n.inputs) > 1 else None
    if x is None or x.static_shape is None or x.dtype is None or ax is None or not ax.is_const:
        return None
    combine, unit = ("Add", 0) if n.op_type == "CumSum" else ("Mul", 1)
    shape = list(x.static_shape)
    axis = int(np.asarray(ax.numpy()).reshape(-1)[0])
    axis = axis + len(shape) if axis < 0 else axis
    length, reverse = shape[axis], bool(n.attr("reverse", 0))
    if x.dtype.is_float:
        return _sequential_scan(r, n, x, axis, length, combine, unit)
    np_dtype = x.dtype.numpy

    def shift(v: Value, s: int) -> Value:
        ushape = list(shape)
        ushape[axis] = s
        units = r.const(np.full(ushape, unit, np_dtype))
        start, end = (s, length) if reverse else (0, length - s)
        part = r.op(
            "Slice",
            [
                v,
                r.const(np.array([start], np.int64)),
                r.const(np.array([end], np.int64)),
                r.const(np.array([axis], np.int64)),
            ],
        )
        return r.op("Concat", [part, units] if reverse else [units, part], axis=axis)

    y = x
    if int(n.attr("exclusive", 0)):
        if length <= 1:
            return [r.op("Expand", [r.const(np.array(unit, x.dtype.numpy)), r.const(np.array(shape, np.int64))])]
        y = shift(x, 1)
    s = 1
    while s < length:
        y = r.op(combine, [y, shift(y, s)])
        s *= 2
    return [y if y is not x else r.op("Identity", [x])]


SCAN_MAX = 512  # elements along the axis a float scan is unrolled for


def _sequential_scan(
    r: _Rewriter, n: Node, x: Value, axis: int, length: int, combine: str, unit: int
) -> list[Value] | None:
    """Float CumSum / CumProd in the reference's order (numpy accumulates one element after another, from the
    end for ``reverse``): one Slice and one Add / Mul per element, then Concat; up to :data:`SCAN_MAX`."""
    shape, dtype = x.static_shape, x.dtype
    if not 1 <= length <= SCAN_MAX or shape is None or dtype is None:  # the caller checked both are known
        return None
    reverse, exclusive = bool(n.attr("reverse", 0)), bool(n.attr("exclusive", 0))
    order = list(range(length))[::-1] if reverse else list(range(length))

    def at(k: int) -> Value:
        return r.op(
            "Slice",
            [
                x,
                r.const(np.array([k], np.int64)),
                r.const(np.array([k + 1], np.int64)),
                r.const(np.array([axis], np.int64)),
            ],
        )

    ushape = list(shape)
    ushape[axis] = 1
    outs: dict[int, Value] = {}
    acc: Value | None = None
    for k in order:
        if exclusive:
            outs[k] = acc if acc is not None else r.const(np.full(ushape, unit, dtype.numpy))
            acc = at(k) if acc is None else r.op(combine, [acc, at(k)])
        else:
            acc = at(k) if acc is None else r.op(combine, [acc, at(k)])
            outs[k] = acc
    parts = [outs[k] for k in range(length)]
    return [r.op("Concat", parts, axis=axis) if len(parts) > 1 else r.op("Identity", parts)]


_REDUCE_VIA_SUM = {
    "ReduceL1": ("Abs", None),
    "ReduceL2": ("Square", "Sqrt"),
    "ReduceSumSquare": ("Square", None),
    "ReduceLogSum": (None, "Log"),
    "ReduceLogSumExp": ("Exp", "Log"),
}


@rule(*_REDUCE_VIA_SUM)
def _reduce_via_sum(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """The reductions ONNX defines through a sum (bodies only from opset 18): ReduceL2 = Sqrt(ReduceSum(x * x)),
    ReduceLogSumExp = Log(ReduceSum(Exp(x))), ... with the same axes, keepdims and noop_with_empty_axes."""
    x = n.inputs[0]
    if x is None or x.dtype is None or not x.dtype.is_float:
        return None
    pre, post = _REDUCE_VIA_SUM[n.op_type]
    attrs = {k: v for k, v in n.attributes.items() if k in ("keepdims", "noop_with_empty_axes")}
    axes = n.inputs[1] if len(n.inputs) > 1 else None
    if axes is None and n.attr("axes") is not None:
        axes = r.const(np.asarray(n.attr("axes"), np.int64))
    v = x if pre is None else r.op("Mul", [x, x]) if pre == "Square" else r.op(pre, [x])
    y = r.op("ReduceSum", [v] + ([axes] if axes is not None else []), **attrs)
    return [y if post is None else r.op(post, [y])]


# ------------------------------------------------------------------------------------------------ function bodies
@functools.lru_cache(maxsize=None)
def _schema_version(op: str, opset: int) -> int | None:
    try:
        return onnx.defs.get_schema(op, opset, "").since_version
    except onnx.defs.SchemaError:
        return None


@functools.lru_cache(maxsize=None)
def _signature(op: str, opset: int) -> tuple | None:
    """What a body depends on in ``op``'s schema at ``opset``: its inputs, outputs and attributes (names,
    optionality, defaults), not its type lists (opset 22 re-issued many ops only to add bfloat16)."""
    try:
        s = onnx.defs.get_schema(op, opset, "")
    except onnx.defs.SchemaError:
        return None
    ports = tuple((p.name, p.option) for p in s.inputs), tuple((p.name, p.option) for p in s.outputs)
    attrs = tuple(sorted((k, a.type, a.required, a.default_value.SerializeToString()) for k, a in s.attributes.items()))
    return ports, attrs


def _type_proto(v: Value | None) -> onnx.TypeProto:
    if v is None or v.dtype is None:
        return onnx.TypeProto()
    shape = [d if isinstance(d, int) else None for d in v.shape] if v.shape is not None else None
    return helper.make_tensor_type_proto(v.dtype.onnx, shape)


def _node_proto(n: Node, schema) -> onnx.NodeProto:
    """``n`` with every attribute it leaves to its default written out (a function body reads them)."""
    ins = [f"i{k}" if v is not None else "" for k, v in enumerate(n.inputs)]
    node = helper.make_node(n.op_type, ins, [f"o{k}" for k in range(len(n.outputs))], domain=_DOMAIN)
    node.attribute.extend(attribute_proto(k, a) for k, a in n.attributes.items())
    for name, a in schema.attributes.items():
        d = a.default_value
        if name not in n.attributes and d is not None and d.type != onnx.AttributeProto.UNDEFINED:
            node.attribute.append(d)
    return node


def _usable(fn: onnx.FunctionProto, op: str) -> bool:
    """The body's nodes are all ai.onnx and not ``op`` itself (subgraphs are rewritten away, or the body is not
    used: :func:`_body_model`)."""
    for b in fn.node:
        if b.domain not in ("", "ai.onnx"):
            return False
        if b.op_type == op:
            return False  # a body that re-states the op is no decomposition
    return True


def function_body(n: Node, opset: int) -> onnx.FunctionProto | None:
    """onnx's function body of ``n`` at ai.onnx ``opset`` (context-dependent ones built for ``n``'s attributes and
    input types), or None: no body, or one of other domains. The body is written in its own opset (see
    :func:`_body_model`)."""
    if n.domain:
        return None
    try:
        # Any: onnx's stubs (onnx_cpp2py_export/defs.pyi) lack the function-body accessors used below
        schema: Any = onnx.defs.get_schema(n.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None
    node = _node_proto(n, schema)
    # onnx keeps a body per opset where it changed: the newest at or below ``opset`` first, then newer ones (as
    # long as the op has the same signature at that opset: same inputs, outputs and attributes; types may grow)
    cd = schema.has_context_dependent_function
    versions = list(schema.context_dependent_function_opset_versions if cd else schema.function_opset_versions)
    order = sorted((v for v in versions if v <= opset), reverse=True)[:1] + sorted(v for v in versions if v > opset)
    for version in order:
        if _schema_version(n.op_type, version) != schema.since_version and _signature(n.op_type, version) != _signature(
            n.op_type, opset
        ):
            continue
        try:
            if cd:
                raw = schema.get_context_dependent_function_with_opset_version(
                    version,
                    node.SerializeToString(),
                    [_type_proto(v).SerializeToString() for v in n.inputs if v is not None],
                )
            else:
                raw = schema.get_function_with_opset_version(version)
        except Exception:  # noqa: BLE001 - the C++ side refuses inputs it cannot build a body for
            continue
        if raw:
            fn = onnx.FunctionProto.FromString(raw)
            if _usable(fn, n.op_type):
                return fn
    return None


def _io(n: Node) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """A sub-model's inputs ``i<k>`` (typed as ``n``'s inputs) and outputs ``o<k>``."""
    return (
        [helper.make_value_info(f"i{k}", _type_proto(v)) for k, v in enumerate(n.inputs) if v is not None],
        [helper.make_value_info(f"o{k}", onnx.TypeProto()) for k in range(len(n.outputs))],
    )


def _body_model(model: Model, n: Node, fn: onnx.FunctionProto) -> onnx.ModelProto | None:
    """The sub-model of ``n`` with ``fn`` inlined (``onnx.inliner`` substitutes attribute references), in the
    model's opset: a body written for another opset is converted by ``onnx.version_converter``, whose adapters
    know every change of meaning between opsets (Softmax's axis in 13, attributes that became inputs, ...)."""
    from onnx import inliner, version_converter

    node = _node_proto(n, onnx.defs.get_schema(n.op_type, model.opset, ""))
    fn = onnx.FunctionProto.FromString(fn.SerializeToString())
    fn.domain, fn.name = _DOMAIN, n.op_type
    body_opset = next((o.version for o in fn.opset_import if o.domain in ("", "ai.onnx")), model.opset)
    ins, outs = _io(n)
    proto = helper.make_model(
        helper.make_graph([node], "body", ins, outs),
        opset_imports=[helper.make_opsetid("", body_opset), helper.make_opsetid(_DOMAIN, 1)],
        functions=[fn],
    )
    try:
        inlined = inliner.inline_local_functions(proto)
        del inlined.opset_import[:]
        inlined.opset_import.append(helper.make_opsetid("", body_opset))
        if needs_rewrite(inlined):  # in the body's own opset: the converter takes no subgraphs
            inlined = eliminate_control_flow(_bind_constants(inlined, n))
        if body_opset != model.opset:
            inlined = version_converter.convert_version(inlined, model.opset)
        return inlined
    except Exception:  # noqa: BLE001 - a body the inliner or the converter cannot take, or whose control flow
        return None  # is not static here (UnsupportedModelError): no rewrite


_BIND_ELEMENTS = 1 << 16  # constant inputs this small are bound into a body whose control flow is rewritten


def _bind_constants(proto: onnx.ModelProto, n: Node) -> onnx.ModelProto:
    """``proto`` with the sub-model inputs that stand for small constant inputs of ``n`` made initializers, so that
    trip counts and conditions computed from them are constants."""
    bound = []
    for k, v in enumerate(n.inputs):
        if v is not None and v.is_const and isinstance(v.const, Tensor) and v.const.numpy().size <= _BIND_ELEMENTS:
            bound.append(numpy_helper.from_array(np.asarray(v.const.numpy()), f"i{k}"))
    if not bound:
        return proto
    names = {t.name for t in bound}
    keep = [vi for vi in proto.graph.input if vi.name not in names]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    proto.graph.initializer.extend(bound)
    return proto


def _edgec_model(model: Model, n: Node) -> onnx.ModelProto | None:
    """The sub-model of an ``edgec::`` op: its defining expansion into standard ONNX (:mod:`edgec.ir.ops`)."""
    from ...ir import ops as edgec_ops

    if n.domain != edgec_ops.EDGEC_DOMAIN or n.op_type not in edgec_ops.OPS:
        return None
    if any(
        v is not None and (v.quant is not None or (v.const is not None and not isinstance(v.const, Tensor)))
        for v in n.inputs
    ):
        return None  # quantized weights and activations have no plain-ONNX form here
    ins, outs = _io(n)
    ctx = edgec_ops.ExpandContext(opset=model.opset, nodes=[], initializers=[], taken={vi.name for vi in ins + outs})
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(n.inputs)]
    edgec_ops.expand(
        n.op_type,
        ctx,
        names,
        [f"o{k}" for k in range(len(n.outputs))],
        dict(n.attributes),
        [v.rank if v is not None else None for v in n.inputs],
    )
    return helper.make_model(
        helper.make_graph(ctx.nodes, "edgec", ins, outs, ctx.initializers),
        opset_imports=[helper.make_opsetid("", model.opset)],
    )


def _splice(model: Model, n: Node, proto: onnx.ModelProto) -> list[Value] | None:
    """Import ``proto`` (inputs ``i<k>`` standing for ``n``'s inputs) and insert its nodes before ``n``: the
    values that replace ``n``'s outputs, or None when it holds ops of other domains or cannot be imported."""
    g = model.graph
    try:
        sub = from_onnx(proto)
    except Exception:  # noqa: BLE001 - an expansion the importer cannot take: no rewrite
        return None
    if any(s.domain for s in sub.graph):
        return None
    outs = _copy_before(g, n, sub.graph, {id(v): n.inputs[int(v.name[1:])] for v in sub.graph.inputs})
    return outs if all(o is not None for o in outs) else None  # type: ignore[return-value]


def _copy_before(g, n: Node, sub, env: dict) -> list:
    """Copy ``sub``'s nodes into ``g`` before ``n`` (its constants as new constants of ``g``, except those ``env``
    already maps, as its inputs are); the values of ``g`` that ``sub``'s outputs became."""
    for v in list(sub.initializers.values()):
        if id(v) not in env:
            env[id(v)] = g.add_const(g.unique_name(f"{n.name or 'n'}_{v.name}"), v.const)
    for m in sub:
        with g.inserting_before(n):
            new = g.op(
                m.op_type,
                [env[id(v)] if v is not None else None for v in m.inputs],
                dict(m.attributes) or None,
                domain=m.domain,
                name=f"{n.name or 'n'}_{m.op_type}",
                num_outputs=len(m.outputs),
            )
        for a, b in zip(m.outputs, new.outputs):
            b.dtype, b.shape = a.dtype, a.shape
            env[id(a)] = b
    return [env.get(id(o)) for o in sub.outputs]


# ------------------------------------------------------------------------------------------------ the pass
@dataclasses.dataclass(frozen=True)
class Decompose(Pass):
    name: ClassVar[str] = "decompose"
    summary: ClassVar[str] = "rewrite ops the target does not take into ops it does (edgec rules, onnx function bodies)"
    ops: str = option("", help="colon-separated ops to rewrite even where the target takes them (e.g. LRN:Gemm)")

    def run(self, model: Model, ctx: PassContext) -> bool:
        target = ctx.target
        caps = getattr(target, "capabilities", None)
        forced = {o for o in self.ops.split(":") if o}
        scratch_of: dict[int, Model] = {}  # a scratch graph's model, for the target's per-variant judgement

        def wanted(n: Node) -> bool:
            if n.qualified_op in forced or _canonical(n):
                return True
            if caps is None:
                return False
            if hasattr(target, "accepts_node"):  # the op and its variant (dtypes, attributes)
                owner = scratch_of.get(id(n.graph), model)
                return not target.accepts_node(n, owner)
            return not caps.accepts(n.qualified_op)

        g = model.graph
        changed = False
        with rewriting_for(target):
            for n in [n for n in g if wanted(n)]:
                changed |= self._decompose(model, n, wanted, ctx, scratch_of)
        if changed:
            infer_shapes(model)
            g.remove_unused_consts()
        return changed

    def _decompose(
        self, model: Model, n: Node, wanted: Callable[[Node], bool], ctx: PassContext, scratch_of: dict[int, Model]
    ) -> bool:
        """Rewrite ``n`` in a scratch model of its own (its inputs' dtypes, shapes and constants), again and again
        until no op there is wanted, then splice the result in; when some op stays wanted, ``n`` stays as it is
        (the target's check then names the model's own op, not a piece of its rewrite)."""
        sub = Graph("decompose")
        ins: list[Value | None] = []
        originals: dict[int, Value] = {}
        for k, v in enumerate(n.inputs):
            if v is None:
                ins.append(None)
                continue
            if v.const is not None:
                s = sub.add_const(f"i{k}", v.const)
            else:  # a dtype not known yet stays unknown in the scratch graph (the rules check for None)
                s = sub.add_input(f"i{k}", v.dtype, v.shape)  # type: ignore[arg-type]
            originals[id(s)] = v
            ins.append(s)
        node = sub.append(
            Node(
                n.op_type,
                ins,
                dict(n.attributes),
                domain=n.domain,
                name=n.name or n.op_type,
                outputs=[Value(f"o{k}", o.dtype, o.shape) for k, o in enumerate(n.outputs)],
            )
        )
        sub.outputs.extend(node.outputs)
        scratch = Model(sub, model.opset_imports)
        scratch_of[id(sub)] = scratch
        for _ in range(MAX_ROUNDS):
            todo = [m for m in sub if wanted(m)]
            if not todo:
                break
            progress = False
            for m in todo:
                outs = self._rewrite(scratch, m)
                if outs is not None:
                    self._replace(sub, m, outs)
                    progress = True
            if not progress:
                return False
            # the next round's rules read the new values' shapes and dtypes, and a body's shape arithmetic on
            # static shapes (Shape / Size / Range, ...) becomes constants rather than ops to rewrite
            SimplifyShapes().run(scratch, ctx)
        if any(wanted(m) for m in sub):
            return False
        self._splice_scratch(model.graph, n, sub, originals)
        return True

    @staticmethod
    def _splice_scratch(g, n: Node, sub, originals: dict[int, Value]) -> None:
        Decompose._replace(g, n, _copy_before(g, n, sub, dict(originals)))

    @staticmethod
    def _replace(g, n: Node, outs: list[Value]) -> None:
        keep_names = []
        for o, new in zip(n.outputs, outs):
            if any(x is o for x in g.outputs):  # a graph output keeps its name
                if new.producer is None or any(x is new for x in g.outputs):
                    new = _Rewriter(g, n).op("Identity", [new])
                keep_names.append((new, o.name))
            new.dtype = new.dtype or o.dtype
            new.shape = new.shape if new.shape is not None else o.shape
            o.replace_all_uses_with(new)
        g.remove(n)
        for new, name in keep_names:
            g.rename(new, name)

    @staticmethod
    def _rewrite(model: Model, n: Node) -> list[Value] | None:
        for fn_rule in RULES.get(n.qualified_op, ()):
            outs = fn_rule(_Rewriter(model.graph, n), n, model.opset)
            if outs is not None:
                return outs
        if n.domain:
            proto = _edgec_model(model, n)
        else:
            body = function_body(n, model.opset)
            proto = _body_model(model, n, body) if body is not None else None
        return _splice(model, n, proto) if proto is not None else None
