"""decompose rules for the optimizer ops of ``ai.onnx.preview.training``: Adagrad, Adam and Momentum (standard and
Nesterov), one update per optimized tensor, written out as onnx's reference writes them, in float32 (the reference
promotes the terms built from ``T`` and the attributes to float64, so the last bit of an update may differ: agreement
within float rounding); the iteration count ``T`` may be a run-time input: its ``T > 0`` branches become Where.
"""

from __future__ import annotations

import numpy as np
import onnx

from ...ir import DType, Node, Value
from .decompose import _Rewriter, rule

_F32 = onnx.TensorProto.FLOAT


def _groups(n: Node, per: int) -> list[list[Value]] | None:
    """The per-tensor input groups (X, G, ...) of a variadic optimizer node: ``per`` inputs per tensor after R and
    T, laid out as X1..Xn, G1..Gn, ..."""
    ins = list(n.inputs)
    if any(v is None or v.dtype != DType.FLOAT32 for v in ins[2:]) or len(ins) < 2 + per or (len(ins) - 2) % per:
        return None
    if ins[0] is None or ins[0].dtype != DType.FLOAT32 or ins[1] is None or ins[1].dtype != DType.INT64:
        return None
    k = (len(ins) - 2) // per
    return [[ins[2 + j * k + i] for j in range(per)] for i in range(k)]  # type: ignore[misc]


def _f(r: _Rewriter, v: float) -> Value:
    return r.const(np.float32(v))


def _regularized(r: _Rewriter, x: Value, g: Value, norm: float) -> Value:
    return r.op("Add", [r.op("Mul", [_f(r, norm), x]), g])


@rule("ai.onnx.preview.training::Adagrad")
def _adagrad(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    groups = _groups(n, 3)
    if groups is None:
        return None
    rate, t = n.inputs[0], n.inputs[1]
    decay, eps, norm = (
        float(n.attr(k, d)) for k, d in (("decay_factor", 0.0), ("epsilon", 0.0), ("norm_coefficient", 0.0))
    )
    tf = r.op("Cast", [t], to=_F32)
    r_ = r.op("Div", [rate, r.op("Add", [_f(r, 1.0), r.op("Mul", [tf, _f(r, decay)])])])
    xs, hs = [], []
    for x, g, h in groups:
        gr = _regularized(r, x, g, norm)
        h_new = r.op("Add", [h, r.op("Mul", [gr, gr])])
        h_sqrt = r.op("Add", [r.op("Sqrt", [h_new]), _f(r, eps)])
        xs.append(r.op("Sub", [x, r.op("Div", [r.op("Mul", [r_, gr]), h_sqrt])]))
        hs.append(h_new)
    return xs + hs


@rule("ai.onnx.preview.training::Adam")
def _adam(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    groups = _groups(n, 4)
    if groups is None:
        return None
    rate, t = n.inputs[0], n.inputs[1]
    alpha, beta, eps = (float(n.attr(k, d)) for k, d in (("alpha", 0.9), ("beta", 0.999), ("epsilon", 0.0)))
    norm, post = float(n.attr("norm_coefficient", 0.0)), float(n.attr("norm_coefficient_post", 0.0))
    tf = r.op("Cast", [t], to=_F32)
    # r * sqrt(1 - beta ** t) / (1 - alpha ** t) where t > 0, else r (no bias correction)
    corrected = r.op(
        "Div",
        [
            r.op("Mul", [rate, r.op("Sqrt", [r.op("Sub", [_f(r, 1.0), r.op("Pow", [_f(r, beta), tf])])])]),
            r.op("Sub", [_f(r, 1.0), r.op("Pow", [_f(r, alpha), tf])]),
        ],
    )
    r_adj = r.op("Where", [r.op("Less", [r.const(np.int64(0)), t]), corrected, rate])
    xs, vs, hs = [], [], []
    for x, g, v, h in groups:
        gr = _regularized(r, x, g, norm)
        v_new = r.op("Add", [r.op("Mul", [_f(r, alpha), v]), r.op("Mul", [_f(r, 1 - alpha), gr])])
        h_new = r.op("Add", [r.op("Mul", [_f(r, beta), h]), r.op("Mul", [_f(r, 1 - beta), r.op("Mul", [gr, gr])])])
        h_sqrt = r.op("Add", [r.op("Sqrt", [h_new]), _f(r, eps)])
        x_new = r.op("Sub", [x, r.op("Mul", [r_adj, r.op("Div", [v_new, h_sqrt])])])
        xs.append(r.op("Mul", [_f(r, 1 - post), x_new]) if post else x_new)
        vs.append(v_new)
        hs.append(h_new)
    return xs + vs + hs


@rule("ai.onnx.preview.training::Momentum")
def _momentum(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    groups = _groups(n, 3)
    mode = n.attr("mode", "standard")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if groups is None or mode not in ("standard", "nesterov"):
        return None
    rate, t = n.inputs[0], n.inputs[1]
    alpha, beta, norm = (float(n.attr(k, 0.0)) for k in ("alpha", "beta", "norm_coefficient"))
    beta_adj = r.op("Where", [r.op("Less", [r.const(np.int64(0)), t]), _f(r, beta), _f(r, 1.0)])
    xs, vs = [], []
    for x, g, v in groups:
        gr = _regularized(r, x, g, norm)
        v_new = r.op("Add", [r.op("Mul", [_f(r, alpha), v]), r.op("Mul", [beta_adj, gr])])
        step = v_new if mode == "standard" else r.op("Add", [gr, r.op("Mul", [_f(r, alpha), v_new])])
        xs.append(r.op("Sub", [x, r.op("Mul", [rate, step])]))
        vs.append(v_new)
    return xs + vs
