"""simplify-shapes: with static shapes known, turn Shape/Size into constants and fold what follows,
repeating shape inference until nothing changes. This removes the shape arithmetic exporters emit."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...ir import Model, Tensor, infer_shapes
from ...ir.passes import Pass, PassContext, option
from .eliminate_identity import EliminateIdentity
from .fold_constants import FoldConstants


@dataclasses.dataclass(frozen=True)
class SimplifyShapes(Pass):
    name: ClassVar[str] = "simplify-shapes"
    summary: ClassVar[str] = "replace shape computations on static shapes by constants"
    max_rounds: int = option(
        8, check=lambda v: v > 0, allowed="a positive integer", help="fixpoint iterations of infer -> fold"
    )

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        any_change = False
        for _ in range(self.max_rounds):
            infer_shapes(model)
            changed = False
            for n in g:
                if n.domain or n.op_type not in ("Shape", "Size"):
                    continue
                x = n.arg(0)
                shape = x.static_shape
                if shape is None:
                    continue
                if n.op_type == "Shape":
                    start, end = n.attr("start", 0), n.attr("end", len(shape))
                    data = np.array(shape[slice(start, end)], np.int64)
                else:
                    data = np.array(int(np.prod(shape)), np.int64)
                c = g.add_const(g.unique_name(n.output.name + "_static"), Tensor(data))
                n.output.replace_all_uses_with(c)
                g.remove(n)
                changed = True
            ctx_changed = FoldConstants().run(model, ctx)
            ctx_changed |= EliminateIdentity().run(model, ctx)
            if not (changed or ctx_changed):
                break
            any_change = True
        return any_change
