"""fold-batchnorm: fold inference BatchNormalization into the Conv that feeds it."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...ir import Model, Node, Tensor
from ...ir.passes import Pass, PassContext
from ._match import const, fuse, producer, sole_user


@dataclasses.dataclass(frozen=True)
class FoldBatchNorm(Pass):
    name: ClassVar[str] = "fold-batchnorm"
    summary: ClassVar[str] = "fold BatchNormalization into the preceding Conv"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for bn in g:
            if bn.op_type != "BatchNormalization" or bn.domain or len(bn.outputs) != 1:
                continue
            conv = producer(bn.inputs[0], "Conv")
            if conv is None or sole_user(conv.output) is not bn:
                continue
            params = [const(v) for v in bn.inputs[1:5]]
            w = const(conv.inputs[1])
            b = const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
            if (
                any(p is None for p in params)
                or w is None
                or (len(conv.inputs) > 2 and conv.inputs[2] is not None and b is None)
            ):
                continue
            gamma, beta, mean, var = (p.astype(np.float64) for p in params if p is not None)  # none is None
            k = gamma / np.sqrt(var + bn.attr("epsilon", 1e-5))
            w2 = (w.astype(np.float64) * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
            b2 = ((b.astype(np.float64) if b is not None else 0.0) - mean) * k + beta
            wv = g.add_const(g.unique_name(conv.arg(1).name + "_bnfold"), Tensor(w2))
            bv = g.add_const(g.unique_name(conv.name + "_bias_bnfold"), Tensor(b2.astype(w.dtype)))
            new = Node(
                "Conv", [conv.inputs[0], wv, bv], dict(conv.attributes), name=g.unique_name(conv.name), outputs=1
            )
            fuse(g, bn.output, new, [bn, conv])
            changed = True
        if changed:
            g.remove_unused_consts()
        return changed
