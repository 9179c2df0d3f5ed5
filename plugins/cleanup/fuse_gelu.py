"""fuse-gelu: the erf and tanh GELU decompositions (and ONNX Gelu) become ``edgec::Gelu``.

Erf form: ``x * 0.5 * (1 + Erf(x / sqrt(2)))`` in any association of the multiplications.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from ...ir import Model, Node, Value
from ...ir.passes import Pass, PassContext
from ._match import fuse, other_input, producer, scalar

_TOL = 1e-4


def _close(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= _TOL * abs(b)


def _erf_arg(erf: Node) -> Value | None:
    """x when the Erf's input is x/sqrt(2) or x*(1/sqrt(2))."""
    p = erf.arg(0).producer
    if p is None or p.domain:
        return None
    if p.op_type == "Div" and _close(scalar(p.inputs[1]), math.sqrt(2.0)):
        return p.inputs[0]
    if p.op_type == "Mul":
        for a in p.inputs:
            if _close(scalar(a), 1 / math.sqrt(2.0)):
                return other_input(p, a)
    return None


def _one_plus_erf(v: Value | None) -> tuple[Value, list[Node]] | None:
    add = producer(v, "Add")
    if add is None:
        return None
    for a in add.inputs:
        if _close(scalar(a), 1.0):
            erf = producer(other_input(add, a), "Erf")
            if erf is not None:
                x = _erf_arg(erf)
                scale = erf.arg(0).producer  # not None when x is not
                if x is not None and scale is not None:
                    return x, [add, erf, scale]
    return None


@dataclasses.dataclass(frozen=True)
class FuseGelu(Pass):
    name: ClassVar[str] = "fuse-gelu"
    summary: ClassVar[str] = "GELU decompositions -> edgec::Gelu"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for n in g:
            if n.graph is not g or n.domain:
                continue
            if n.op_type == "Gelu":
                new = Node(
                    "Gelu",
                    [n.inputs[0]],
                    {"approximate": n.attr("approximate", "none")},
                    domain="edgec",
                    name=g.unique_name("gelu"),
                    outputs=1,
                )
                fuse(g, n.output, new, [n])
                changed = True
                continue
            if n.op_type != "Mul":
                continue
            m = self._match(n)
            if m is None:
                continue
            x, dead = m
            new = Node("Gelu", [x], {"approximate": "none"}, domain="edgec", name=g.unique_name("gelu"), outputs=1)
            fuse(g, n.output, new, dead)
            changed = True
        if changed:
            model.opset_imports.setdefault("edgec", 1)
            g.remove_unused_consts()
        return changed

    @staticmethod
    def _match(top: Node) -> tuple[Value, list[Node]] | None:
        """Match ``top`` as the last Mul of x * 0.5 * (1 + erf(x/sqrt2)) in any grouping."""
        a, b = top.inputs
        for u, w in ((a, b), (b, a)):
            # (x) * (0.5 * (1+erf))
            inner = producer(w, "Mul")
            if inner is not None:
                for h in inner.inputs:
                    if _close(scalar(h), 0.5):
                        r = _one_plus_erf(other_input(inner, h))
                        if r is not None and r[0] is u:
                            return u, [top, inner] + r[1]
            # (x * 0.5) * (1+erf)   or   (0.5 * x) * (1+erf)
            half = producer(u, "Mul")
            r = _one_plus_erf(w)
            if half is not None and r is not None:
                for h in half.inputs:
                    if _close(scalar(h), 0.5) and other_input(half, h) is r[0]:
                        return r[0], [top, half] + r[1]
            # (x * (1+erf)) * 0.5
            if _close(scalar(u), 0.5):
                prod = producer(w, "Mul")
                if prod is not None:
                    for t in prod.inputs:
                        r = _one_plus_erf(t)
                        if r is not None and other_input(prod, t) is r[0]:
                            return r[0], [top, prod] + r[1]
        return None
