"""fold-pad: fold a constant zero Pad of spatial axes into the Conv that reads it.

TensorFlow-style "same" padding, as transformers' MobileNetV2 and EfficientNet exports write it, is an explicit
Pad in front of each convolution whose padding depends on the stride. A convolution pads with zeros itself, so
``Conv(Pad(x, pads))`` is ``Conv(x)`` with ``pads`` added to its own: one kernel instead of two, and on the cpu
target no NCHW island between two transposes around the Pad (it took two thirds of MobileNetV2's time).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ...ir import Model, Node
from ...ir.passes import Pass, PassContext
from ._match import const, fuse, producer


def _spatial_pads(pad: Node, rank: int) -> list[int] | None:
    """The Pad's [begin..., end...] amounts of the spatial axes (2..rank-1) when it is a constant zero padding of
    those axes only (none negative, none of the batch or channel axes), else None."""
    if pad.attr("mode", "constant") not in ("constant", b"constant"):
        return None
    if len(pad.inputs) < 2 or pad.inputs[1] is None:
        return None
    raw = const(pad.inputs[1])
    if raw is None:
        return None
    if len(pad.inputs) > 2 and pad.inputs[2] is not None:
        value = const(pad.inputs[2])
        if value is None or value.size > 1 or (value.size == 1 and float(value.reshape(())) != 0.0):
            return None
    axes = list(range(rank))
    if len(pad.inputs) > 3 and pad.inputs[3] is not None:
        a = const(pad.inputs[3])
        if a is None:
            return None
        axes = [int(x) % rank for x in a.reshape(-1)]
    amounts = [int(x) for x in raw.reshape(-1)]
    if len(amounts) != 2 * len(axes):
        return None
    full = [0] * (2 * rank)
    for i, ax in enumerate(axes):
        full[ax], full[rank + ax] = amounts[i], amounts[len(axes) + i]
    if any(x < 0 for x in full) or any(full[ax] or full[rank + ax] for ax in (0, 1)):
        return None
    return full[2:rank] + full[rank + 2 :]


@dataclasses.dataclass(frozen=True)
class FoldPad(Pass):
    name: ClassVar[str] = "fold-pad"
    summary: ClassVar[str] = "fold a constant zero Pad of spatial axes into the following Conv's pads"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for conv in list(g):
            if conv.op_type != "Conv" or conv.domain or conv.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
                continue
            pad = producer(conv.inputs[0], "Pad")
            if pad is None or len(pad.output.uses) != 1 or pad.output.quant is not None:
                continue
            src = pad.inputs[0]
            if src is None or src.shape is None or len(src.shape) < 3:
                continue
            rank = len(src.shape)
            extra = _spatial_pads(pad, rank)
            if extra is None:
                continue
            own = [int(x) for x in conv.attr("pads", [0] * (2 * (rank - 2)))]
            attrs = dict(conv.attributes)
            attrs["pads"] = [int(a + b) for a, b in zip(own, extra)]
            new = Node("Conv", [src, *conv.inputs[1:]], attrs, name=g.unique_name(conv.name), outputs=1)
            fuse(g, conv.output, new, [conv, pad])
            new.output.quant = conv.output.quant
            changed = True
        if changed:
            g.remove_unused_consts()
        return changed
