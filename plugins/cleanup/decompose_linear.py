"""decompose rules for ops that are linear maps of one input once their other inputs are constants: DFT (every
variant: forward, inverse, one-sided, irfft, a dft_length), STFT and Col2Im.

Each becomes a MatMul with the op's own matrix, which is *measured on onnx's reference*, not written here: the
reference op is run (in float64) on every basis vector of the input (the op's semantics, padding and
normalization included), and its outputs are the matrix's rows; the matrix is checked on a random input before
use. The product is computed in float64 where the target takes it, as the reference transforms, else in the model's
float type (another order of additions than an FFT: agreement within float rounding). A complex inverse DFT,
whose outputs for a real signal's spectrum are cancellation noise, is left alone. Matrices beyond :data:`MAX_ELEMENTS` are left
alone.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...ir import Node, Value
from ...ir.onnx_io import attribute_proto
from .decompose import _Rewriter, rule, target_dtypes

MAX_ELEMENTS = 1 << 22  # entries of a measured matrix (16 MiB in float32)


def _reference(op: str, attrs: dict, inputs: list, k: int, opset: int, x: np.ndarray) -> np.ndarray | None:
    """onnx's reference ``op`` on ``x`` (float64) as input ``k``; ``inputs`` holds the other inputs' constant
    arrays (None: absent)."""
    from onnx.reference import ReferenceEvaluator

    names = [f"i{j}" if (v is not None or j == k) else "" for j, v in enumerate(inputs)]
    inits = [
        numpy_helper.from_array(
            np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v), names[j]
        )
        for j, v in enumerate(inputs)
        if v is not None and j != k
    ]  # T: one type
    node = helper.make_node(op, names, ["y"])
    node.attribute.extend(attribute_proto(a, val) for a, val in attrs.items())
    g = helper.make_graph(
        [node],
        "linear",
        [helper.make_tensor_value_info(names[k], onnx.TensorProto.DOUBLE, list(x.shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, None)],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    try:
        # cast: run returns a list (a dict only for intermediate=True)
        return np.asarray(cast("list[Any]", ReferenceEvaluator(model).run(None, {names[k]: x}))[0], np.float64)
    except Exception:  # noqa: BLE001 - a variant the reference does not run: no rewrite
        return None


def _matrix(
    op: str, attrs: dict, inputs: list, opset: int, item: tuple[int, ...], k: int = 0
) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The matrix W (inputs x outputs) of ``op`` on one item of input ``k`` shaped ``item`` (a batch axis of 1
    first), and the item's output shape (batch axis dropped); checked on a random item."""
    size = int(np.prod(item))
    if size * size > MAX_ELEMENTS:  # the basis alone is size x size (checked before it is built)
        return None
    basis = np.eye(size, dtype=np.float64).reshape((size, *item[1:]))
    out = _reference(op, attrs, inputs, k, opset, basis)
    if out is None or out.shape[0] != size or size * (out.size // size) > MAX_ELEMENTS:
        return None
    w = out.reshape(size, -1)
    probe = np.random.default_rng(0).standard_normal((1, *item[1:]))
    want = _reference(op, attrs, inputs, k, opset, probe)
    if want is None or not np.allclose(probe.reshape(1, -1) @ w, want.reshape(1, -1), rtol=1e-9, atol=1e-9):
        return None  # not linear in this input
    return w, tuple(out.shape[1:])


def _consts(n: Node, skip: int = 0) -> list | None:
    """The constant arrays of ``n``'s inputs other than ``skip`` (None where absent), or None if one is not
    constant."""
    out: list = []
    for j, v in enumerate(n.inputs):
        if j == skip or v is None:
            out.append(None)
        elif not v.is_const:
            return None
        else:
            out.append(np.asarray(v.numpy()))
    return out


def _wide() -> bool:
    """The product is computed in float64 where the target takes it (as the reference transforms), else in the
    model's type."""
    dts = target_dtypes()
    return dts is None or "f64" in dts


def _apply(r: _Rewriter, x: Value, w: np.ndarray, batch: int, out_shape: tuple[int, ...], dtype: np.dtype) -> Value:
    """x (batch items, in order) @ W, reshaped to [batch, *out_shape], in float64 where the target takes it and
    cast back to ``dtype`` (x's)."""
    flat = r.op("Reshape", [x, r.const(np.array([batch, w.shape[0]], np.int64))])
    if _wide() and np.dtype(dtype) != np.float64:
        f64 = onnx.TensorProto.DOUBLE
        y = r.op("MatMul", [r.op("Cast", [flat], to=f64), r.const(w)])
        y = r.op("Cast", [y], to=onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    else:
        y = r.op("MatMul", [flat, r.const(w.astype(dtype))])
    return r.op("Reshape", [y, r.const(np.array([batch, *out_shape], np.int64))])


@rule("DFT")
def _dft(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """The transform along ``axis``: that axis and the complex pair moved last, every other index a batch item."""
    x = n.inputs[0]
    consts = _consts(n)
    if x is None or x.static_shape is None or x.dtype is None or not x.dtype.is_float or consts is None:
        return None
    shape = list(x.static_shape)
    attrs = dict(n.attributes)
    if opset >= 20:
        axis = int(consts[2].reshape(-1)[0]) if len(consts) > 2 and consts[2] is not None else -2
        consts = (consts + [None, None, None])[:3]
        consts[2] = np.array(1, np.int64)  # the moved item [1, L, c]: the axis is 1
    else:
        axis = int(n.attr("axis", 1))
        attrs["axis"] = 1
    axis = axis % len(shape)
    if axis == len(shape) - 1:
        return None
    if int(n.attr("inverse", 0)) and not int(n.attr("onesided", 0)):
        # a complex inverse: for the spectrum of real data, its imaginary outputs are cancellation noise, which
        # no other order of operations reproduces within onnx's atol (the suite's own expected values differ
        # from the reference's by 2e-7): left for the target's check to name
        return None
    others = [d for d in range(len(shape) - 1) if d != axis]
    perm = others + [axis, len(shape) - 1]
    m = _matrix("DFT", attrs, consts, opset, (1, shape[axis], shape[-1]))
    if m is None:
        return None
    w, out_item = m
    batch = int(np.prod([shape[d] for d in others], dtype=np.int64))
    y = _apply(r, r.op("Transpose", [x], perm=perm), w, batch, out_item, x.dtype.numpy)
    y = r.op("Reshape", [y, r.const(np.array([shape[d] for d in others] + list(out_item), np.int64))])
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return [r.op("Transpose", [y], perm=inv)]


@rule("STFT", "Col2Im")
def _per_item(r: _Rewriter, n: Node, opset: int) -> list[Value] | None:
    """Linear in each batch item (axis 0) of the input: STFT's frames of the signal, windowed and transformed;
    Col2Im's columns summed into the image."""
    x = n.inputs[0]
    consts = _consts(n)
    if x is None or x.static_shape is None or x.dtype is None or not x.dtype.is_float or consts is None:
        return None
    shape = list(x.static_shape)
    m = _matrix(n.op_type, dict(n.attributes), consts, opset, (1, *shape[1:]))
    if m is None:
        return None
    w, out_item = m
    return [_apply(r, x, w, shape[0], out_item, x.dtype.numpy)]
