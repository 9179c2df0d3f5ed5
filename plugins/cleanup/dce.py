"""dce: remove nodes whose results nothing uses, and unused constants."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ...ir import Model
from ...ir.passes import Pass, PassContext
from ._match import is_output


@dataclasses.dataclass(frozen=True)
class DeadCodeElimination(Pass):
    name: ClassVar[str] = "dce"
    summary: ClassVar[str] = "remove unused nodes and constants"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for n in reversed(g.nodes):
            if not any(o.uses or is_output(g, o) for o in n.outputs):
                g.remove(n)
                changed = True
        return g.remove_unused_consts() > 0 or changed
