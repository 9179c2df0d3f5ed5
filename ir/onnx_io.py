"""Conversion between the IR and ONNX ``ModelProto``.

``to_onnx`` writes standard ONNX: quantized weights become their exact dequantized values (or integer
codes dequantized in the graph, bit-identically) and ``edgec`` ops are expanded into their ONNX
definitions. It is what the reference executor runs and what shape inference reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any, cast

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import ops as edgec_ops
from .core import ConstData, Graph, IRError, Model, Node, Value, gc_paused
from .dtypes import DType
from .schemes import Vector
from .tensor import ActivationQuant, QuantizedTensor, Tensor, vector_bases


class UnsupportedModelError(ValueError):
    """The model uses something edgec cannot represent; ``problems`` lists every instance."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message + "\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


# ------------------------------------------------------------------------------------------------ import
def _attr_value(a: onnx.AttributeProto) -> Any:
    t = a.type
    A = onnx.AttributeProto
    if t == A.FLOAT:
        return float(a.f)
    if t == A.INT:
        return int(a.i)
    if t == A.STRING:
        return a.s.decode("utf-8", errors="replace")
    if t == A.FLOATS:
        return [float(x) for x in a.floats]
    if t == A.INTS:
        return [int(x) for x in a.ints]
    if t == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if t == A.TENSOR:
        if a.t.data_location == onnx.TensorProto.EXTERNAL:  # numpy_helper would read it from the current directory
            raise NotImplementedError(
                "TENSOR with external data (only initializers and Constant values may name external data)"
            )
        return _tensor(numpy_helper.to_array(a.t), DType.from_onnx(a.t.data_type))
    raise NotImplementedError(A.AttributeType.Name(t))


def _tensor(arr: np.ndarray, dt: DType) -> Tensor:
    """A constant read from ONNX: sub-byte integers (ml_dtypes int4 / int2 arrays from onnx) held unpacked, as
    the IR holds them (one value per int8 / uint8 element)."""
    if dt.bits < 8 and not dt.is_narrow_float and arr.dtype != dt.numpy:
        arr = np.asarray(arr).astype(dt.numpy)
    return Tensor(arr, dt)


def _type_of(vi: onnx.ValueInfoProto) -> tuple[DType | None, tuple[int | str | None, ...] | None]:
    t = vi.type
    if not t.HasField("tensor_type"):
        return None, None
    tt = t.tensor_type
    elem = tt.elem_type
    try:
        dt = DType.from_onnx(elem) if elem else None
    except ValueError:
        dt = None
    if not tt.HasField("shape"):
        return dt, None
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        which = d.WhichOneof("value")
        if which == "dim_value":
            dims.append(int(d.dim_value))
        elif which == "dim_param":
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dt, tuple(dims)


_MAPPABLE = frozenset(
    np.dtype(x)
    for x in (
        "float32",
        "float16",
        "float64",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "bool",
    )
)


def _declared_bytes(t: onnx.TensorProto) -> int:
    try:
        item = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:  # noqa: BLE001 - strings and exotic types: count 4 bytes per element
        item = 4
    return int(np.prod([max(int(d), 0) for d in t.dims], dtype=object)) * item


def _check_weight_budget(initializers: Iterable[onnx.TensorProto]) -> None:
    """Refuse, before any external data is read, weights that cannot fit the memory budget."""
    from .budget import over_budget

    msg = over_budget("importing the model's weights", {"weights": sum(_declared_bytes(t) for t in initializers)})
    if msg:
        raise ValueError(msg)


