"""The IR's integer semantics: how an int8 target computes a statically quantized Conv / Linear exactly.

A model whose activations carry :class:`ActivationQuant` annotations is defined by the reference executor as
float arithmetic on quantize-dequantized values. An integer target cannot reproduce float accumulation
order bit for bit, so this module defines the integer computation such targets run, and
:func:`integer_reference` executes it on onnxruntime (ConvInteger / MatMulInteger and int64 arithmetic),
which is what those targets are compared with bit for bit.

For an :class:`IntOp` (a Conv, depthwise Conv or ``edgec::Linear`` whose input is a quantized activation
``x = (xq - zx) * sx`` and whose weight is symmetric per-channel (or per-tensor) int8 ``w = wq * sw``):

* ``t[o] = sum((xq - zx) * wq[o])`` exactly (int32; padding reads ``xq = zx``);
* **float epilogue**: ``y = float32(t) * S[o] + b[o]`` with ``S = float32(sx) * float32(sw[o])`` (two float32
  roundings, no fused multiply-add);
* **requantizing epilogue** (``IntOp.fused``: the output, through an optional Relu / Clip, is a quantized
  activation read only by other IntOps of the same layout family): with ``Bq[o] = rne(b[o] / (sx sw[o]))``
  and ``M[o] = sx sw[o] / sv = m[o] 2^-(16 + s[o])`` (``2^15 <= m < 2^16``):
  ``p = floor((t + Bq) m / 2^16)``, ``q = floor((p + rnd) / 2^s)`` with ``rnd = floor(2^s / 2)``, then
  ``q = clamp(q + zv, lo, hi)`` where ``lo`` / ``hi`` are the codes of the Relu / Clip bounds (or the code
  range). This is the fixed-point arithmetic an HVX ``vmpye`` + ``vasr`` pair computes.

The two differ from the float simulation by at most about one quantization step; the reference executor
stays the float definition, and ``--verify`` compares a target with it within the usual tolerances.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .core import Model, Node, Value
from .tensor import ActivationQuant, QuantizedTensor, Tensor

if TYPE_CHECKING:
    from .executor import ReferenceExecutor


@dataclasses.dataclass
class IntOp:
    node: Node
    kind: str  # "conv", "dwconv" or "linear"
    x: Value
    xq: ActivationQuant
    wq: np.ndarray  # int8 codes, the node's weight shape
    sw: np.ndarray  # float32 [O]
    bias: np.ndarray  # float32 [O]
    chain: list[Node] = dataclasses.field(default_factory=list)  # the nodes the requantizing epilogue replaces
    fused: Value | None = None  # the quantized value the requantizing epilogue writes
    lo: int = 0  # clamp bounds of the fused codes (as stored: q + 128 when signed)
    hi: int = 255

    @property
    def cout(self) -> int:
        return int(self.wq.shape[0])

    @property
    def zx(self) -> int:
        """The input's zero point as an unsigned byte (a signed code q is stored as q + 128)."""
        return self.xq.zero_point + (128 if self.xq.signed else 0)

    def S(self) -> np.ndarray:
        return (np.float32(self.xq.scale) * self.sw).astype(np.float32)

    def wsum(self) -> np.ndarray:
        return cast(np.ndarray, self.wq.reshape(self.cout, -1).astype(np.int64).sum(1))

    def requant(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(Bq, m, s, rnd) of the requantizing epilogue, int64 [O] each."""
        sv = cast(ActivationQuant, cast(Value, self.fused).quant).scale  # called only on a fused IntOp
        acc_scale = np.float64(np.float32(self.xq.scale)) * self.sw.astype(np.float64)
        bq = np.clip(np.round(self.bias.astype(np.float64) / acc_scale), -(1 << 30), 1 << 30).astype(np.int64)
        m, s = requant_multiplier(acc_scale / np.float64(np.float32(sv)))
        return bq, m, s, (np.int64(1) << s) >> 1

    @property
    def zv(self) -> int:
        q = cast(ActivationQuant, cast(Value, self.fused).quant)  # called only on a fused IntOp
        return q.zero_point + (128 if q.signed else 0)


def requant_multiplier(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``M ~= m * 2^-(16 + s)`` with ``2^15 <= m < 2^16`` and ``0 <= s <= 31`` (smaller m for tiny M)."""
    M = np.asarray(M, np.float64)
    if np.any(M >= 1.0) or np.any(M <= 0):
        raise ValueError("requantization multipliers must lie in (0, 1)")
    e = np.floor(np.log2(M)).astype(np.int64)
    s = -1 - e
    m = np.round(M * np.exp2(16 + s)).astype(np.int64)
    over = m >= 1 << 16  # rounding reached 2^16: one bit less of shift
    m = np.where(over, m >> 1, m)
    s = np.where(over, s - 1, s)
    big = s > 31
    m = np.where(big, np.round(M * np.exp2(47)).astype(np.int64), m)
    s = np.where(big, 31, s)
    return m, s


def _code(a: float, q: ActivationQuant) -> int:
    """The stored (unsigned) code QuantizeLinear gives ``a`` (float32 division, round half to even)."""
    lo, hi = (-128, 127) if q.signed else (0, 255)
    c = int(np.clip(np.rint(np.float32(a) / np.float32(q.scale)) + q.zero_point, lo, hi))
    return c + (128 if q.signed else 0)


def _weight(v: Value | None, out_channels_axis: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    if v is None or not v.is_const or not isinstance(v.const, QuantizedTensor):
        return None
    q = v.const
    if (
        not q.signed
        or q.bits > 8
        or q.group_size is not None
        or q.codebook is not None
        or q.offsets is not None
        or q.layout is not None
        or q.axis not in (None, out_channels_axis)
    ):
        return None
    o = q.shape[0]
    if cast(np.ndarray, q.scales).size not in (1, o):
        return None
    sw = np.broadcast_to(np.asarray(q.scales, np.float32).reshape(-1), (o,))
    return np.asarray(q.codes, np.int8), np.ascontiguousarray(sw, np.float32)


def _const_array(v: Value | None, n: int) -> np.ndarray | None:
    if v is None:
        return np.zeros(n, np.float32)
    if not v.is_const or isinstance(v.const, QuantizedTensor):
        return None
    return np.asarray(cast(Tensor, v.const).numpy(), np.float32).reshape(-1)


@dataclasses.dataclass(frozen=True)
class IntLimits:
    """Which convolutions a target's integer kernels take (None: any): the Hexagon kernels take strides 1 and 2 and
    pads up to 16; the cpu kernels any. The target and its integer reference must plan with the same limits."""

    strides: tuple[int, ...] | None = None
    max_pad: int | None = None


def _candidate(n: Node, limits: IntLimits) -> IntOp | None:
    op = n.qualified_op
    if op not in ("Conv", "edgec::Linear") or not n.inputs or n.inputs[0] is None:
        return None
    x = n.inputs[0]
    if x.quant is None or x.quant.bits != 8 or x.static_shape is None or n.outputs[0].static_shape is None:
        return None
    w = _weight(n.inputs[1] if len(n.inputs) > 1 else None)
    if w is None:
        return None
    wq, sw = w
    bias = _const_array(n.inputs[2] if len(n.inputs) > 2 else None, wq.shape[0])
    if bias is None or bias.size != wq.shape[0]:
        return None
    if op == "edgec::Linear":
        if len(x.static_shape) < 2 or wq.ndim != 2:
            return None
        return IntOp(n, "linear", x, x.quant, wq, sw, bias)
    xs = x.static_shape
    if len(xs) != 4 or xs[0] != 1 or wq.ndim != 4:
        return None
    if n.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET") or any(d != 1 for d in n.attr("dilations", [1, 1])):
        return None
    st = list(n.attr("strides", [1, 1]))
    pads = list(n.attr("pads", [0, 0, 0, 0]))
    if (
        st[0] != st[1]
        or (limits.strides is not None and st[0] not in limits.strides)
        or (limits.max_pad is not None and max(pads) > limits.max_pad)
    ):
        return None
    group = int(n.attr("group", 1))
    if group == 1:
        return IntOp(n, "conv", x, x.quant, wq, sw, bias)
    if group == xs[1] == wq.shape[0] and wq.shape[1] == 1:
        return IntOp(n, "dwconv", x, x.quant, wq, sw, bias)
    return None


def plan(model: Model, limits: IntLimits = IntLimits()) -> dict[int, IntOp]:
    """The IntOps of ``model`` (by ``id(node)``), with their requantizing epilogues decided."""
    ops = {id(n): c for n in model.graph if (c := _candidate(n, limits)) is not None}
    outputs = {id(v) for v in model.graph.outputs}
    by_input: dict[int, list[IntOp]] = {}
    for c in ops.values():
        by_input.setdefault(id(c.x), []).append(c)
    for c in ops.values():
        out = c.node.outputs[0]
        chain, v, lo, hi = [c.node], out, None, None
        uses = out.uses
        if out.quant is None and len(uses) == 1 and id(out) not in outputs:
            nxt = uses[0].node
            if nxt.qualified_op == "Relu":
                chain.append(nxt)
                v, lo = nxt.outputs[0], 0.0
            elif (
                nxt.qualified_op == "Clip"
                and all(a is not None and a.is_const for a in nxt.inputs[1:3])
                and len(nxt.inputs) >= 3
            ):
                chain.append(nxt)
                v = nxt.outputs[0]
                lo, hi = (
                    float(np.asarray(a.const.numpy()).reshape(()))  # type: ignore[union-attr]  # checked above
                    for a in nxt.inputs[1:3]
                )
        if v.quant is None or v.quant.bits != 8 or id(v) in outputs or not v.uses:
            continue
        family = "linear" if c.kind == "linear" else "image"
        readers = by_input.get(id(v), [])
        if (
            len(readers) != len(v.uses)
            or any(u.index != 0 for u in v.uses)
            or any(("linear" if r.kind == "linear" else "image") != family for r in readers)
        ):
            continue
        if c.cout % 4:
            continue
        M = np.float64(np.float32(c.xq.scale)) * c.sw.astype(np.float64) / np.float64(np.float32(v.quant.scale))
        if np.any(M >= 1.0) or np.any(M <= 0):
            continue
        c.chain, c.fused = chain, v
        c.lo = _code(lo, v.quant) if lo is not None else 0
        c.hi = _code(hi, v.quant) if hi is not None else 255
    return ops


def chained(ops: dict[int, IntOp]) -> set[int]:
    """The Relu / Clip nodes (by ``id``) folded into a requantizing epilogue of ``ops``: a builder skips them."""
    return {id(d) for c in ops.values() if c.fused is not None for d in c.chain[1:]}


# Ops whose float32 result every IEEE implementation computes alike (one correctly rounded operation per element, or
# no arithmetic): between integer ops, they cannot make a target's value differ from the integer reference's.
EXACT_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Relu", "Clip", "Max", "Min", "MaxPool", "Sqrt",
        "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather", "Identity",
        "Pad", "Expand", "Tile", "Cast", "Where", "Equal", "Less", "Greater", "Not", "And", "Or", "Shape",
        "QuantizeLinear", "DequantizeLinear",
    }
)  # fmt: skip


