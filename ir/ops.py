"""The ``edgec`` operator domain: the few ops ONNX lacks (or gained only in recent opsets).

Each op defines its semantics once, as an expansion into standard ONNX nodes. The ONNX exporter (and
so the reference executor) uses that expansion; targets lower the op natively.

* ``edgec::Linear(X, W, B?)``: ``Y = X @ W^T + B`` with ``W`` laid out ``[out_features, in_features]``,
  the layout per-output-channel and group-wise weight quantization want.
* ``edgec::RMSNorm(X, scale) {epsilon}``: ``X / sqrt(mean(X^2, axis=-1) + epsilon) * scale``.
* ``edgec::Gelu(X) {approximate="none"|"tanh"}``.
* ``edgec::Attention(Q, K, V, mask?) {scale}``: ``softmax(Q @ K^T * scale + mask) @ V`` on ``[..., S, D]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper

EDGEC_DOMAIN = "edgec"
EDGEC_OPSET = 1


@dataclasses.dataclass
class ExpandContext:
    """Lets an expansion (or the exporter) create fresh names, constants and nodes in the ONNX graph being
    written. With ``external``, large constants go there as arrays and the proto gets a data-less
    placeholder (see :func:`edgec.ir.onnx_io.to_onnx`)."""

    opset: int
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    taken: set[str]
    external: dict[str, np.ndarray] | None = None
    # base -> a k below which every base__j is taken (``taken`` only grows), so that expanding n ops that
    # all want "mul__k" names costs O(n) instead of probing from zero every time
    _next: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)

    def name(self, base: str) -> str:
        k = self._next.get(base, 0)
        while f"{base}__{k}" in self.taken:
            k += 1
        n = f"{base}__{k}"
        self.taken.add(n)
        self._next[base] = k + 1
        return n

    def const(self, base: str, array: np.ndarray) -> str:
        from .onnx_io import initializer

        n = self.name(base)
        self.initializers.append(initializer(n, np.asarray(array), self.external))
        return n

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any) -> str:
        outs = outputs or [self.name(op.lower())]
        self.nodes.append(helper.make_node(op, inputs, outs, **attrs))
        return outs[0]

    def reduce_mean_last(self, x: str) -> str:
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.const("axes", np.array([-1], np.int64))], keepdims=1)
        return self.node("ReduceMean", [x], axes=[-1], keepdims=1)


Expander = Callable[[ExpandContext, list[str], list[str], dict[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class OpDef:
    name: str
    min_inputs: int
    max_inputs: int
    attributes: dict[str, object]  # name -> default
    expand: Expander
    doc: str


def _linear(ctx: ExpandContext, ins: list[str], outs: list[str], attrs: dict[str, Any]) -> None:
    wt = ctx.node("Transpose", [ins[1]], perm=[1, 0])
    if len(ins) > 2 and ins[2]:
        y = ctx.node("MatMul", [ins[0], wt])
        ctx.node("Add", [y, ins[2]], outs)
    else:
        ctx.node("MatMul", [ins[0], wt], outs)


def _rmsnorm(ctx: ExpandContext, ins: list[str], outs: list[str], attrs: dict[str, Any]) -> None:
    x, scale = ins
    sq = ctx.node("Mul", [x, x])
    mean = ctx.reduce_mean_last(sq)
    eps = ctx.const("eps", np.array(attrs.get("epsilon", 1e-5), np.float32))
    rms = ctx.node("Sqrt", [ctx.node("Add", [mean, eps])])
    ctx.node("Mul", [ctx.node("Div", [x, rms]), scale], outs)


def _gelu(ctx: ExpandContext, ins: list[str], outs: list[str], attrs: dict[str, Any]) -> None:
    approx = attrs.get("approximate", "none")
    x = ins[0]
    half = ctx.const("half", np.array(0.5, np.float32))
    one = ctx.const("one", np.array(1.0, np.float32))
    if approx == "tanh":
        c = ctx.const("c", np.array(math.sqrt(2.0 / math.pi), np.float32))
        k = ctx.const("k", np.array(0.044715, np.float32))
        x3 = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
        inner = ctx.node("Mul", [c, ctx.node("Add", [x, ctx.node("Mul", [k, x3])])])
        t = ctx.node("Tanh", [inner])
    else:
        r = ctx.const("rsqrt2", np.array(1.0 / math.sqrt(2.0), np.float32))
        t = ctx.node("Erf", [ctx.node("Mul", [x, r])])
    ctx.node("Mul", [ctx.node("Mul", [half, x]), ctx.node("Add", [one, t])], outs)


def _attention(ctx: ExpandContext, ins: list[str], outs: list[str], attrs: dict[str, Any]) -> None:
    q, k, v = ins[:3]
    # Transpose the last two dims of K whatever its rank (4 in practice).
    kt = ctx.node("Transpose", [k], perm=list(attrs["_k_perm"]))
    s = ctx.node("MatMul", [q, kt])
    s = ctx.node("Mul", [s, ctx.const("scale", np.array(attrs["scale"], np.float32))])
    if len(ins) > 3 and ins[3]:
        s = ctx.node("Add", [s, ins[3]])
    p = ctx.node("Softmax", [s], axis=-1)
    ctx.node("MatMul", [p, v], outs)


OPS: dict[str, OpDef] = {
    "Linear": OpDef("Linear", 2, 3, {}, _linear, "Y = X @ W^T + B, W is [out, in]"),
    "RMSNorm": OpDef("RMSNorm", 2, 2, {"epsilon": 1e-5}, _rmsnorm, "root-mean-square norm over the last axis"),
    "Gelu": OpDef("Gelu", 1, 1, {"approximate": "none"}, _gelu, "Gaussian error linear unit"),
    "Attention": OpDef(
        "Attention", 3, 4, {"scale": 1.0}, _attention, "softmax(Q K^T * scale + mask) V (mask additive, optional)"
    ),
}


def expand(
    op_type: str, ctx: ExpandContext, ins: list[str], outs: list[str], attrs: dict[str, Any], in_ranks: list[int | None]
) -> None:
    """Write the ONNX nodes that define ``edgec::op_type``."""
    if op_type not in OPS:
        raise ValueError(f"unknown edgec op {op_type!r}; known: {', '.join(sorted(OPS))}")
    attrs = {**OPS[op_type].attributes, **attrs}
    if op_type == "Attention":
        r = in_ranks[1] or 4
        perm = list(range(r))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        attrs["_k_perm"] = perm
    OPS[op_type].expand(ctx, ins, outs, attrs)
