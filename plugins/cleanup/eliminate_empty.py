"""eliminate-empty: take tensors with no elements out of the graph where they only add nothing.

A model can be right and still hold empty tensors: RotaryEmbedding over the whole head splits off a
``[..., 0]`` part that is not rotated and concatenates it back; a causal convolution with a kernel of one keeps
a ``[B, C, 0]`` state. Targets cannot compile empty tensors (TVM cannot schedule a zero extent, Core ML has no
empty axes), and nothing is computed from them here, exactly:

* a Concat input that is empty along the concat axis is dropped (when another input remains);
* a Split whose empty outputs are then unused becomes one Slice per output still used.

Other empty values stay, so a model whose input shapes make a real tensor empty (a pooling window larger
than the image) is still reported as such.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...ir import Model, Node, Tensor, Value
from ...ir.passes import Pass, PassContext
from ._match import is_output


def _empty(v: Value | None, axis: int | None = None) -> bool:
    s = None if v is None else v.static_shape
    if s is None:
        return False
    return (0 in s) if axis is None else (0 <= axis < len(s) and s[axis] == 0)


def _drop_from_concat(n: Node) -> bool:
    out = n.outputs[0]
    if n.domain or out.static_shape is None or 0 in out.static_shape:
        return False
    axis = int(n.attr("axis", 0)) % len(out.static_shape)
    keep = [v for v in n.inputs if not _empty(v, axis)]
    if not keep or len(keep) == len(n.inputs):
        return False
    n.set_inputs(keep)
    return True


def _split_to_slices(model: Model, n: Node) -> bool:
    """A Split with an unused empty output: each used output becomes a Slice of the same range."""
    g = model.graph
    x = n.inputs[0]
    shape = None if x is None else x.static_shape
    if n.domain or shape is None or any(o is None or o.static_shape is None for o in n.outputs):
        return False
    if any(is_output(g, o) for o in n.outputs):
        return False  # graph outputs keep their producer (and their names)
    if not any(_empty(o) and not o.uses for o in n.outputs):
        return False
    axis = int(n.attr("axis", 0)) % len(shape)
    start = 0
    with g.inserting_before(n):
        for o in n.outputs:
            o_shape = o.static_shape
            assert o_shape is not None  # every output's static shape is checked above
            size = o_shape[axis]
            if o.uses:
                consts = [
                    g.add_const(g.unique_name(f"{n.name}_{what}"), Tensor(np.array([v], np.int64)))
                    for what, v in (("start", start), ("end", start + size), ("axis", axis))
                ]
                s = g.op("Slice", [x, *consts], name=f"{n.name}_slice")
                s.output.dtype, s.output.shape = o.dtype, o.shape
                o.replace_all_uses_with(s.output)
            start += size
    g.remove(n)
    return True


@dataclasses.dataclass(frozen=True)
class EliminateEmpty(Pass):
    name: ClassVar[str] = "eliminate-empty"
    summary: ClassVar[str] = "drop tensors with no elements from Concat and Split"

    def run(self, model: Model, ctx: PassContext) -> bool:
        changed = False
        for n in model.graph:
            if n.op_type == "Concat":
                changed |= _drop_from_concat(n)
        for n in model.graph:
            if n.op_type == "Split":
                changed |= _split_to_slices(model, n)
        return changed
