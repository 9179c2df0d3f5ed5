"""fuse-layernorm: the decomposed layer norm older exporters emit becomes ONNX LayerNormalization.

Pattern: ``d = x - ReduceMean(x); y = d / Sqrt(ReduceMean(d^2) + eps) * gamma + beta`` over the last axis.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...ir import Model, Node, Tensor, Value
from ...ir.passes import Pass, PassContext
from ._match import const, fuse, other_input, producer, scalar, sole_user


def reduce_axes(n: Node) -> list[int] | None:
    """Axes of a ReduceMean (attribute before opset 18, input after)."""
    if n.attr("keepdims", 1) != 1:
        return None
    if len(n.inputs) > 1 and n.inputs[1] is not None:
        c = const(n.inputs[1])
        return None if c is None else [int(a) for a in c.reshape(-1)]
    return n.attr("axes")


def last_axis_only(n: Node, x: Value) -> bool:
    axes = reduce_axes(n)
    return axes is not None and len(axes) == 1 and x.rank is not None and axes[0] in (-1, x.rank - 1)


def square_of(v: Value) -> Value | None:
    """``x`` when ``v = Pow(x, 2)`` or ``v = Mul(x, x)``."""
    p = v.producer
    if p is None or p.domain:
        return None
    if p.op_type == "Pow" and scalar(p.inputs[1]) == 2.0:
        return p.inputs[0]
    if p.op_type == "Mul" and p.inputs[0] is p.inputs[1]:
        return p.inputs[0]
    return None


@dataclasses.dataclass(frozen=True)
class FuseLayerNorm(Pass):
    name: ClassVar[str] = "fuse-layernorm"
    summary: ClassVar[str] = "decomposed layer normalization -> LayerNormalization"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for div in g:
            if div.graph is not g or div.op_type != "Div" or div.domain:
                continue
            sub = producer(div.inputs[0], "Sub")
            sqrt = producer(div.inputs[1], "Sqrt")
            if sub is None or sqrt is None:
                continue
            x = sub.arg(0)
            mean1 = producer(sub.inputs[1], "ReduceMean")
            add_eps = producer(sqrt.inputs[0], "Add")
            if mean1 is None or mean1.inputs[0] is not x or not last_axis_only(mean1, x) or add_eps is None:
                continue
            mean2 = producer(add_eps.inputs[0], "ReduceMean")
            eps = scalar(add_eps.inputs[1])
            if mean2 is None or eps is None or square_of(mean2.arg(0)) is not sub.output:
                continue
            mul = sole_user(div.output, "Mul")
            if mul is None:
                continue
            gamma = const(other_input(mul, div.output))
            if gamma is None or x.shape is None or gamma.shape[-1:] != tuple(x.shape[-1:]):
                continue
            end, beta = mul.output, None
            add = sole_user(mul.output, "Add")
            if add is not None and const(other_input(add, mul.output)) is not None:
                beta = const(other_input(add, mul.output))
                end = add.output
            c = gamma.shape[-1]  # equal to x.shape[-1], checked above
            gv = g.add_const(g.unique_name("ln_gamma"), Tensor(np.broadcast_to(gamma, (c,)).astype(np.float32)))
            bv = g.add_const(
                g.unique_name("ln_beta"),
                Tensor(np.broadcast_to(beta if beta is not None else np.zeros(c, np.float32), (c,)).astype(np.float32)),
            )
            ln = Node(
                "LayerNormalization",
                [x, gv, bv],
                {"axis": -1, "epsilon": eps},
                name=g.unique_name("layernorm"),
                outputs=1,
            )
            sq = mean2.arg(0).producer
            chain = [
                n for n in (add if end is not mul.output else None, mul, div, sqrt, add_eps, mean2, sq, sub, mean1) if n
            ]
            fuse(g, end, ln, chain)
            changed = True
        if changed:
            g.remove_unused_consts()
        return changed