def _external_array(t: onnx.TensorProto, base_dir: str) -> np.ndarray:
    """An external-data initializer as a read-only memory map of its file (never copied): opened through onnx's
    own checked open, which confines the location to ``base_dir``; offset and length checked against the file
    and the tensor's shape. Types numpy cannot map directly go through onnx's loader instead."""
    from onnx import external_data_helper as edh

    info = edh.ExternalDataInfo(t)
    dims = tuple(int(d) for d in t.dims)
    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    except Exception:  # noqa: BLE001 - a type without a numpy dtype: onnx reads it
        dt = None
    if dt is None or dt not in _MAPPABLE or not hasattr(edh, "_open_external_data_fd"):
        edh.load_external_data_for_tensor(t, base_dir)
        return numpy_helper.to_array(t)
    fd = edh._open_external_data_fd(base_dir, info.location, t.name, True)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        offset = int(info.offset or 0)
        length = int(info.length) if info.length is not None else size - offset
        need = int(np.prod(dims, dtype=object)) * dt.itemsize
        if offset > size:
            raise ValueError(
                f"external data offset ({offset}) exceeds file size ({size}) of {info.location!r} for tensor {t.name!r}"
            )
        if length > size - offset:
            raise ValueError(
                f"external data length ({length}) exceeds available data ({size - offset} bytes from "
                f"offset {offset} in {info.location!r}) for tensor {t.name!r}"
            )
        if length != need:
            raise ValueError(
                f"external data of {t.name!r} is {length} bytes, its shape {list(dims)} of {dt.name} needs {need}"
            )
        if need == 0:
            return np.zeros(dims, dt)
        return np.memmap(f, dtype=dt.newbyteorder("<"), mode="r", offset=offset, shape=dims)


@gc_paused()
def from_onnx(proto: onnx.ModelProto, base_dir: str | None = None) -> Model:
    """Convert an ONNX model. Every unsupported construct is collected and reported at once."""
    problems: list[str] = []
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): int(o.version) for o in proto.opset_import}
    g_in = proto.graph
    graph = Graph(g_in.name or "main")
    env: dict[str, Value] = {}
    init_names = {t.name for t in g_in.initializer}
    _check_weight_budget(
        list(g_in.initializer)
        + [
            a.t
            for n in g_in.node
            if n.op_type == "Constant"
            for a in n.attribute
            if a.type == onnx.AttributeProto.TENSOR
        ]
    )
    for t in g_in.initializer:
        try:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                if base_dir is None:
                    raise ValueError("it names external data, but the model was not read from a file")
                arr = _external_array(t, base_dir)
            else:
                arr = numpy_helper.to_array(t)
            cdt = DType.from_onnx(t.data_type)
        except (OSError, ValueError, onnx.checker.ValidationError) as e:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                # onnx refuses locations outside the model's folder (absolute, or escaping with ..) and lengths
                # beyond the file: never read outside base_dir, never allocate what the file does not hold
                raise ValueError(f"could not read the model's external data files from {base_dir}: {e}") from None
            problems.append(f"initializer {t.name!r}: cannot read its data ({e})")
            continue
        except Exception as e:  # noqa: BLE001 - report every broken initializer
            problems.append(f"initializer {t.name!r}: cannot read its data ({e})")
            continue
        env[t.name] = graph.add_const(t.name, _tensor(arr, cdt))
    for vi in g_in.input:
        if vi.name in init_names:
            continue
        dt, shape = _type_of(vi)
        if dt is None:
            problems.append(f"graph input {vi.name!r} is not a tensor of a supported element type")
            continue
        env[vi.name] = graph.add_input(vi.name, dt, shape)
    types = {vi.name: _type_of(vi) for vi in list(g_in.value_info) + list(g_in.output)}
    # ai.onnx.ml and the training optimizers: decompose rules
    supported_domains = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", edgec_ops.EDGEC_DOMAIN}
    subgraph_types = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    untyped = (None, None)

    def where_of(k: int, n: onnx.NodeProto) -> str:  # only formatted for a problem
        return (
            f"node {n.name or f'#{k}'} ({(n.domain + '::') if n.domain else ''}{n.op_type}, opset "
            f"{opsets.get(n.domain or '', '?')})"
        )

    for k, n in enumerate(g_in.node):
        domain, op_type, n_attrs = n.domain, n.op_type, n.attribute
        if domain not in supported_domains:
            problems.append(f"{where_of(k, n)}: operator domain {domain!r} is not supported")
            continue
        if n_attrs and any(a.type in subgraph_types for a in n_attrs):
            problems.append(f"{where_of(k, n)}: control flow with subgraphs is not supported")
            continue
        if op_type == "Constant" and domain in ("", "ai.onnx"):
            where = where_of(k, n)
            a = n.attribute[0]
            if a.name == "value" and a.t.data_location == onnx.TensorProto.EXTERNAL:
                if base_dir is None:
                    raise ValueError(
                        f"{where}: the Constant names external data, but the model was not read from a file"
                    )
                try:  # confined to the model's folder, like initializers (never the current directory)
                    arr = _external_array(a.t, base_dir)
                except (OSError, ValueError, onnx.checker.ValidationError) as e:
                    raise ValueError(f"could not read the model's external data files from {base_dir}: {e}") from None
                env[n.output[0]] = graph.add_const(n.output[0], _tensor(arr, DType.from_onnx(a.t.data_type)))
                continue
            try:
                if a.name == "value":
                    arr, dt = numpy_helper.to_array(a.t), DType.from_onnx(a.t.data_type)
                else:
                    val = _attr_value(a)
                    arr = np.asarray(val, np.float32 if a.name.startswith("value_float") else np.int64)
                    dt = DType.from_numpy(arr.dtype)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{where}: unreadable constant ({e})")
                continue
            env[n.output[0]] = graph.add_const(n.output[0], _tensor(arr, dt))
            continue
        ins: list[Value | None] = []
        for name in n.input:
            if not name:
                ins.append(None)
            elif name in env:
                ins.append(env[name])
            else:
                problems.append(f"{where_of(k, n)}: input {name!r} is not defined before use")
                ins.append(None)
        try:
            attrs = {a.name: _attr_value(a) for a in n_attrs} if n_attrs else None
        except NotImplementedError as e:
            problems.append(f"{where_of(k, n)}: attribute type {e} is not supported")
            continue
        out_names = n.output
        outs = []
        for o in out_names:
            dt, shape = types.get(o, untyped)
            outs.append(Value(o or graph.unique_name("unused"), dt, shape))
        node = Node(op_type, ins, attrs, domain=domain, name=n.name, outputs=outs)
        graph.append(node)
        for name, v in zip(out_names, node.outputs):
            if name:
                env[name] = v
    for o in g_in.output:
        if o.name not in env:
            problems.append(f"graph output {o.name!r} is never produced")
            continue
        v = env[o.name]
        dt, shape = _type_of(o)
        v.dtype = v.dtype or dt
        v.shape = v.shape if v.shape is not None else shape
        graph.outputs.append(v)
    if problems:
        raise UnsupportedModelError(f"the ONNX model cannot be imported ({len(problems)} problems):", problems)
    meta = {p.key: p.value for p in proto.metadata_props}
    return Model(graph, opsets, meta, producer=proto.producer_name or "onnx")


