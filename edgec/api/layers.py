"""The layers whose weights passes rewrite, and their inputs as rows of the weight's matrix.

Shared by the passes that work layer by layer on calibration data (quantize, vector quantization, pruning):
:func:`find_layers` finds the Linear / Conv layers and token-embedding tables with a constant float weight,
by name pattern, and :func:`layer_rows` turns a captured input (:class:`~edgec.api.capture.Stream`) into the
rows ``X`` that the flattened weight ``W [out, K]`` multiplies (``X W^T``), the operand of Hessians, Wanda
norms and output errors.
"""

from __future__ import annotations

import dataclasses
import re
from typing import cast

import numpy as np

from ..ir import Model, Node, QuantizedTensor, Value


@dataclasses.dataclass
class Layer:
    """A layer whose weight a pass rewrites: ``weight`` is input 1 of ``node`` (input 0 of an embedding Gather)."""

    node: Node
    weight: Value
    role: str  # "body" | "embedding" | "head"

    @property
    def kind(self) -> str:
        return {"edgec::Linear": "linear", "Conv": "conv", "Gather": "embedding"}[self.node.qualified_op]


def find_layers(model: Model, ops: tuple[str, ...], include: str, exclude: str) -> list[Layer]:
    """In graph order, each weight once: the nodes among ``ops`` (qualified op names, ``edgec::Linear`` /
    ``Conv``) whose weight is a constant float tensor not yet quantized, and the token-embedding tables (a 2-D
    constant gathered by a graph input), whose weight or node name matches the regular expression ``include``
    and not ``exclude`` (empty: none). ``role`` is ``head`` for a Linear producing a graph output."""
    inc = re.compile(include)
    exc = re.compile(exclude) if exclude else None
    outputs = {id(v) for v in model.graph.outputs}
    inputs = list(model.graph.inputs)
    layers, seen = [], set()
    for n in model.graph:
        op = n.qualified_op
        # An embedding table is gathered by token ids, a graph input; tables gathered by computed positions
        # (rotary cos/sin, learned position tables) stay float: they are not weights a format quantizes.
        if (
            op == "Gather"
            and n.inputs[0] is not None
            and n.inputs[0].is_const
            and not cast(Value, n.inputs[1]).is_const
            and n.attr("axis", 0) == 0
            and n.inputs[0].rank == 2
            and n.inputs[1] in inputs
        ):
            w, role = n.inputs[0], "embedding"
        elif op in ops and len(n.inputs) > 1 and n.inputs[1] is not None and n.inputs[1].is_const:
            w = n.inputs[1]
            role = "head" if op == "edgec::Linear" and id(n.output) in outputs else "body"
        else:
            continue
        if id(w) in seen or isinstance(w.const, QuantizedTensor) or not w.dtype or not w.dtype.is_float:
            continue
        if not (inc.search(w.name) or inc.search(n.name)) or (exc and (exc.search(w.name) or exc.search(n.name))):
            continue
        seen.add(id(w))
        layers.append(Layer(n, w, role))
    return layers


def _im2col(x: np.ndarray, n: Node, w_shape: tuple[int, ...]) -> np.ndarray:
    """Conv input patches ``[positions, I*kh*kw]`` in the weight's (i, kh, kw) order (groups == 1)."""
    kh, kw = w_shape[2:]
    pads = n.attr("pads", [0, 0, 0, 0])
    sh, sw = n.attr("strides", [1, 1])
    dh, dw = n.attr("dilations", [1, 1])
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    win = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, oh, ow, kh, kw]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * kh * kw)


def layer_rows(layer: Layer, x: np.ndarray) -> np.ndarray | None:
    """The layer's input as rows matching its flattened weight's K, or None when not expressible."""
    if layer.kind == "linear":
        return x.reshape(-1, x.shape[-1])
    if layer.kind == "conv" and layer.node.attr("group", 1) == 1:
        return _im2col(x, layer.node, cast("tuple[int, ...]", layer.weight.shape))
    return None


__all__ = ["Layer", "find_layers", "layer_rows"]
