"""eliminate-identity: drop ops that return their input unchanged (Identity, inference Dropout, no-op
Cast / Reshape / Expand / Flatten / Transpose / Squeeze)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ...ir import Model, Node
from ...ir.passes import Pass, PassContext
from ._match import is_output


def _is_noop(n: Node) -> bool:
    if n.domain:
        return False
    x = n.inputs[0] if n.inputs else None
    if x is None:
        return False
    y = n.outputs[0]
    if n.op_type == "Identity":
        return True
    if n.op_type == "Dropout":
        # Inference semantics; only when the mask output is unused.
        return len(n.outputs) == 1 or not n.outputs[1].uses
    same_shape = x.static_shape is not None and x.static_shape == y.static_shape
    if n.op_type == "Cast":
        return x.dtype is not None and x.dtype == y.dtype
    if n.op_type in ("Reshape", "Expand", "Flatten", "Squeeze", "Unsqueeze"):
        return same_shape and x.dtype == y.dtype
    if n.op_type == "Transpose":
        perm = n.attr("perm")
        return perm is not None and list(perm) == sorted(perm)
    return False


@dataclasses.dataclass(frozen=True)
class EliminateIdentity(Pass):
    name: ClassVar[str] = "eliminate-identity"
    summary: ClassVar[str] = "remove ops that return their input unchanged"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for n in g:
            if not _is_noop(n):
                continue
            x, y = n.arg(0), n.outputs[0]  # _is_noop: input 0 is present
            if is_output(g, y) and (is_output(g, x) or x in g.inputs or x.is_const):
                continue  # an output must stay a distinct, produced value
            if is_output(g, y):
                name = y.name
                y.replace_all_uses_with(x)
                g.remove(n)
                g.rename(x, name)  # keep the model's output name stable
            else:
                y.replace_all_uses_with(x)
                g.remove(n)
            changed = True
        return changed