def load_onnx(path: str) -> Model:
    """Read an ONNX file (with external data next to it) into the IR."""
    proto = onnx.load(path, load_external_data=False)
    return from_onnx(proto, base_dir=os.path.dirname(os.path.abspath(path)))


# ------------------------------------------------------------------------------------------------ export
def _vi(v: Value) -> onnx.ValueInfoProto:
    if v.dtype is None:
        return helper.make_empty_tensor_value_info(v.name)
    shape = None if v.shape is None else [d if d is not None else None for d in v.shape]
    return helper.make_tensor_value_info(v.name, v.dtype.onnx, shape)


def attribute_proto(name: str, value: Any) -> onnx.AttributeProto:
    """An ONNX attribute from an IR attribute value (Tensor attributes included)."""
    if isinstance(value, Tensor):
        return helper.make_attribute(name, numpy_helper.from_array(np.asarray(value.numpy()), name))
    return helper.make_attribute(name, value)


def _qdq(
    v: Value, src: str, dst: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], taken: set[str]
) -> None:
    """QuantizeLinear + DequantizeLinear simulating ``v.quant`` exactly (round half to even, saturate)."""
    q = cast(ActivationQuant, v.quant)  # called for quantized activations only
    base = f"{v.name}__aq"
    k = 0
    while f"{base}{k}_scale" in taken:
        k += 1
    sn, zn, qn = f"{base}{k}_scale", f"{base}{k}_zp", f"{base}{k}_q"
    taken.update((sn, zn, qn))
    inits.append(numpy_helper.from_array(np.array(q.scale, np.float32), sn))
    inits.append(numpy_helper.from_array(np.array(q.zero_point, np.int8 if q.signed else np.uint8), zn))
    nodes.append(helper.make_node("QuantizeLinear", [src, sn, zn], [qn]))
    nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [dst]))


EXTERNAL_MIN_BYTES = 1024
MEMORY_LOCATION = "edgec-memory"


