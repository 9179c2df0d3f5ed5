"""fold-qdq: a pre-quantized ONNX model's QuantizeLinear / DequantizeLinear become edgec's own quantization.

Quantization-aware training and post-training tools (onnxruntime's quantizer, NNCF, TensorRT Model Optimizer,
torch's fake-quant export) write their decisions as Q/DQ nodes. edgec carries quantization as data instead:
:class:`~edgec.ir.QuantizedTensor` weights and per-tensor :class:`~edgec.ir.ActivationQuant` annotations, which
every target emits in its own format. This pass turns one into the other, exactly (the folded model computes the
same bits as the Q/DQ one on the reference executor, tested), so a model quantized elsewhere reaches every target
without being quantized again:

* **weights**: ``DequantizeLinear(codes, scale[, zero_point])`` of constants, and the fake-quant form
  ``DequantizeLinear(QuantizeLinear(W, scale, zero_point), scale, zero_point)`` of a float constant ``W`` (the
  codes computed as QuantizeLinear defines them: float32 division, round half to even, saturation), become one
  QuantizedTensor: per tensor (a scalar scale), per channel (``axis``), or blocked (opset 21's ``block_size``,
  2-D weights whose axis the block divides). Signed codes with a zero point of 0 are the ``symmetric`` scheme;
  a non-zero zero point is ``asymmetric`` (signed codes shifted to unsigned with their zero point: the same
  differences). int8 / uint8 / int4 / uint4 / int16 / uint16 codes, float32 scales.
* **int32 biases** (``DequantizeLinear`` of an int32 constant, scale ``a_scale * w_scale``): a float32 constant
  holding exactly what DequantizeLinear computes.
* **activations**: ``x -> QuantizeLinear(s, z) -> DequantizeLinear(s, z)`` with scalar parameters, where every
  use of ``x`` is such a pair with the same parameters and every use of the codes is such a DequantizeLinear,
  becomes ``x`` annotated with ``ActivationQuant(s, z, bits, signed)`` (8 or 16 bits), the pairs removed.

Anything else (float8 types, per-axis activations, a block that does not divide its axis, parameters that are
not constants, an activation also read unquantized) is left as the ONNX ops, which compute it exactly; the pass
reports what it folded and what it left (``model.reports["edgec.imported_quantization"]``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from ...ir import ActivationQuant, Model, Node, QuantizedTensor, Tensor, Value
from ...ir.dtypes import DType, code_range
from ...ir.tensor import expand_blocks
from ...ir.passes import Pass, PassContext
from ._match import is_output

REPORT_KEY = "edgec.imported_quantization"

# code dtype -> (bits, signed)
CODES = {
    DType.INT8: (8, True),
    DType.UINT8: (8, False),
    DType.INT4: (4, True),
    DType.UINT4: (4, False),
    DType.INT16: (16, True),
    DType.UINT16: (16, False),
}


def _plain(v: Value | None) -> np.ndarray | None:
    """A plain (not quantized) constant's array, else None."""
    if v is None or v.const is None or isinstance(v.const, QuantizedTensor):
        return None
    return np.asarray(v.const.numpy())


def _params(n: Node) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A Q / DQ node's constant scale (float32) and zero point (None: absent), else None."""
    scale = _plain(n.inputs[1])
    if scale is None or scale.dtype != np.float32:
        return None
    zv = n.inputs[2] if len(n.inputs) > 2 else None
    zp = _plain(zv) if zv is not None else None
    if zv is not None and zp is None:
        return None
    return scale, zp


def _same(a: tuple[np.ndarray, np.ndarray | None], b: tuple[np.ndarray, np.ndarray | None]) -> bool:
    za = np.zeros_like(a[0], np.int64) if a[1] is None else a[1].astype(np.int64)
    zb = np.zeros_like(b[0], np.int64) if b[1] is None else b[1].astype(np.int64)
    return a[0].shape == b[0].shape and np.array_equal(a[0], b[0]) and za.shape == zb.shape and np.array_equal(za, zb)


