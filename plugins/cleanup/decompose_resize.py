"""decompose rule for Resize: every mode as one linear map per resized axis, for targets without the variant.

Resize is separable and linear in its input for every mode onnx defines (nearest, linear, cubic, with or
without antialias, every coordinate transformation): along each resized axis the output is ``M @ x`` for an
``[out, in]`` matrix ``M`` that depends on the sizes, the scale and the attributes only (tf_crop_and_resize:
and the roi; a point sampled outside the input takes extrapolation_value, a constant mask of the output).
``M`` is computed at compile time by onnx's reference Resize running the node's own attributes on the
identity (so it is onnx's Resize, not a re-derivation of it), then applied with a Gather (nearest: every row of ``M`` is one-hot,
so values move exactly, integers too) or a MatMul on the axis moved last (linear / cubic: the same weighted
sums, in another order of additions).
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...ir import Node, Value
from .decompose import _Rewriter, rule

MAX_MATRIX = 1 << 24  # elements of one axis' [out, in] matrix


def _attr(n: Node, name: str, default):
    v = n.attr(name, default)
    return v.decode() if isinstance(v, bytes) else v


def axis_matrix(
    n: Node,
    length: int,
    out: int,
    scale: float | None,
    opset: int,
    roi: tuple[float, float] | None = None,
    probe_outside: bool = False,
) -> np.ndarray | None:
    """``M`` ([out, length], float64) of ``n``'s attributes along one axis: onnx's reference Resize (the
    specification's, which the node suite's expected outputs come from; onnxruntime departs from it for
    align_corners with a fractional scale) of the identity, with the axis' scale (when the node has scales)
    or size. tf_crop_and_resize: ``roi`` is the axis' (start, end), sampled points outside the input give 0;
    ``probe_outside`` instead returns a [out] vector that is 1 exactly at those points."""
    from onnx.reference import ReferenceEvaluator

    attrs = {
        k: _attr(n, k, None)
        for k in (
            "mode",
            "coordinate_transformation_mode",
            "cubic_coeff_a",
            "exclude_outside",
            "nearest_mode",
            "antialias",
        )
    }
    attrs = {k: v for k, v in attrs.items() if v is not None}
    attrs["extrapolation_value"] = 1.0 if probe_outside else 0.0
    box = np.zeros(0, np.float32) if roi is None else np.array([0.0, roi[0], 1.0, roi[1]], np.float32)
    inits = [numpy_helper.from_array(box, "roi")]
    if scale is not None:
        inits.append(numpy_helper.from_array(np.array([1.0, scale], np.float32), "scales"))
        ins = ["x", "roi", "scales"]
    else:
        inits.append(numpy_helper.from_array(np.array([length, out], np.int64), "sizes"))
        ins = ["x", "roi", "", "sizes"]
    g = helper.make_graph(
        [helper.make_node("Resize", ins, ["y"], **attrs)],
        "axis",
        [helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, [length, length])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", max(opset, 13))])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = np.zeros((length, length)) if probe_outside else np.eye(length)
            # cast: run returns a list (a dict only for intermediate=True)
            y = np.asarray(cast("list[Any]", ReferenceEvaluator(m).run(None, {"x": x}))[0], np.float64)
    except Exception:  # noqa: BLE001 - a variant the reference does not compute: no rewrite
        return None
    if y.shape != (length, out) or not np.isfinite(y).all():
        return None
    return y[0].copy() if probe_outside else np.ascontiguousarray(y.T)


@rule("Resize")
def _resize(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    x, out = n.inputs[0], n.outputs[0]
    xs, ys = (None if v is None else v.static_shape for v in (x, out))
    if x is None or xs is None or ys is None or len(xs) != len(ys) or x.dtype is None:
        return None
    mode = _attr(n, "mode", "nearest")
    crop = _attr(n, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize"
    policy = _attr(n, "keep_aspect_ratio_policy", "stretch")
    if mode != "nearest" and not x.dtype.is_float:
        return None
    ins = list(n.inputs) + [None] * (4 - len(n.inputs))
    roi_in, scales_in, sizes_in = ins[1], ins[2], ins[3]
    if any(v is not None and not v.is_const for v in (roi_in, scales_in, sizes_in)):
        return None
    rank = len(xs)
    axes = [a % rank for a in (_attr(n, "axes", None) or range(rank))]
    scales = None
    if scales_in is not None and scales_in.static_shape not in (None, (0,)):
        scales = dict(zip(axes, np.asarray(scales_in.numpy(), np.float64).reshape(-1).tolist()))
    if policy != "stretch" and scales is None and sizes_in is not None:
        # one scale for every resized axis (the smallest or largest size ratio), sizes rounded half up from it,
        # as onnx's reference computes them: the per-axis matrices then take that scale
        want = dict(zip(axes, np.asarray(sizes_in.numpy(), np.int64).reshape(-1).tolist()))
        ratios = [want[a] / xs[a] for a in axes]
        k = min(ratios) if policy == "not_larger" else max(ratios)
        if any(int(k * xs[a] + 0.5) != ys[a] for a in axes):
            return None
        scales = {a: k for a in axes}
    rois: dict[int, tuple[float, float]] = {}
    if crop:
        if roi_in is None:
            return None
        box = np.asarray(roi_in.numpy(), np.float64).reshape(-1)
        if box.size != 2 * len(axes):
            return None
        rois = {a: (float(box[k]), float(box[k + len(axes)])) for k, a in enumerate(axes)}
    y, outside = x, np.zeros(ys, bool)
    for d in range(rank):
        s = scales.get(d, 1.0) if scales is not None else None
        if xs[d] == ys[d] and (s is None or s == 1.0) and (d not in rois or rois[d] == (0.0, 1.0)):
            continue  # an axis left alone
        if xs[d] * ys[d] > MAX_MATRIX:
            return None
        m = axis_matrix(n, xs[d], ys[d], s, opset, rois.get(d))
        if m is None:
            return None
        if crop:  # points sampled outside the input take extrapolation_value, whatever the other axes do
            probe = axis_matrix(n, xs[d], ys[d], s, opset, rois.get(d), probe_outside=True)
            if probe is None:
                return None
            shape = [1] * rank
            shape[d] = ys[d]
            outside |= (probe != 0).reshape(shape)
        if mode == "nearest":
            hits = np.isin(m, (0.0, 1.0)).all() and (m.sum(axis=1) <= 1).all()
            if not hits:
                return None
            y = r.op("Gather", [y, r.const(m.argmax(axis=1).astype(np.int64))], axis=d)
            continue
        perm = list(range(rank))
        perm[d], perm[-1] = perm[-1], perm[d]
        t = y if d == rank - 1 else r.op("Transpose", [y], perm=perm)
        t = r.op("MatMul", [t, r.const(m.T.astype(x.dtype.numpy))])
        y = t if d == rank - 1 else r.op("Transpose", [t], perm=perm)
    if outside.any():
        fill = r.const(np.asarray(float(_attr(n, "extrapolation_value", 0.0)), x.dtype.numpy))
        y = r.op("Where", [r.const(outside), fill, y])
    return [y if y is not x else r.op("Identity", [x])]
