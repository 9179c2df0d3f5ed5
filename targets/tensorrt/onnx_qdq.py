"""edgec IR -> ONNX in TensorRT's explicit-quantization form (see the package docstring).

Built on the IR's own ONNX exporter (edgec ops expanded, activation quantization as QuantizeLinear /
DequantizeLinear), converted to the requested opset with ONNX's version converter; then every quantized
weight's float initializer is replaced by its integer codes and a DequantizeLinear in the layout TensorRT
fuses, and, for fp16, float tensors become float16 with fp32 graph inputs and outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UnsupportedError
from ...ir import Model, QuantizedTensor, Value
from ...ir.onnx_io import to_onnx
from ...target import Encoders


_HELD = "edgec.held"


def _hold_newer_ops(proto, current: int) -> set[str]:
    """Move default-domain nodes whose op ai.onnx ``current`` does not define yet into a private domain."""
    import onnx

    held = set()
    for n in proto.graph.node:
        if n.domain in ("", "ai.onnx"):
            try:
                onnx.defs.get_schema(n.op_type, current, "")
            except onnx.defs.SchemaError:
                n.domain = _HELD
                held.add(n.op_type)
    if held:
        proto.opset_import.append(onnx.helper.make_opsetid(_HELD, 1))
    return held


def _release_ops(proto, held: set[str], opset: int) -> None:
    """Move the held nodes back, each checked to be defined at ``opset`` with the same meaning as at its first
    definition (the schema the IR means)."""
    import onnx

    if not held:
        return
    for op in held:
        first = min(
            s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.name == op and s.domain == ""
        )
        if onnx.defs.get_schema(op, opset, "").since_version != first:
            raise UnsupportedError(
                f"{op} changed between ONNX opset {first} and {opset}; re-export the model at opset {opset}"
            )
    for n in proto.graph.node:
        if n.domain == _HELD:
            n.domain = ""
    keep = [o for o in proto.opset_import if o.domain != _HELD]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)


def build_qdq_onnx(model: Model, precision: str, opset: int):
    import onnx
    from onnx import numpy_helper, version_converter

    proto = to_onnx(model, activation_quant=True)
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current != opset:
        # Ops newer than the model's opset (e.g. LayerNormalization, which fuse-layernorm writes whatever the opset:
        # edgec's IR means the op's first definition) would stop the converter, which has no adapter for an op
        # its source opset lacks: they cross the conversion in a private domain, untouched.
        held = _hold_newer_ops(proto, current)
        try:
            proto = version_converter.convert_version(proto, opset)
        except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors
            raise UnsupportedError(
                f"converting the model from ONNX opset {current} to {opset} failed: {str(e).splitlines()[0]}"
            ) from None
        _release_ops(proto, held, opset)
    g = proto.graph
    info: dict[str, Any] = {"int8": [], "int4": [], "dequantized": [], "sparse": set(), "qdq": 0}
    for v in model.graph.initializers.values():
        if isinstance(v.const, QuantizedTensor) and v.uses:
            if all(u.node.qualified_op == "Gather" for u in v.uses):
                info["dequantized"].append(v.name)  # stays the exact float table to_onnx wrote
            else:
                ENCODERS.encoder(v.const, "the tensorrt target")(g, v, info)
        sp = v.sparsity
        if sp is not None and (sp.n, sp.m) == (2, 4) and v.uses:
            info["sparse"].add(v.name)
    info["qdq"] = sum(1 for n in g.node if n.op_type == "QuantizeLinear")
    _omit_unused_optional_outputs(g, opset)
    if precision == "fp16":
        keep32 = _float32_only_slots(proto, opset)
        f32_inits = {t.name: numpy_helper.to_array(t) for t in g.initializer if t.name in {s[2] for s in keep32}}
        _to_fp16(g)
        _restore_float32_slots(g, keep32, f32_inits)
    del g.value_info[:]
    proto = onnx.shape_inference.infer_shapes(proto)
    onnx.checker.check_model(proto)
    return proto, info


def _schema(n, opset: int):
    import onnx

    try:
        return onnx.defs.get_schema(n.op_type, opset, n.domain or "")
    except onnx.defs.SchemaError:
        return None


def _omit_unused_optional_outputs(g, opset: int) -> None:
    """Optional outputs nothing reads (MaxPool's Indices, LayerNormalization's Mean / InvStdDev, Dropout's mask,
    BatchNormalization's running statistics) are written as omitted, as the source model had them: the IR names
    every output, and TensorRT's parser refuses some of these outputs when they are present."""
    read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for n in g.node:
        schema = _schema(n, opset)
        if schema is None:
            continue
        formal = list(schema.outputs)
        for k, name in enumerate(n.output):
            if name and name not in read and k < len(formal) and formal[k].option == formal[k].option.Optional:
                n.output[k] = ""
        while len(n.output) > 1 and n.output[-1] == "":
            del n.output[-1]


def _float32_only_slots(proto, opset: int) -> list[tuple[str, int, str]]:
    """(the node's first output, input position, input name) of every float32 input whose formal type does not admit float16 (Resize's
    scales, NonMaxSuppression's boxes, ...): they stay float32 when the rest of the model becomes float16."""
    import onnx
    from onnx import TensorProto

    g = proto.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        for vi in inferred.graph.value_info:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    except Exception:  # noqa: BLE001 - what inference cannot type is left as it is
        pass
    slots = []
    for n in g.node:
        schema = _schema(n, opset)
        if schema is None or not schema.inputs or not n.output:
            continue
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        for k, name in enumerate(n.input):
            f = schema.inputs[min(k, len(schema.inputs) - 1)]
            ok = allowed.get(f.type_str, {f.type_str})
            if name and types.get(name) == TensorProto.FLOAT and "tensor(float16)" not in ok:
                slots.append((n.output[0], k, name))
    return slots


def _restore_float32_slots(g, slots: list[tuple[str, int, str]], inits: dict[str, np.ndarray]) -> None:
    """After the float16 conversion, feed each float32-only input slot a float32 value again: a graph input
    itself (graph inputs stay float32), an initializer its exact float32 original (``inits``), anything else a
    Cast back to float32."""
    from onnx import TensorProto, helper, numpy_helper

    if not slots:
        return
    graph_inputs = {i.name for i in g.input}
    by_output = {n.output[0]: n for n in g.node if n.output}
    made: dict[str, str] = {}
    casts: dict[str, list] = {}
    for out, k, original in slots:
        n = by_output.get(out + "__fp16") or by_output[out]  # a graph output's producer writes NAME__fp16
        if original in graph_inputs:
            n.input[k] = original
            continue
        name = n.input[k]
        if name not in made:
            made[name] = name + "__fp32"
            if original in inits:
                g.initializer.append(numpy_helper.from_array(inits[original], made[name]))
            else:
                casts.setdefault(out, []).append(
                    helper.make_node("Cast", [name], [made[name]], to=TensorProto.FLOAT, name=made[name])
                )
        n.input[k] = made[name]
    if casts:
        nodes = list(g.node)
        del g.node[:]
        for n in nodes:
            g.node.extend(casts.get(n.output[0], []) if n.output else [])
            g.node.append(n)


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


# The weight encodings, by scheme: what the target carries (its Capabilities.quant gives the widths).
ENCODERS = Encoders()


@ENCODERS.register("symmetric", "asymmetric")
def _replace_weight(g, v: Value, info: dict) -> None:
    """The float initializer ``v.name`` -> integer codes + DequantizeLinear (per channel int8, or blocked
    int4 along K for Linear weights, which are stored transposed so the MatMul reads them directly)."""
    from onnx import TensorProto, helper

    q = v.const
    assert isinstance(q, QuantizedTensor)  # the encoders are called on quantized weights only
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
    attrs: dict[str, Any]
    if q.bits > 4:  # int8 symmetric, per channel (or per tensor)
        per_tensor = scales.size == 1
        inits = [
            _tensor(base + "_codes", codes.astype(np.int8)),
            _tensor(base + "_scale", scales.reshape(()) if per_tensor else scales.reshape(-1)),
        ]
        attrs = {} if per_tensor else {"axis": 1 if is_linear else 0}
        info["int8"].append(v.name)
    else:  # 2-4 bit, weight-only, blocked along K: codes [K, out], parameters [K / block, out]
        block = q.group_size or k
        s = scales.reshape(scales.shape[0], -1).T  # [out, G] -> [G, out]
        signed = q.signed
        inits = [
            _tensor(base + "_codes", codes, TensorProto.INT4 if signed else TensorProto.UINT4),
            _tensor(base + "_scale", np.ascontiguousarray(s)),
        ]
        if q.zero_points is not None:
            zp = np.asarray(q.zero_points).reshape(scales.shape[0], -1).T
            inits.append(_tensor(base + "_zp", np.ascontiguousarray(zp), TensorProto.UINT4))
        attrs = {"axis": 0, "block_size": int(block)}
        info["int4"].append(v.name)
    g.initializer.extend(inits)
    for i, out in enumerate(outs):
        g.node.insert(
            0, helper.make_node("DequantizeLinear", [t.name for t in inits], [out], name=f"{base}_dq{i}", **attrs)
        )


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
            if (n.op_type, a.name) in _FLOAT_TYPE_ATTRS and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
            if a.type == a.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(half(a.t))
        if n.op_type == "ConstantOfShape" and not any(a.name == "value" for a in n.attribute):
            # its default value is a float32 zero
            n.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16))))
        if n.op_type in ("RandomNormal", "RandomUniform") and not any(a.name == "dtype" for a in n.attribute):
            n.attribute.append(helper.make_attribute("dtype", TensorProto.FLOAT16))  # defaults to float32
    casts_in = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            _rename(g, inp.name, inp.name + "__fp16")
            casts_in.append(
                helper.make_node(
                    "Cast", [inp.name], [inp.name + "__fp16"], to=TensorProto.FLOAT16, name=inp.name + "__to_fp16"
                )
            )
    for k, c in enumerate(casts_in):
        g.node.insert(k, c)
    for out in g.output:
        if out.type.tensor_type.elem_type == TensorProto.FLOAT:
            _rename(g, out.name, out.name + "__fp16")
            g.node.append(
                helper.make_node(
                    "Cast", [out.name + "__fp16"], [out.name], to=TensorProto.FLOAT, name=out.name + "__to_fp32"
                )
            )


# (op, attribute) pairs naming an output element type: float32 there becomes float16 with the rest of the model
_FLOAT_TYPE_ATTRS = frozenset(
    {
        ("Cast", "to"),
        ("RandomNormal", "dtype"),
        ("RandomUniform", "dtype"),
        ("RandomNormalLike", "dtype"),
        ("RandomUniformLike", "dtype"),
        ("EyeLike", "dtype"),
    }
)


def _rename(g, old: str, new: str) -> None:
    """Every node input and output named ``old`` becomes ``new`` (graph inputs/outputs keep their names)."""
    for n in g.node:
        for names in (n.input, n.output):
            for j, x in enumerate(names):
                if x == old:
                    names[j] = new
