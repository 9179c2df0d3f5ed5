"""fuse-rmsnorm: ``x * 1/Sqrt(ReduceMean(x^2) + eps) * w`` (and the Div form) becomes ``edgec::RMSNorm``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...ir import Model, Node, Tensor, Value
from ...ir.passes import Pass, PassContext
from ._match import const, fuse, other_input, producer, scalar, sole_user
from .fuse_layernorm import last_axis_only, square_of


def _rsqrt_of(v: Value) -> tuple[Value, float, list[Node]] | None:
    """For ``v = 1/Sqrt(ReduceMean(x^2) + eps)``: (x, eps, nodes)."""
    rec = v.producer
    if rec is None or rec.domain:
        return None
    if rec.op_type == "Reciprocal":
        sq = producer(rec.inputs[0], "Sqrt")
    elif rec.op_type == "Div" and scalar(rec.inputs[0]) == 1.0:
        sq = producer(rec.inputs[1], "Sqrt")
    else:
        return None
    if sq is None:
        return None
    return _sqrt_chain(sq, [rec])


def _sqrt_chain(sq: Node, nodes: list[Node]) -> tuple[Value, float, list[Node]] | None:
    add = producer(sq.inputs[0], "Add")
    if add is None:
        return None
    eps = scalar(add.inputs[1])
    mean = producer(add.inputs[0], "ReduceMean")
    if eps is None or mean is None:
        return None
    x = square_of(mean.arg(0))
    square = mean.arg(0).producer  # not None when x is not
    if x is None or square is None or not last_axis_only(mean, x):
        return None
    return x, eps, nodes + [sq, add, mean, square]


@dataclasses.dataclass(frozen=True)
class FuseRMSNorm(Pass):
    name: ClassVar[str] = "fuse-rmsnorm"
    summary: ClassVar[str] = "decomposed RMS normalization -> edgec::RMSNorm"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for n in g:
            if n.graph is not g or n.domain or n.op_type not in ("Mul", "Div"):
                continue
            found = None
            if n.op_type == "Mul":
                for cand in n.inputs:
                    if cand is None:
                        continue
                    r = _rsqrt_of(cand)
                    if r is not None and other_input(n, cand) is r[0]:
                        found = r
                        break
            else:
                sq = producer(n.inputs[1], "Sqrt")
                r = _sqrt_chain(sq, []) if sq is not None else None
                if r is not None and r[0] is n.inputs[0]:
                    found = r
            if found is None:
                continue
            x, eps, chain = found
            mul_w = sole_user(n.output, "Mul")
            w = const(other_input(mul_w, n.output)) if mul_w is not None else None
            c = x.shape[-1] if x.shape else None
            if mul_w is not None and w is not None and isinstance(c, int) and w.size == c:
                end, dead = mul_w.output, [mul_w, n] + chain
            else:
                w = np.ones(c, np.float32) if isinstance(c, int) else None
                end, dead = n.output, [n] + chain
            if w is None:
                continue
            wv = g.add_const(g.unique_name("rmsnorm_weight"), Tensor(w.reshape(-1).astype(np.float32)))
            rms = Node("RMSNorm", [x, wv], {"epsilon": eps}, domain="edgec", name=g.unique_name("rmsnorm"), outputs=1)
            fuse(g, end, rms, dead)
            changed = True
        if changed:
            model.opset_imports.setdefault("edgec", 1)
            g.remove_unused_consts()
        return changed