def _broadcast_params(
    scale: np.ndarray, zp: np.ndarray | None, shape: tuple[int, ...], axis: int, block: int
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]] | str:
    """The scale (and zero point) in QuantizedTensor's form (the codes' rank; each dimension 1, full or one per
    group), with the tensor's axis / group fields; or why it cannot be."""
    rank = len(shape)
    if scale.size == 1 and not block:
        fields: dict[str, Any] = {"axis": None}
        s = scale.reshape((1,) * rank)
        z = zp.reshape((1,) * rank) if zp is not None else None
        return s, z, fields
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        return f"axis {axis} out of range for a rank-{rank} weight"
    if not block:
        if scale.ndim != 1 or scale.size != shape[axis]:
            return f"a per-axis scale of {scale.size} for axis {axis} of extent {shape[axis]}"
        pshape = [1] * rank
        pshape[axis] = shape[axis]
        return scale.reshape(pshape), (zp.reshape(pshape) if zp is not None else None), {"axis": axis}
    if rank != 2 or shape[axis] % block:
        return f"block_size {block} along axis {axis} of a {list(shape)} weight (2-D weights whose axis it divides)"
    if scale.shape != tuple(shape[d] // block if d == axis else shape[d] for d in range(rank)):
        return f"a blocked scale of shape {list(scale.shape)} for a {list(shape)} weight"
    return scale, zp, {"axis": 1 - axis, "group_size": block, "group_axis": axis}


def quantized_tensor(
    codes: np.ndarray, dtype: DType, scale: np.ndarray, zp: np.ndarray | None, axis: int, block: int
) -> QuantizedTensor | str:
    """DequantizeLinear(codes, scale, zp) as a QuantizedTensor of the same values; or why it cannot be."""
    if dtype not in CODES:
        return f"codes of type {dtype.name.lower()}"
    bits, signed = CODES[dtype]
    shape = tuple(codes.shape)
    got = _broadcast_params(scale, zp, shape, axis, block)
    if isinstance(got, str):
        return got
    s, z, fields = got
    c = np.asarray(codes).astype(np.int8 if bits <= 8 and signed else np.uint8 if bits <= 8 else codes.dtype)
    if z is not None and signed and not np.any(z):
        z = None
    if z is None and signed:
        scheme = "symmetric"
    else:
        if signed:  # shift to unsigned codes and zero point: the differences, and so the values, are the same
            off = 1 << (bits - 1)
            c = (c.astype(np.int32) + off).astype(np.uint8 if bits <= 8 else np.uint16)
            z = (np.zeros_like(s, np.int32) if z is None else z.astype(np.int32)) + off
        scheme = "asymmetric"
        assert z is not None  # an unsigned code type always has a zero point (0 when absent)
        z = z.astype(np.uint8 if bits <= 8 else np.uint16)
    q = QuantizedTensor(
        codes=np.ascontiguousarray(c),
        bits=bits,
        scheme=scheme,  # type: ignore[arg-type]
        scales=np.ascontiguousarray(s, np.float32),
        zero_points=None if z is None else np.ascontiguousarray(z),
        method="imported",
        **fields,
    )
    errs = q.validate()
    return "; ".join(errs) if errs else q


def quantize_linear(
    x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, block: int, dtype: DType
) -> np.ndarray | str:
    """ONNX QuantizeLinear of a constant: saturate(round_half_even(x / scale) + zero_point), float32 arithmetic;
    or why its parameters do not fit ``x``."""
    got = _broadcast_params(scale, zp, tuple(x.shape), axis, block)
    if isinstance(got, str):
        return got
    s, z, _ = got
    y = np.rint(np.asarray(x, np.float32) / expand_blocks(s, x.shape))
    if z is not None:
        y = y + expand_blocks(z.astype(np.float32), x.shape)
    lo, hi = code_range(*CODES[dtype])
    return np.clip(y, lo, hi).astype(np.int32)


def _axes(use_node: Node, index: int) -> tuple[int, int] | None:
    """A weight's (output axis, input axis) in the op reading it as its weight, else None."""
    op = use_node.qualified_op
    if index != 1:
        return None
    if op == "MatMul":
        return 1, 0
    if op == "Gemm" and not use_node.attr("transA", 0):
        return (0, 1) if use_node.attr("transB", 0) else (1, 0)
    if op in ("Conv", "edgec::Linear"):
        return 0, 1
    return None


def _layout_problem(out: Value, rank: int, axis: int, block: int, scale_size: int) -> str | None:
    """Why a weight's per-channel or blocked grid is not one targets carry: channels must run along the output
    axis and blocks along the input axis of every MatMul / Gemm / Conv reading it (a per-tensor grid fits any
    use). None when it is."""
    if scale_size == 1 and not block:
        return None
    ax = axis + rank if axis < 0 else axis
    for u in out.uses:
        axes = _axes(u.node, u.index)
        if axes is None:
            return f"read by {u.node.op_type} {u.node.name} (a per-channel or blocked grid only folds into weights)"
        want = axes[1] if block else axes[0]
        if ax != want:
            kind = "blocks along" if block else "channels along"
            return f"{kind} axis {ax}, not the {'input' if block else 'output'} axis of {u.node.op_type} {u.node.name}"
    return None


@dataclasses.dataclass(frozen=True)
class FoldQDQ(Pass):
    name: ClassVar[str] = "fold-qdq"
    summary: ClassVar[str] = "QuantizeLinear / DequantizeLinear of weights and activations -> edgec's quantization"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        opset = model.opset_imports.get("", 0)
        report: dict[str, Any] = {"weights": 0, "biases": 0, "activations": 0, "left": []}
        changed = False
        for n in list(g):
            if n.graph is not g or n.domain or n.op_type != "DequantizeLinear":
                continue
            if self._weight(model, n, opset, report):
                changed = True
        for n in list(g):
            if n.graph is not g or n.domain or n.op_type != "QuantizeLinear":
                continue
            if self._activation(model, n, report):
                changed = True
        if changed:
            g.remove_unused_consts()
        if changed or report["left"]:
            model.report(REPORT_KEY).update(report)
        return changed

    def _leave(self, report: dict, n: Node, why: str) -> bool:
        report["left"].append(f"{n.op_type} {n.name}: {why}")
        return False

    def _weight(self, model: Model, dq: Node, opset: int, report: dict) -> bool:
        g = model.graph
        x = dq.inputs[0]
        params = _params(dq)
        out = dq.outputs[0]
        if x is None or params is None or out.dtype != DType.FLOAT32:
            return False  # not a constant's dequantization, or not float32: an activation's, or left as is
        scale, zp = params
        axis, block = int(dq.attr("axis", 1)), int(dq.attr("block_size", 0) or 0)
        src = None
        codes = _plain(x)
        dtype = x.dtype
        if codes is None:  # fake quant of a float constant: DQ(Q(W))
            q = x.producer
            if q is None or q.op_type != "QuantizeLinear" or q.domain or len(x.uses) != 1 or is_output(g, x):
                return False
            w = _plain(q.inputs[0])
            qparams = _params(q)
            if w is None or w.dtype != np.float32 or qparams is None:
                return False
            if not _same(qparams, params) or int(q.attr("axis", 1)) != axis:
                return self._leave(report, dq, "its QuantizeLinear has other parameters")
            if int(q.attr("block_size", 0) or 0) != block or dtype not in CODES or int(q.attr("saturate", 1)) != 1:
                return self._leave(report, dq, "a QuantizeLinear variant not folded")
            got = quantize_linear(w, scale, zp, axis, block, dtype)
            if isinstance(got, str):
                return self._leave(report, dq, got)
            codes, src = got, q
        if is_output(g, out):
            return self._leave(report, dq, "a graph output")
        if dtype == DType.INT32 and src is None:  # a bias: DequantizeLinear's float32 value, exactly
            params_nd = _broadcast_params(scale, zp, tuple(codes.shape), axis, 0)
            if isinstance(params_nd, str):
                return self._leave(report, dq, params_nd)
            s, z, _ = params_nd
            val = codes.astype(np.float32)
            if z is not None:
                val = val - expand_blocks(z.astype(np.float32), codes.shape)
            val = (val * expand_blocks(s, codes.shape)).astype(np.float32)
            new = g.add_const(g.unique_name(out.name + "_bias"), Tensor(val))
            report["biases"] += 1
        else:
            why = _layout_problem(out, codes.ndim, axis, block, scale.size)
            if why:
                return self._leave(report, dq, why)
            if dtype is None:
                return False
            qt = quantized_tensor(codes, dtype, scale, zp, axis, block)
            if isinstance(qt, str):
                return self._leave(report, dq, qt)
            new = g.add_const(g.unique_name(out.name + "_q"), qt)
            report["weights"] += 1
        out.replace_all_uses_with(new)
        g.remove(dq)
        if src is not None and not src.output.uses:
            g.remove(src)
        return True

    def _activation(self, model: Model, q: Node, report: dict) -> bool:
        g = model.graph
        x, codes = q.inputs[0], q.outputs[0]
        params = _params(q)
        if x is None or x.is_const or params is None or x.dtype != DType.FLOAT32:
            return False
        if params[0].size != 1 or codes.dtype not in CODES or is_output(g, codes):
            return self._leave(report, q, "a per-axis or non-integer activation quantization")
        if CODES[codes.dtype][0] not in (8, 16) or int(q.attr("saturate", 1)) != 1:
            return self._leave(report, q, f"{codes.dtype.name.lower()} activations")
        # every use of x: a QuantizeLinear with these parameters; every use of their codes: a DequantizeLinear
        # with them too (the value every consumer reads is then the annotation's)
        qs = [u.node for u in x.uses]
        dqs: list[Node] = []
        for qn in qs:
            p = _params(qn) if qn.op_type == "QuantizeLinear" and not qn.domain else None
            if p is None or not _same(p, params) or qn.outputs[0].dtype != codes.dtype or is_output(g, qn.outputs[0]):
                return self._leave(report, q, f"{x.name} is also read without this quantization")
            for u in qn.outputs[0].uses:
                d = u.node
                pd = _params(d) if d.op_type == "DequantizeLinear" and not d.domain else None
                if pd is None or not _same(pd, params) or d.outputs[0].dtype != DType.FLOAT32:
                    return self._leave(report, q, f"its codes are read by {d.op_type} {d.name}")
                dqs.append(d)
        if x.quant is not None:
            return self._leave(report, q, f"{x.name} is already quantized")
        named = [d.outputs[0] for d in dqs if is_output(g, d.outputs[0])]
        if named and (len(named) > 1 or x.producer is None or is_output(g, x)):
            return self._leave(report, q, "its dequantized value is a graph output twice, or an input's")
        bits, signed = CODES[codes.dtype]
        scale, zp = params
        aq = ActivationQuant(
            scale=float(scale.reshape(())),
            zero_point=int(zp.reshape(())) if zp is not None else 0,
            bits=bits,
            signed=signed,
            observer="imported",
        )
        if aq.validate():
            return self._leave(report, q, "; ".join(aq.validate()))
        name = named[0].name if named else None
        if named and name is not None:
            g.rename(named[0], g.unique_name(name + "_dq"))
        for d in dqs:
            d.outputs[0].replace_all_uses_with(x)  # a graph output too: x takes its place, and then its name
            g.remove(d)
        if name is not None:
            g.rename(x, name)
        for qn in qs:
            if qn.graph is g:
                g.remove(qn)
        x.quant = aq
        report["activations"] += 1
        return True
