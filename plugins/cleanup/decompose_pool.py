"""decompose rule for dilated pooling: MaxPool / AveragePool / LpPool with dilations, for targets without them.

A dilated window is a set of kernel offsets; the output at every position gathers the input at
``position * stride + offset * dilation``. So the pooled result is the elementwise Max (or the Sum, divided by
the count) of one strided Slice of the padded input per kernel offset: exact for Max, the same additions in
another order for the average. Padding: -inf / the type's minimum for Max, 0 for the average, whose divisor
counts the window's elements inside the input (count_include_pad=0) or its whole size (count_include_pad=1;
refused where a ceil_mode window runs past the padding, whose count onnx defines otherwise).
"""

from __future__ import annotations

import itertools

import numpy as np

from ...ir import Node, Value
from .decompose import _Rewriter, rule

MAX_OFFSETS = 512  # kernel positions (slices) in one window


@rule("MaxPool", "AveragePool", "LpPool")  # after decompose's own canonical forms (auto_pad, 1-D)
def _dilated(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    x, y = n.inputs[0], n.outputs[0]
    xs, ys = (None if v is None else v.static_shape for v in (x, y))
    if x is None or xs is None or ys is None or x.dtype is None or len(xs) < 3:
        return None
    if len(n.outputs) > 1 and n.outputs[1] is not None and n.outputs[1].uses:
        return None  # MaxPool's Indices
    spatial = len(xs) - 2
    k = [int(v) for v in n.attr("kernel_shape", [])]
    d = [int(v) for v in (n.attr("dilations") or [1] * spatial)]
    s = [int(v) for v in (n.attr("strides") or [1] * spatial)]
    pads = [int(v) for v in (n.attr("pads") or [0] * (2 * spatial))]
    auto = n.attr("auto_pad", "NOTSET")
    if len(k) != spatial or all(v == 1 for v in d) or auto not in ("NOTSET", b"NOTSET"):
        return None
    if int(np.prod(k)) > MAX_OFFSETS:
        return None
    out = list(ys[2:])
    need = [(o - 1) * st + (kk - 1) * dd + 1 for o, st, kk, dd in zip(out, s, k, d)]
    begin = pads[:spatial]
    end = [nd - i - b for nd, i, b in zip(need, xs[2:], begin)]  # may exceed the end pad (ceil_mode) or cut it
    avg, lp = n.op_type == "AveragePool", n.op_type == "LpPool"
    p = int(n.attr("p", 2))
    if lp and (not x.dtype.is_float or p < 1):
        return None
    if avg and any(e > p for e, p in zip(end, pads[spatial:])) and int(n.attr("count_include_pad", 0)):
        return None
    dt = x.dtype.numpy
    fill = 0 if avg or lp else (-np.inf if dt.kind == "f" else np.iinfo(dt).min)
    grow = [max(e, 0) for e in end]
    xp = x
    if any(begin) or any(grow):
        xp = r.op(
            "Pad", [x, r.const(np.array([0, 0] + begin + [0, 0] + grow, np.int64)), r.const(np.asarray(fill, dt))]
        )
    axes = r.const(np.arange(2, 2 + spatial, dtype=np.int64))
    steps = r.const(np.array(s, np.int64))
    if lp:  # (sum |x|^p)^(1/p): the powers summed over the window, padding adding 0
        xp = r.op("Abs", [xp]) if p == 1 else r.op("Pow", [r.op("Abs", [xp]), r.const(np.asarray(float(p), dt))])
    acc = None
    for off in itertools.product(*[range(kk) for kk in k]):
        starts = [o * dd for o, dd in zip(off, d)]
        ends = [st + (o - 1) * sd + 1 for st, o, sd in zip(starts, out, s)]
        part = r.op("Slice", [xp, r.const(np.array(starts, np.int64)), r.const(np.array(ends, np.int64)), axes, steps])
        acc = part if acc is None else r.op("Add" if avg or lp else "Max", [acc, part])
    if acc is None:  # an empty window (a kernel dimension of 0): no rewrite
        return None
    if lp:
        return [acc if p == 1 else r.op("Pow", [acc, r.const(np.asarray(1.0 / p, dt))])]
    if not avg:
        return [acc]
    if int(n.attr("count_include_pad", 0)):
        count = np.full(out, float(np.prod(k)))
    else:  # the window's elements inside the input, at every output position
        inside = np.pad(np.ones(xs[2:]), list(zip(begin, grow)))
        count = np.zeros(out)
        for off in itertools.product(*[range(kk) for kk in k]):
            idx = tuple(slice(o * dd, o * dd + (n_ - 1) * sd + 1, sd) for o, dd, n_, sd in zip(off, d, out, s))
            count += inside[idx]
    return [r.op("Div", [acc, r.const(count.reshape([1, 1] + out).astype(dt))])]
