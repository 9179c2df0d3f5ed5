"""decompose rules for the integer ("QOperator") ops of quantized ONNX models: MatMulInteger, ConvInteger,
QLinearMatMul and QLinearConv, for targets that do not take them.

The products are computed exactly: each operand widened to int32, its zero point subtracted, then MatMul on
int32, or Conv in float32 (onnx's Conv is float only) where every partial sum is an integer below 2**24, which
float32 holds exactly in any order of additions: a window of K values of at most 8 bits each side, K * 255**2
< 2**24 (K <= 258: a 3x3 kernel over 28 channels per group, a 1x1 over 258); larger windows are left alone.
A target without int32 MatMul refuses it by name. QLinear* then requantize as
onnxruntime does: the int32 accumulator (plus QLinearConv's int32 bias) cast to float32, multiplied by
``a_scale * b_scale / y_scale`` computed in float32, rounded half to even, offset by ``y_zero_point`` and
saturated to the output type.
"""

from __future__ import annotations

import numpy as np
import onnx

from ...ir import Node, Value
from .decompose import _Rewriter, rule

I32, F32 = onnx.TensorProto.INT32, onnx.TensorProto.FLOAT


def _centered(r: _Rewriter, x: Value, zp: Value | None, shape: list[int] | None = None) -> Value:
    """int32(x) - int32(zero point), the zero point reshaped to broadcast where given."""
    xi = r.op("Cast", [x], to=I32)
    if zp is None:
        return xi
    z = r.op("Cast", [zp], to=I32)
    if shape is not None and zp.static_shape not in ((), (1,)):
        z = r.op("Reshape", [z, r.const(np.array(shape, np.int64))])
    return r.op("Sub", [xi, z])


def _requantize(r: _Rewriter, acc: Value, scale: Value, y: Value, y_zp: Value | None) -> Value | None:
    """saturate(round_half_even(float32(acc) * scale) + zero point), cast to ``y``'s type."""
    ydt = y.dtype
    if ydt is None or ydt.numpy.kind not in "iu":
        return None
    info = np.iinfo(ydt.numpy)
    f = r.op("Round", [r.op("Mul", [r.op("Cast", [acc], to=F32), scale])])
    if y_zp is not None:
        f = r.op("Add", [f, r.op("Cast", [y_zp], to=F32)])
    f = r.op("Min", [r.op("Max", [f, r.const(np.float32(info.min))]), r.const(np.float32(info.max))])
    return r.op("Cast", [f], to=ydt.onnx)


def _f32(r: _Rewriter, v: Value) -> Value:
    return r.op("Cast", [v], to=F32)


def _per_axis(r: _Rewriter, v: Value, shape: list[int]) -> Value:
    if v.static_shape in ((), (1,)):
        return v
    return r.op("Reshape", [v, r.const(np.array(shape, np.int64))])


def _opt(n: Node, k: int) -> Value | None:
    return n.inputs[k] if len(n.inputs) > k else None


@rule("MatMulInteger")
def _matmul_integer(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    a, b = n.inputs[0], n.inputs[1]
    if a is None or b is None or a.rank is None or b.rank is None or a.rank < 2:
        return None
    return [r.op("MatMul", [_centered(r, a, _opt(n, 2), [-1, 1]), _centered(r, b, _opt(n, 3))])]


@rule("QLinearMatMul")
def _qlinear_matmul(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = (list(n.inputs) + [None] * 8)[:8]
    if a is None or a_s is None or b is None or b_s is None or y_s is None or a.rank is None or a.rank < 2:
        return None
    acc = r.op("MatMul", [_centered(r, a, a_zp, [-1, 1]), _centered(r, b, b_zp)])
    scale = r.op("Div", [r.op("Mul", [_per_axis(r, _f32(r, a_s), [-1, 1]), _f32(r, b_s)]), _f32(r, y_s)])
    y = _requantize(r, acc, scale, n.outputs[0], y_zp)
    return None if y is None else [y]


def _conv_attrs(n: Node) -> dict:
    return {
        k: n.attr(k)
        for k in ("group", "pads", "strides", "dilations", "kernel_shape", "auto_pad")
        if n.attr(k) is not None
    }


@rule("ConvInteger")
def _conv_integer(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    x, w = n.inputs[0], n.inputs[1]
    if x is None or w is None or w.rank is None or not _exact_in_f32(x, w):
        return None
    wshape = [-1] + [1] * (w.rank - 1)
    return [_int_conv(r, n, _centered(r, x, _opt(n, 2)), _centered(r, w, _opt(n, 3), wshape))]


def _exact_in_f32(x: Value, w: Value) -> bool:
    """Every partial sum of the integer Conv fits float32's 24 exact bits (8-bit operands, zero points inside)."""
    if w is None or w.static_shape is None or len(w.static_shape) < 3 or x is None or x.dtype is None:
        return False
    if x.dtype.short not in ("i8", "u8") or w.dtype is None or w.dtype.short not in ("i8", "u8"):
        return False
    k = int(np.prod(w.static_shape[1:]))
    return k * 255 * 255 < 1 << 24


def _int_conv(r: _Rewriter, n: Node, x: Value, w: Value) -> Value:
    y = r.op("Conv", [r.op("Cast", [x], to=F32), r.op("Cast", [w], to=F32)], **_conv_attrs(n))
    return r.op("Cast", [y], to=I32)


@rule("QLinearConv")
def _qlinear_conv(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp, bias = (list(n.inputs) + [None] * 9)[:9]
    if x is None or x_s is None or w is None or w_s is None or y_s is None or w.rank is None or x.rank is None:
        return None
    if not _exact_in_f32(x, w):
        return None
    wshape = [-1] + [1] * (w.rank - 1)
    ch = [1, -1] + [1] * (x.rank - 2)
    acc = _int_conv(r, n, _centered(r, x, x_zp), _centered(r, w, w_zp, wshape))
    if bias is not None:
        acc = r.op("Add", [acc, r.op("Reshape", [r.op("Cast", [bias], to=I32), r.const(np.array(ch, np.int64))])])
    scale = r.op("Div", [r.op("Mul", [_f32(r, x_s), _per_axis(r, _f32(r, w_s), ch)]), _f32(r, y_s)])
    y = _requantize(r, acc, scale, n.outputs[0], y_zp)
    return None if y is None else [y]
