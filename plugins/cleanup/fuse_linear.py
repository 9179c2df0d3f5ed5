"""fuse-linear: Gemm, and MatMul by a constant 2-D weight (+ bias Add), become ``edgec::Linear``.

``edgec::Linear`` keeps the weight as ``[out_features, in_features]``, the layout per-output-channel and
group-wise quantization work on, whatever layout the exporter chose.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...ir import Model, Node, QuantizedTensor, Tensor, Value
from ...ir.passes import Pass, PassContext
from ._match import const, other_input, replace, sole_user, take_output_name


def _weight(g, src: Value, transpose: bool) -> Value | None:
    """The [out, in] weight: ``src`` itself when already in that layout, else a transposed copy (a quantized
    weight on the same grid; None where its grid has no transpose: the MatMul stays)."""
    if not transpose:
        return src
    if isinstance(src.const, QuantizedTensor):
        qt = src.const.transposed()
        return None if qt is None else g.add_const(g.unique_name(src.name + "_t"), qt)
    return g.add_const(g.unique_name(src.name + "_t"), Tensor(np.ascontiguousarray(src.numpy().T)))


def _bias(g, src: Value) -> Value:
    """A 1-D bias: ``src`` itself when already 1-D, else a reshaped copy."""
    if src.rank == 1:
        return src
    return g.add_const(g.unique_name(src.name + "_1d"), Tensor(src.numpy().reshape(-1)))


@dataclasses.dataclass(frozen=True)
class FuseLinear(Pass):
    name: ClassVar[str] = "fuse-linear"
    summary: ClassVar[str] = "Gemm / MatMul(+Add) with constant weights -> edgec::Linear"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for n in g:
            if n.domain or n.graph is not g:
                continue
            if n.op_type == "Gemm":
                changed |= self._gemm(model, n)
            elif n.op_type == "MatMul":
                changed |= self._matmul(model, n)
        if changed:
            model.opset_imports.setdefault("edgec", 1)
            g.remove_unused_consts()
        return changed

    def _gemm(self, model: Model, n: Node) -> bool:
        g = model.graph
        a, b = n.inputs[0], n.inputs[1]
        c = n.inputs[2] if len(n.inputs) > 2 else None
        if n.attr("transA", 0) or n.attr("alpha", 1.0) != 1.0 or n.attr("beta", 1.0) != 1.0:
            return False
        if b is None or b.shape is None or b.const is None or b.rank != 2:  # a constant, plain or quantized
            return False
        cdata = const(c)
        if c is not None and (cdata is None or cdata.size != b.shape[1 - n.attr("transB", 0)]):
            return False
        w = _weight(g, b, transpose=not n.attr("transB", 0))
        if w is None:
            return False
        bias = _bias(g, c) if c is not None else None
        lin = Node(
            "Linear",
            [a, w] + ([bias] if bias is not None else []),
            domain="edgec",
            name=g.unique_name(n.name),
            outputs=1,
        )
        g.insert_before(n, lin)
        lin.output.dtype, lin.output.shape = n.output.dtype, n.output.shape
        take_output_name(g, n.output, lin.output)
        replace(g, n.output, lin.output, [n])
        return True

    def _matmul(self, model: Model, n: Node) -> bool:
        g = model.graph
        x, b = n.inputs
        if b is None or b.const is None or b.rank != 2 or b.static_shape is None:  # a constant, plain or quantized
            return False
        wshape = b.static_shape
        x = n.arg(0)
        if x.rank is None or x.rank < 2:
            return False
        w = _weight(g, b, transpose=True)
        if w is None:
            return False
        end, dead, bias = n.output, [n], None
        add = sole_user(n.output, "Add")
        if add is not None:
            cand = other_input(add, n.output)
            cd = const(cand)
            if (
                cd is not None
                and cd.size == wshape[1]
                and cd.ndim >= 1
                and cd.shape[-1] == wshape[1]
                and add.output.static_shape == n.output.static_shape
                and cand is not None
            ):
                bias = _bias(g, cand)
                end, dead = add.output, [add, n]
        lin = Node(
            "Linear",
            [x, w] + ([bias] if bias is not None else []),
            domain="edgec",
            name=g.unique_name(n.name),
            outputs=1,
        )
        g.insert_before(n, lin)
        lin.output.dtype, lin.output.shape = end.dtype, end.shape
        take_output_name(g, end, lin.output)
        replace(g, end, lin.output, dead)
        return True