def _external_placeholder(name: str, arr: np.ndarray) -> onnx.TensorProto:
    """A TensorProto that declares a tensor whose bytes are supplied separately (no data in the proto)."""
    t = onnx.TensorProto()
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
    t.dims.extend(arr.shape)
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", MEMORY_LOCATION), ("offset", "0"), ("length", str(arr.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _affine_dequant_nodes(v: Value, ctx: edgec_ops.ExpandContext) -> bool:
    """Emit ``v``'s affine QuantizedTensor as integer codes + Cast/Sub/Mul nodes producing ``v.name``.

    The float32 arithmetic is the same as :meth:`QuantizedTensor.dequantize` ((q - zp) * scale + offset), so the
    result is bit-identical while the model holds 1-byte codes instead of 4-byte floats. Returns False for
    what it does not encode (codebooks, non-float32 results)."""
    q = cast(QuantizedTensor, v.const)  # called for QuantizedTensor constants only
    if q.dtype != DType.FLOAT32:
        return False
    if isinstance(q.scheme_type, Vector):
        return _vector_dequant_nodes(v, ctx)
    if q.scheme_type.indexes_codebook:
        return False
    codes = np.asarray(q.codes)
    codes = codes.astype(np.int8 if q.signed else np.uint8)
    shape = list(codes.shape)
    scales = np.asarray(q.scales, np.float32)
    zps = None if q.zero_points is None else np.asarray(q.zero_points).astype(np.float32)
    offs = None if q.offsets is None else np.asarray(q.offsets, np.float32)
    if q.group_size:  # split the grouped axis so the parameters broadcast: [.., G, gs, ..] x [.., G, 1, ..]
        ga = cast(int, q.group_axis)  # set with group_size
        gshape = shape[:ga] + [shape[ga] // q.group_size, q.group_size] + shape[ga + 1 :]
        codes = codes.reshape(gshape)
        scales = np.expand_dims(scales, ga + 1)
        zps = None if zps is None else np.expand_dims(zps, ga + 1)
        offs = None if offs is None else np.expand_dims(offs, ga + 1)
    x = ctx.node("Cast", [ctx.const(v.name + "__codes", codes)], to=onnx.TensorProto.FLOAT)
    if zps is not None:
        x = ctx.node("Sub", [x, ctx.const(v.name + "__zp", zps)])
    steps = [("Mul", v.name + "__scale", scales)] + ([("Add", v.name + "__offset", offs)] if offs is not None else [])
    for i, (op, cname, arr) in enumerate(steps):
        last = i == len(steps) - 1 and not q.group_size
        x = ctx.node(op, [x, ctx.const(cname, arr)], [v.name] if last else None)
    if q.group_size:
        ctx.node("Reshape", [x, ctx.const(v.name + "__shape", np.array(shape, np.int64))], [v.name])
    return True


def _vector_dequant_nodes(v: Value, ctx: edgec_ops.ExpandContext) -> bool:
    """``v``'s vector-quantized weight as codes + Gather from the flattened codebooks (exact: a copy)."""
    q = cast(QuantizedTensor, v.const)  # a vector-quantized constant: codebook and group_size are set
    codebook = cast(np.ndarray, q.codebook)
    r, g, _, d = codebook.shape
    rows, k = q.shape
    codes = np.asarray(q.codes).reshape(r, rows // r, g, cast(int, q.group_size) // d)
    idx = ctx.node("Cast", [ctx.const(v.name + "__codes", codes)], to=onnx.TensorProto.INT64)
    idx = ctx.node("Add", [idx, ctx.const(v.name + "__base", vector_bases(codebook.shape))])
    cb = ctx.const(v.name + "__codebook", np.ascontiguousarray(np.asarray(codebook, np.float32).reshape(-1, d)))
    x = ctx.node("Gather", [cb, idx], axis=0)
    ctx.node("Reshape", [x, ctx.const(v.name + "__shape", np.array([rows, k], np.int64))], [v.name])
    return True


def initializer(name: str, arr: np.ndarray, external: dict[str, np.ndarray] | None) -> onnx.TensorProto:
    """An initializer holding ``arr``, or a data-less placeholder with ``arr`` put in ``external``."""
    # np.ascontiguousarray would turn a 0-d array into shape (1,); 0-d arrays are always contiguous.
    arr = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    if external is not None and arr.nbytes >= EXTERNAL_MIN_BYTES and arr.dtype != object:
        external[name] = arr
        return _external_placeholder(name, arr)
    return numpy_helper.from_array(arr, name)


def _ancestors(model: Model, names: list[str], stop: AbstractSet[str] = frozenset()) -> tuple[set[int], set[int]]:
    """ids of the nodes and constants the values ``names`` depend on (not looking past values in ``stop``)."""
    want = {n for n in names}
    nodes: set[int] = set()
    consts: set[int] = set()
    stack = [v for v in model.graph.values() if v.name in want]
    seen: set[int] = set()
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if v.is_const:
            consts.add(id(v))
        p = v.producer
        if v.name in stop:
            continue
        if p is not None and id(p) not in nodes:
            nodes.add(id(p))
            stack.extend(x for x in p.inputs if x is not None)
    return nodes, consts


@gc_paused()
def to_onnx(
    model: Model,
    extra_outputs: list[str] | None = None,
    with_shapes: bool = True,
    activation_quant: bool = True,
    external: dict[str, np.ndarray] | None = None,
    keep_quantized: bool = False,
    only_outputs: list[str] | None = None,
    cut: dict[str, tuple[np.dtype, int]] | None = None,
    free: set[str] | frozenset[str] = frozenset(),
) -> onnx.ModelProto:
    """Write ``model`` as standard ONNX (edgec ops expanded, quantized weights dequantized).

    Constants are written as their exact values. With
    ``activation_quant``, values annotated with :class:`ActivationQuant` pass through QuantizeLinear /
    DequantizeLinear, so the model computes exactly what an int8-activation target computes. With an
    ``external`` dict, large constants are written as data-less placeholders and their arrays put in the
    dict instead (for onnxruntime's ``add_external_initializers``: no copy of the weights in the proto).
    With ``keep_quantized``, affine quantized weights stay integer codes dequantized by graph nodes (bit
    exact, a quarter of the memory). With ``only_outputs``, only what those values depend on is written and
    they become the only outputs; ``cut`` (name -> (dtype, rank)) then makes those intermediate values
    graph inputs, so only the part of the graph after them runs (calibration streams block by block).
    Constants named in ``free`` become float graph inputs (their values are fed on every run: one session
    serves many variants of those weights).
    """
    g = model.graph
    opset = max(model.opset, 13)
    graph = onnx.GraphProto()
    # Nodes are built in place in the graph (helper.make_node + make_graph would build each one, then copy it);
    # expansions append theirs (a copy each, as make_graph would have made).
    nodes = graph.node
    inits: list[onnx.TensorProto] = []
    taken = {v.name for v in g.values()}
    ctx = edgec_ops.ExpandContext(opset, nodes, inits, taken, external)
    out_ids = {id(o) for o in g.outputs}
    cut = dict(cut or {})
    keep_nodes, keep_consts = _ancestors(model, only_outputs, set(cut)) if only_outputs else (None, None)
    free_inputs: list[onnx.ValueInfoProto] = []
    for v in g.initializers.values():
        if not v.uses and id(v) not in out_ids:
            continue  # unused constants are not part of the computation (and onnxruntime drops them)
        if keep_consts is not None and id(v) not in keep_consts:
            continue
        if v.name in free:
            shape = list(cast("tuple[int | str | None, ...]", v.shape))
            free_inputs.append(helper.make_tensor_value_info(v.name, onnx.TensorProto.FLOAT, shape))
            continue
        if keep_quantized and isinstance(v.const, QuantizedTensor) and _affine_dequant_nodes(v, ctx):
            continue
        arr = np.asarray(cast(ConstData, v.const).numpy())
        if v.dtype in (DType.INT4, DType.UINT4, DType.INT2, DType.UINT2, DType.INT3, DType.NF4):
            arr = arr.astype(np.int8 if v.dtype.numpy == np.int8 else np.uint8)
        inits.append(initializer(v.name, arr, external))
    renamed: dict[str, str] = {}  # quantized graph inputs: consumers read the dequantized copy
    if activation_quant:
        for v in g.inputs:
            if v.quant is not None:
                renamed[v.name] = f"{v.name}__dq"
                _qdq(v, v.name, renamed[v.name], nodes, inits, taken)
    for n in g:
        if keep_nodes is not None and id(n) not in keep_nodes:
            continue
        ins = [renamed.get(v.name, v.name) if v is not None else "" for v in n.inputs]
        while ins and ins[-1] == "":
            ins.pop()
        quantized_outs = [o for o in n.outputs if activation_quant and o.quant is not None]
        outs = [o.name + "__float" if o in quantized_outs else o.name for o in n.outputs]
        if n.domain == edgec_ops.EDGEC_DOMAIN:
            edgec_ops.expand(
                n.op_type, ctx, ins, outs, dict(n.attributes), [v.rank if v is not None else None for v in n.inputs]
            )
        else:  # what helper.make_node(n.op_type, ins, outs, name=n.name, domain=n.domain or None) makes
            nd = nodes.add()
            nd.op_type = n.op_type
            nd.input.extend(ins)
            nd.output.extend(outs)
            if n.name:
                nd.name = n.name
            if n.domain:
                nd.domain = n.domain
            if n.attributes:
                nd.attribute.extend(attribute_proto(k, a) for k, a in n.attributes.items())
        for o in quantized_outs:
            _qdq(o, o.name + "__float", o.name, nodes, inits, taken)
    outputs = [_vi(v) for v in g.outputs] if only_outputs is None else []
    if only_outputs:
        extra_outputs = list(only_outputs) + list(extra_outputs or [])
    if extra_outputs:
        have = {v.name for v in g.outputs} if only_outputs is None else set()
        for name in extra_outputs:
            if name not in have:
                outputs.append(_vi(g.value(name)) if with_shapes else helper.make_empty_tensor_value_info(name))
    value_info = []
    if with_shapes:
        io = {v.name for v in g.inputs} | {o.name for o in outputs}
        for n in g:
            if keep_nodes is not None and id(n) not in keep_nodes:
                continue
            for o in n.outputs:
                if o.name not in io and o.dtype is not None and o.shape is not None:
                    value_info.append(_vi(o))
    graph_inputs = [_vi(v) for v in g.inputs] + free_inputs
    if only_outputs:
        # Only what the subgraph reads: cut values (fed from outside) and the graph inputs it still needs.
        used = {i for nd in nodes for i in nd.input} | set(only_outputs)
        graph_inputs = [vi for vi in graph_inputs if vi.name in used and vi.name not in cut]
        for name, (dt, rank) in cut.items():
            if name in used:
                graph_inputs.append(
                    helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), [None] * rank)
                )
        value_info = [vi for vi in value_info if vi.name not in cut]
    # what helper.make_graph(nodes, g.name, graph_inputs, outputs, inits, value_info=value_info) makes
    graph.name = g.name
    graph.input.extend(graph_inputs)
    graph.output.extend(outputs)
    graph.initializer.extend(inits)
    graph.value_info.extend(value_info)
    imports = [
        helper.make_opsetid(d, v) for d, v in model.opset_imports.items() if d not in ("", edgec_ops.EDGEC_DOMAIN)
    ]
    imports.insert(0, helper.make_opsetid("", opset))
    proto = helper.make_model(graph, opset_imports=imports, producer_name="edgec")
    proto.ir_version = min(proto.ir_version, 10)
    if not only_outputs:  # internal calibration subgraphs skip the (possibly large) metadata
        for k, val in model.metadata.items():
            proto.metadata_props.add(key=k, value=str(val))
    return proto


@gc_paused()
def infer_shapes(model: Model) -> None:
    """Fill in dtype and shape of every value ONNX shape inference can determine (with data propagation)."""
    # Shape inference only needs initializer shapes: large constants never enter the proto (they would be
    # copied into it: a second copy of the weights), they are declared as graph inputs instead. Integer
    # tensors keep their data (shape arithmetic needs it for data propagation).
    external: dict[str, np.ndarray] = {}
    proto = to_onnx(model, with_shapes=False, external=external)
    keep = []
    for t in proto.graph.initializer:
        if t.name in external and t.data_type != onnx.TensorProto.INT64:
            proto.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        elif t.name in external:
            keep.append(numpy_helper.from_array(external[t.name], t.name))
        else:
            keep.append(t)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    external.clear()
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except onnx.shape_inference.InferenceError as e:
        raise IRError(f"shape inference failed: {e}") from None
    types = {vi.name: _type_of(vi) for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for n in model.graph:
        for o in n.outputs:
            if o.name in types:
                dt, shape = types[o.name]
                if dt is not None:
                    o.dtype = dt
                if shape is not None and (o.shape is None or o.static_shape is None):
                    o.shape = shape
