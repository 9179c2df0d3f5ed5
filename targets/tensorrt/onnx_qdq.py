"""edgec IR -> ONNX in TensorRT's explicit-quantization form (see the package docstring).

Built on the IR's own ONNX exporter (edgec ops expanded, activation quantization as QuantizeLinear /
DequantizeLinear), converted to the requested opset with ONNX's version converter; then every quantized
weight's float initializer is replaced by its integer codes and a DequantizeLinear in the layout TensorRT
fuses, and, for fp16, float tensors become float16 with fp32 graph inputs and outputs.
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from ...ir import Model, QuantizedTensor, Value
from ...ir.onnx_io import to_onnx


def build_qdq_onnx(model: Model, precision: str, opset: int):
    import onnx
    from onnx import version_converter
    proto = to_onnx(model, activation_quant=True)
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current != opset:
        try:
            proto = version_converter.convert_version(proto, opset)
        except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors
            raise UnsupportedError(f"converting the model from ONNX opset {current} to {opset} failed: "
                                   f"{str(e).splitlines()[0]}") from None
    g = proto.graph
    info = {"int8": [], "int4": [], "dequantized": [], "sparse": set(), "qdq": 0}
    for v in model.graph.initializers.values():
        if isinstance(v.const, QuantizedTensor) and v.uses:
            if all(u.node.qualified_op == "Gather" for u in v.uses):
                info["dequantized"].append(v.name)  # stays the exact float table to_onnx wrote
            else:
                _replace_weight(g, v, info)
        sp = v.sparsity
        if sp is not None and (sp.n, sp.m) == (2, 4) and v.uses:
            info["sparse"].add(v.name)
    info["qdq"] = sum(1 for n in g.node if n.op_type == "QuantizeLinear")
    if precision == "fp16":
        _to_fp16(g)
    del g.value_info[:]
    proto = onnx.shape_inference.infer_shapes(proto)
    onnx.checker.check_model(proto)
    return proto, info


def _pop_initializer(g, name: str) -> None:
    for i, t in enumerate(g.initializer):
        if t.name == name:
            del g.initializer[i]
            return
    raise UnsupportedError(f"internal: weight {name!r} is not an initializer of the exported model")


def _tensor(name: str, arr: np.ndarray, elem: int | None = None):
    from onnx import helper, numpy_helper
    if elem is None:
        return numpy_helper.from_array(np.ascontiguousarray(arr), name)
    # 4-bit codes as raw bytes, two per byte, the first in the low nibble (ONNX's INT4/UINT4 layout), so
    # they are stored (and externalized) at half a byte each.
    flat = (np.asarray(arr).astype(np.int16).reshape(-1) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    packed = (flat[0::2] | (flat[1::2] << 4)).tobytes()
    return helper.make_tensor(name, elem, list(arr.shape), packed, raw=True)


def _replace_weight(g, v: Value, info: dict) -> None:
    """The float initializer ``v.name`` -> integer codes + DequantizeLinear (per channel int8, or blocked
    int4 along K for Linear weights, which are stored transposed so the MatMul reads them directly)."""
    from onnx import TensorProto, helper
    q: QuantizedTensor = v.const
    codes = np.asarray(q.codes)
    scales = np.asarray(q.scales, np.float32)
    _pop_initializer(g, v.name)
    is_linear = any(u.node.qualified_op == "edgec::Linear" for u in v.uses)
    consumers = [n for n in g.node if v.name in n.input]
    if is_linear:
        # edgec::Linear expands to Transpose(W) -> MatMul: fold the transpose into the stored codes.
        if not all(n.op_type == "Transpose" and list(n.input) == [v.name] for n in consumers):
            raise UnsupportedError(f"internal: Linear weight {v.name!r} is not read through its Transpose")
        outs = [n.output[0] for n in consumers]
        for n in consumers:
            g.node.remove(n)
        codes = codes.T
        k = codes.shape[0]
    else:
        outs = [v.name]
    base = v.name + "__q"
    if q.bits > 4:  # int8 symmetric, per channel (or per tensor)
        per_tensor = scales.size == 1
        inits = [_tensor(base + "_codes", codes.astype(np.int8)),
                 _tensor(base + "_scale", scales.reshape(()) if per_tensor else scales.reshape(-1))]
        attrs = {} if per_tensor else {"axis": 1 if is_linear else 0}
        info["int8"].append(v.name)
    else:  # 2-4 bit, weight-only, blocked along K: codes [K, out], parameters [K / block, out]
        block = q.group_size or k
        s = scales.reshape(scales.shape[0], -1).T  # [out, G] -> [G, out]
        signed = q.scheme == "symmetric"
        inits = [_tensor(base + "_codes", codes, TensorProto.INT4 if signed else TensorProto.UINT4),
                 _tensor(base + "_scale", np.ascontiguousarray(s))]
        if q.zero_points is not None:
            zp = np.asarray(q.zero_points).reshape(scales.shape[0], -1).T
            inits.append(_tensor(base + "_zp", np.ascontiguousarray(zp), TensorProto.UINT4))
        attrs = {"axis": 0, "block_size": int(block)}
        info["int4"].append(v.name)
    g.initializer.extend(inits)
    for i, out in enumerate(outs):
        g.node.insert(0, helper.make_node("DequantizeLinear", [t.name for t in inits], [out],
                                          name=f"{base}_dq{i}", **attrs))


def _to_fp16(g) -> None:
    """Float tensors -> float16; graph inputs and outputs stay float32 behind Casts."""
    from onnx import TensorProto, helper, numpy_helper

    def half(t):
        # Saturate to the largest finite half (masks often use float32's lowest value as "minus infinity").
        a = np.clip(numpy_helper.to_array(t), -65504.0, 65504.0).astype(np.float16)
        return numpy_helper.from_array(a, t.name)
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(half(t))
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
            if a.type == a.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(half(a.t))
    casts_in = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            _rename(g, inp.name, inp.name + "__fp16")
            casts_in.append(helper.make_node("Cast", [inp.name], [inp.name + "__fp16"], to=TensorProto.FLOAT16,
                                             name=inp.name + "__to_fp16"))
    for k, c in enumerate(casts_in):
        g.node.insert(k, c)
    for out in g.output:
        if out.type.tensor_type.elem_type == TensorProto.FLOAT:
            _rename(g, out.name, out.name + "__fp16")
            g.node.append(helper.make_node("Cast", [out.name + "__fp16"], [out.name], to=TensorProto.FLOAT,
                                           name=out.name + "__to_fp32"))


def _rename(g, old: str, new: str) -> None:
    """Every node input and output named ``old`` becomes ``new`` (graph inputs/outputs keep their names)."""
    for n in g.node:
        for names in (n.input, n.output):
            for j, x in enumerate(names):
                if x == old:
                    names[j] = new