def rounding_sensitive(model: Model, limits: IntLimits = IntLimits()) -> list[str]:
    """The nodes computed in float with implementation-dependent rounding (a reduction's order, a transcendental's
    approximation: Softmax, LayerNormalization, GELU, a float MatMul, ReduceMean, ...) whose results reach a quantized
    activation. A last-bit difference there can move a value across a rounding boundary of the later quantization:
    one step of difference from the integer reference that no integer kernel caused."""
    ops = plan(model, limits)
    seen: dict[int, bool] = {}
    found: list[str] = []
    stack = [v for v in model.graph.values() if v.quant is not None]
    while stack:
        v = stack.pop()
        n = v.producer
        if n is None or id(n) in seen:
            continue
        seen[id(n)] = True
        if id(n) not in ops and n.qualified_op not in EXACT_OPS:
            found.append(n.name)
        stack.extend(x for x in n.inputs if x is not None and not x.is_const)
    return found


def integer_reference(model: Model, limits: IntLimits = IntLimits()) -> ReferenceExecutor:
    """A :class:`ReferenceExecutor` running ``model`` with its IntOps in the integer semantics above."""
    from .executor import ReferenceExecutor
    from .serde import copy

    m = copy(model)
    g = m.graph
    for c in plan(m, limits).values():
        n = c.node
        O = c.cout
        conv = c.kind != "linear"
        shape = (1, O, 1, 1) if conv else (O,)
        k = n.name
        with g.inserting_before(n):
            zx = g.add_const(f"{k}__izx", np.array(c.xq.zero_point, np.int8 if c.xq.signed else np.uint8))
            sx = g.add_const(f"{k}__isx", np.array(c.xq.scale, np.float32))
            xq = g.op("QuantizeLinear", [n.inputs[0], sx, zx], name=f"{k}__iq").output  # (a fused producer
            # rewired it)
            if conv:
                wc = g.add_const(f"{k}__iw", c.wq)
                attrs: dict[str, Any] = {
                    a: n.attributes[a]
                    for a in ("kernel_shape", "pads", "strides", "group", "dilations")
                    if a in n.attributes
                }
                acc = g.op("ConvInteger", [xq, wc, zx], attrs, name=f"{k}__iconv").output
            else:
                wc = g.add_const(f"{k}__iw", np.ascontiguousarray(c.wq.T))
                acc = g.op("MatMulInteger", [xq, wc, zx], name=f"{k}__imm").output
            if c.fused is None:
                f = g.op("Cast", [acc], {"to": 1}, name=f"{k}__if").output
                f = g.op("Mul", [f, g.add_const(f"{k}__iS", c.S().reshape(shape))], name=f"{k}__imul").output
                y = g.op("Add", [f, g.add_const(f"{k}__ib", c.bias.reshape(shape))], name=f"{k}__iadd").output
                out = n.outputs[0]
            else:
                bq, mm, s, rnd = c.requant()
                i64: Callable[[str, Any], Value] = lambda nm, a: g.add_const(
                    f"{k}__i{nm}", np.broadcast_to(np.asarray(a, np.int64), (O,)).reshape(shape).copy()
                )  # noqa: E731
                t = g.op("Cast", [acc], {"to": 7}, name=f"{k}__i64").output
                t = g.op("Add", [t, i64("bq", bq)], name=f"{k}__ibq").output
                # floors by ONNX's truncating Div on a value made positive: t + bq lies within +-1.5 * 2^31 (an
                # int32 sum, bq clipped to 2^30), so 2^40 lifts it above zero, and 2^40 * m / 2^16 = m * 2^24 exactly
                t = g.op("Add", [t, i64("o40", np.int64(1) << 40)], name=f"{k}__io40").output
                t = g.op("Mul", [t, i64("m", mm)], name=f"{k}__im").output
                p = g.op("Div", [t, i64("d16", 1 << 16)], name=f"{k}__id16").output
                p = g.op("Sub", [p, i64("c24", mm << 24)], name=f"{k}__ic24").output
                p = g.op("Add", [p, i64("rnd", rnd + (np.int64(1) << 32))], name=f"{k}__irnd").output
                q = g.op("Div", [p, i64("ds", np.int64(1) << s)], name=f"{k}__ids").output
                q = g.op("Sub", [q, i64("c32", (np.int64(1) << (32 - s)) - c.zv)], name=f"{k}__ic32").output
                q = g.op("Max", [q, i64("lo", c.lo)], name=f"{k}__ilo").output
                q = g.op("Min", [q, i64("hi", c.hi)], name=f"{k}__ihi").output
                vq = cast(ActivationQuant, c.fused.quant)  # a fused output is quantized (plan)
                if vq.signed:
                    q = g.op("Sub", [q, i64("u", 128)], name=f"{k}__is").output
                q = g.op("Cast", [q], {"to": 3 if vq.signed else 2}, name=f"{k}__icodes").output
                zv = g.add_const(f"{k}__izv", np.array(vq.zero_point, np.int8 if vq.signed else np.uint8))
                y = g.op(
                    "DequantizeLinear",
                    [q, g.add_const(f"{k}__isv", np.array(vq.scale, np.float32)), zv],
                    name=f"{k}__idq",
                ).output
                out = c.fused
        name, is_output = out.name, any(o is out for o in g.outputs)
        out.replace_all_uses_with(y)
        y.quant = out.quant if c.fused is None else None
        for d in reversed(c.chain or [n]):
            g.remove(d)
        if is_output:
            g.rename(y, name)
    g.remove_unused_consts()
    return ReferenceExecutor(m)
