"""decompose rules for the ai.onnx.ml preprocessing ops that scikit-learn pipelines export (skl2onnx):
Binarizer, Scaler, Normalizer and ArrayFeatureExtractor, written exactly in ai.onnx ops. The ml domain's
other ops (label encoders over strings, tree ensembles, SVMs, ...) are left for the target's check to name."""

from __future__ import annotations

import numpy as np
import onnx

from ...ir import Node, Value
from .decompose import _Rewriter, rule

F32 = onnx.TensorProto.FLOAT


def _floats(n: Node, name: str) -> np.ndarray | None:
    v = n.attr(name)
    return None if v is None else np.asarray(v, np.float32).reshape(-1)


@rule("ai.onnx.ml::Binarizer")
def _binarizer(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """1 where x > threshold, else 0, in x's type."""
    x = n.inputs[0]
    if x is None or x.dtype is None:
        return None
    dt = x.dtype.numpy
    t = r.const(np.asarray(float(n.attr("threshold", 0.0)), dt))
    return [r.op("Where", [r.op("Greater", [x, t]), r.const(np.asarray(1, dt)), r.const(np.asarray(0, dt))])]


@rule("ai.onnx.ml::Scaler")
def _scaler(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """(x - offset) * scale per feature (the last axis), in float32."""
    x = n.inputs[0]
    if x is None or x.dtype is None:
        return None
    offset, scale = _floats(n, "offset"), _floats(n, "scale")
    y = x if x.dtype.short == "f32" else r.op("Cast", [x], to=F32)
    if offset is not None:
        y = r.op("Sub", [y, r.const(offset if offset.size > 1 else offset.reshape(()))])
    if scale is not None:
        y = r.op("Mul", [y, r.const(scale if scale.size > 1 else scale.reshape(()))])
    return [y if y is not x else r.op("Identity", [x])]


@rule("ai.onnx.ml::Normalizer")
def _normalizer(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """Each row of a [N, C] input divided by its L1 or L2 norm, floored at 1e-30 (onnx's reference and
    onnxruntime agree); the result is float32. MAX is left alone: onnxruntime divides by max(x), onnx's
    reference (and scikit-learn, whose Normalizer it comes from) by max(|x|)."""
    x = n.inputs[0]
    if x is None or x.rank != 2 or x.dtype is None:
        return None
    norm = n.attr("norm", "MAX")
    norm = norm.decode() if isinstance(norm, bytes) else norm
    y = x if x.dtype.short == "f32" else r.op("Cast", [x], to=F32)
    axes = r.const(np.array([1], np.int64))
    if norm == "L2":
        d = r.op("Sqrt", [r.op("ReduceSum", [r.op("Mul", [y, y]), axes], keepdims=1)])
    elif norm == "L1":
        d = r.op("ReduceSum", [r.op("Abs", [y]), axes], keepdims=1)
    else:
        return None
    return [r.op("Div", [y, r.op("Max", [d, r.const(np.float32(1e-30))])])]


@rule("ai.onnx.ml::ArrayFeatureExtractor")
def _array_feature_extractor(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """The last axis gathered at the (flattened) indices; a 1-D input gives one row, as onnx's reference."""
    x, idx = n.inputs[0], n.inputs[1]
    if x is None or idx is None or x.rank is None or x.rank < 1:
        return None
    flat = r.op("Reshape", [idx, r.const(np.array([-1], np.int64))])
    y = r.op("Gather", [x, flat], axis=x.rank - 1)
    return [r.op("Unsqueeze", [y, r.const(np.array([0], np.int64))]) if x.rank == 1 else y]
