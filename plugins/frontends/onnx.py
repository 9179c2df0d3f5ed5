"""ONNX frontend: ai.onnx opset 7 and later (older than 13: upgraded with onnx.version_converter), external data
files, shape inference on import. Control flow, sequences and optionals that are static at compile time are
rewritten into plain tensor ops first (:mod:`edgec.ir.onnx_static`), at the model's own opset."""

from __future__ import annotations

import os
import re

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import BadInputError, UnsupportedError
from ...frontend import Frontend
from ...ir import Model, UnsupportedModelError, from_onnx, infer_shapes
from ...ir.core import IRError
from ...ir.limits import check_generators, max_tensor_bytes
from ...ir.onnx_static import eliminate_control_flow, needs_rewrite

MIN_OPSET = 7  # the oldest ai.onnx opset accepted
# Older models are upgraded to this opset, the oldest the importer takes as is. Every breaking change between 7
# and 13 has an adapter in onnx.version_converter (Softmax's 2-D coercion, Squeeze / Unsqueeze / ReduceSum /
# Split axes, Slice / TopK / Pad / Clip attributes becoming inputs, Upsample becoming Resize); going further
# (14-17) would only run more adapters for changes edgec does not need.
UPGRADE_OPSET = 13
UPGRADED_FROM = "edgec.opset_upgraded_from"
UPGRADED_TO = "edgec.opset_upgraded_to"
_STUB_BYTES = 1024  # inline tensors this large never go through the converter (it needs no weight values)
_STUB_LOCATION = "edgec-detached"


class OnnxFrontend(Frontend):
    name = "onnx"
    summary = "ONNX models (opset >= 7; < 13 upgraded with onnx.version_converter), with external data files"
    suffixes = (".onnx",)

    def load(self, path: str) -> Model:
        from ...ir.budget import over_budget

        msg = over_budget("reading the model file", {"file": os.path.getsize(path)})
        if msg:  # the protobuf is parsed whole: its inline weights are in memory before anything else is known
            raise BadInputError(f"{path}: {msg}")
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends
            raise BadInputError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
        return import_proto(proto, os.path.dirname(os.path.abspath(path)), path)


def import_proto(proto: onnx.ModelProto, base_dir: str | None, label: str = "<model>") -> Model:
    """Import an in-memory ONNX model (used by the PyTorch frontend too). Models older than
    :data:`UPGRADE_OPSET` are upgraded in place first."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        if not proto.opset_import:
            raise BadInputError(f"{label}: the model imports no opset at all (opset_import is empty)")
        # only other domains (an ai.onnx.ml classifier, say): no node reads the default opset, so it is the
        # newest this onnx knows, and each node is judged by its own domain (refused by name where unsupported)
        opset = onnx.defs.onnx_opset_version()
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        copy.opset_import.append(onnx.helper.make_opsetid("", opset))
        proto = copy
    if opset < MIN_OPSET:
        raise UnsupportedError(
            f"{label}: ai.onnx opset {opset} is older than {MIN_OPSET}, the oldest edgec accepts; "
            f"convert it with onnx.version_converter.convert_version(model, {UPGRADE_OPSET})"
        )
    if needs_rewrite(proto):  # before the upgrade: the converter takes no subgraphs
        try:
            proto = eliminate_control_flow(proto)
        except UnsupportedModelError as e:
            raise UnsupportedError(f"{label}: {str(e).splitlines()[0]}", e.problems) from None
    if opset < UPGRADE_OPSET:
        upgrade_opset(proto, UPGRADE_OPSET, label)
    try:
        model = from_onnx(proto, base_dir)
        huge = check_generators(model)
        if huge:  # before shape inference, which would materialize them
            raise BadInputError(
                f"{label}: the model asks for tensors beyond the {max_tensor_bytes() / 2**30:.3g} GiB "
                "limit (EDGEC_MAX_TENSOR_BYTES):\n" + "\n".join(f"  - {p}" for p in huge[:20])
            )
        infer_shapes(model)
    except UnsupportedModelError as e:
        raise UnsupportedError(f"{label}: the model cannot be imported", e.problems) from None
    except UnicodeError as e:  # protobuf keeps invalid UTF-8 in names until something re-encodes them
        raise BadInputError(f"{label}: a name or string in the model is not valid UTF-8 ({e})") from None
    except (ValueError, IRError) as e:
        raise BadInputError(f"{label}: {e}") from None
    model.metadata.setdefault("source_format", "onnx")
    if opset < UPGRADE_OPSET:
        model.metadata[UPGRADED_FROM] = str(opset)
        model.metadata[UPGRADED_TO] = str(UPGRADE_OPSET)
    return model


# ------------------------------------------------------------------------------------------------ upgrade
def _where(k: int, n: onnx.NodeProto, opset: int | str) -> str:  # as ir.onnx_io words it
    return f"node {n.name or f'#{k}'} ({(n.domain + '::') if n.domain else ''}{n.op_type}, opset {opset})"


def _is_default(domain: str) -> bool:
    return domain in ("", "ai.onnx")


def _converter_message(e: Exception) -> str:
    """The converter's reason without its C++ source location and failed-assertion text."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = re.sub(r"^.*?Assertion `.*?` failed: ", "", msg)
    return re.sub(r"^\S+\.(?:cc|h|cpp):\d+: \w+: ", "", msg)


def _precheck(proto: onnx.ModelProto, src: int) -> list[str]:
    """Per node, what the converter must not be given: ops ai.onnx ``src`` does not define, nodes its schema
    rejects (inputs, attributes, deprecated ops), subgraphs, and ops of domains edgec does not import. Returns
    every problem."""
    from ...ir import ops as edgec_ops

    problems: list[str] = []
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): int(o.version) for o in proto.opset_import}
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = max(int(proto.ir_version), 3)
    ctx.opset_imports = {"": src}
    checked: dict[tuple, str | None] = {}
    defined = {vi.name for vi in proto.graph.input} | {t.name for t in proto.graph.initializer}
    for k, n in enumerate(proto.graph.node):
        undefined = [i for i in n.input if i and i not in defined]
        defined.update(n.output)
        if undefined:  # the converter would say "Input ... is undefined!" without naming the node
            problems.append(
                f"{_where(k, n, opsets.get(n.domain or '', '?'))}: input {undefined[0]!r} is not defined before use"
            )
            continue
        if not _is_default(n.domain):
            if n.domain != edgec_ops.EDGEC_DOMAIN:
                problems.append(
                    f"{_where(k, n, opsets.get(n.domain, '?'))}: operator domain {n.domain!r} is not supported"
                )
            continue
        where = _where(k, n, src)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            problems.append(f"{where}: control flow with subgraphs is not supported")
            continue
        try:
            onnx.defs.get_schema(n.op_type, src, "")
        except onnx.defs.SchemaError:
            problems.append(f"{where}: {n.op_type} is not an operator of ai.onnx opset {src}, so it cannot be upgraded")
            continue
        # nodes alike in what the schema checks are checked once (a 10^6-node model has a few dozen kinds)
        key = (
            n.op_type,
            tuple((a.name, a.type) for a in n.attribute),
            tuple(bool(i) for i in n.input),
            tuple(bool(o) for o in n.output),
        )
        if key not in checked:
            try:
                onnx.checker.check_node(n, ctx)
                checked[key] = None
            except Exception as e:  # noqa: BLE001 - ValidationError, or a schema error from the C++ side
                checked[key] = _converter_message(e)
        if checked[key] is not None:
            problems.append(f"{where}: invalid for ai.onnx opset {src}, so it cannot be upgraded: {checked[key]}")
    return problems


def _stub(t: onnx.TensorProto) -> onnx.TensorProto:
    """``t`` without its data: a declaration the converter carries through untouched."""
    s = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims, data_location=onnx.TensorProto.EXTERNAL)
    e = s.external_data.add()
    e.key, e.value = "location", _STUB_LOCATION
    return s


def _is_stub(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == _STUB_LOCATION for e in t.external_data
    )


def _inline_bytes(t: onnx.TensorProto) -> int:
    return 0 if t.data_location == onnx.TensorProto.EXTERNAL else t.ByteSize()


def _light(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` for the converter in which no weight has data: inline tensors of ``_STUB_BYTES`` or more
    (initializers and Constant values) are declarations only, external ones stay references (never read)."""
    light = onnx.ModelProto()
    _copy_fields(proto, light, ("graph",))
    # an IR version 3 model must list its initializers among the graph inputs, else the converter calls them
    # undefined; later IR versions do not need that and otherwise read the same
    light.ir_version = max(int(proto.ir_version), 4)
    g, lg = proto.graph, light.graph
    _copy_fields(g, lg, ("initializer", "node"))
    for t in g.initializer:
        if _inline_bytes(t) >= _STUB_BYTES:
            lg.initializer.append(_stub(t))
        else:
            lg.initializer.append(t)
    for n in g.node:
        ln = lg.node.add()
        ln.CopyFrom(n) if not (n.op_type == "Constant" and _is_default(n.domain)) else _light_constant(n, ln)
    return light


def _copy_fields(src, dst, skip: tuple[str, ...]) -> None:
    """Copy every field of protobuf message ``src`` set, except ``skip``, into ``dst``."""
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if hasattr(value, "extend"):  # a repeated field (protobuf 6 dropped FieldDescriptor.label)
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _light_constant(n: onnx.NodeProto, out: onnx.NodeProto) -> None:
    _copy_fields(n, out, ("attribute",))
    for a in n.attribute:
        la = out.attribute.add()
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR and _inline_bytes(a.t) >= _STUB_BYTES:
            la.name, la.type = a.name, a.type
            la.t.CopyFrom(_stub(a.t))
        else:
            la.CopyFrom(a)


def _convert(m: onnx.ModelProto, target: int) -> onnx.ModelProto:
    from onnx import version_converter

    return version_converter.convert_version(m, target)


def _isolated(light: onnx.ModelProto, ks: list[int], types: dict[str, onnx.TypeProto], opset: int) -> onnx.ModelProto:
    """A model of only the nodes ``ks`` of ``light``, each with its own inputs and outputs (renamed apart, typed as
    in the model), at ai.onnx ``opset``."""
    g = light.graph
    inits = {t.name: t for t in g.initializer}
    nodes, ins, outs, new_inits = [], [], [], []

    def typed(name: str, new: str) -> onnx.ValueInfoProto:
        vi = onnx.ValueInfoProto(name=new)
        t = types.get(name)
        if t is not None and t.HasField("tensor_type"):
            vi.type.CopyFrom(t)
        else:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        return vi

    for k in ks:
        n = onnx.NodeProto()
        n.CopyFrom(g.node[k])
        for j, name in enumerate(n.input):
            if not name:
                continue
            new = f"n{k}_in{j}"
            n.input[j] = new
            if name in inits:
                t = onnx.TensorProto()
                t.CopyFrom(inits[name])
                t.name = new
                new_inits.append(t)
            else:
                ins.append(typed(name, new))
        for j, name in enumerate(n.output):
            if name:
                n.output[j] = f"n{k}_out{j}"
                outs.append(typed(name, n.output[j]))
        nodes.append(n)
    m = helper.make_model(
        helper.make_graph(nodes, "isolated", ins, outs, new_inits),
        opset_imports=[o if not _is_default(o.domain) else helper.make_opsetid("", opset) for o in light.opset_import],
    )
    m.ir_version = light.ir_version
    return m


def _diagnose(light: onnx.ModelProto, src: int, target: int) -> list[str]:
    """The nodes the converter fails on, each with the opset step and the converter's reason: each op type's
    nodes are converted on their own, then each node of a failing op type, one opset at a time."""
    types: dict[str, onnx.TypeProto] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(light)
    except Exception:  # noqa: BLE001 - the declared types then
        inferred = light
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        types.setdefault(vi.name, vi.type)
    by_op: dict[str, list[int]] = {}
    for k, n in enumerate(light.graph.node):
        if _is_default(n.domain):
            by_op.setdefault(n.op_type, []).append(k)
    problems = []
    for ks in by_op.values():
        try:
            _convert(_isolated(light, ks, types, src), target)
            continue
        except Exception:  # noqa: BLE001 - the converter raises RuntimeError, ConvertError, InferenceError
            pass
        for k in ks:
            m = _isolated(light, [k], types, src)
            for step in range(src, target):
                try:
                    m = _convert(m, step + 1)
                except Exception as e:  # noqa: BLE001
                    problems.append(
                        f"{_where(k, light.graph.node[k], src)}: onnx.version_converter cannot convert it "
                        f"from opset {step} to {step + 1}: {_converter_message(e)}"
                    )
                    break
    return problems


def _small_constants(g: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """The constants (initializers, Constant values) of ``g`` whose data it holds, by name."""
    out = {t.name: t for t in g.initializer if t.data_location != onnx.TensorProto.EXTERNAL}
    for n in g.node:
        if n.op_type == "Constant" and _is_default(n.domain) and n.output:
            a = next((a for a in n.attribute if a.name == "value"), None)
            if a is not None and a.t.data_location != onnx.TensorProto.EXTERNAL:
                out[n.output[0]] = a.t
    return out


def _fix_resize_10(conv: onnx.ModelProto, where) -> list[str]:
    """Give the Resize nodes that opset 10 Resize and Upsample became their old semantics back.

    The converter's Resize 10 -> 11 adapter keeps opset 11's defaults (half_pixel coordinates, nearest pixel
    rounded half down), so the upgraded node would sample other pixels (Upsample with mode=linear: errors of
    the size of the values). Opset 10 Resize and every Upsample use asymmetric coordinates and, in nearest mode,
    floor(x) on an axis they enlarge and ceil(x) on one they shrink (as onnxruntime runs them; measured equal).
    One nearest_mode serves all axes, so a node that enlarges some and shrinks others is refused. The roi the
    adapter adds (optional since opset 13) is dropped."""
    problems = []
    consts = None
    for n in conv.graph.node:
        if n.op_type != "Resize" or not _is_default(n.domain):
            continue
        attrs = {a.name: a for a in n.attribute}
        if "coordinate_transformation_mode" not in attrs:
            n.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
        mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
        if mode == "nearest" and "nearest_mode" not in attrs:
            consts = _small_constants(conv.graph) if consts is None else consts
            t = consts.get(n.input[2]) if len(n.input) > 2 else None
            scales = numpy_helper.to_array(t).astype(np.float64) if t is not None else None
            if scales is not None and (scales < 1).any() and (scales > 1).any():
                problems.append(
                    f"{where(n)}: nearest-neighbour resizing that enlarges some axes and shrinks others "
                    "has no opset 13 equivalent (opset 10 rounds down on the first, up on the second)"
                )
            shrink = scales is not None and bool((scales < 1).any())
            n.attribute.append(helper.make_attribute("nearest_mode", "ceil" if shrink else "floor"))
        if len(n.input) > 1:
            n.input[1] = ""
    return problems


def upgrade_opset(proto: onnx.ModelProto, target: int, label: str = "<model>") -> None:
    """Upgrade ``proto``'s ai.onnx opset to ``target`` in place with ``onnx.version_converter``.

    The converter sees the graph without weight data (external data is never read; inline tensors of 1 KiB or
    more are replaced by declarations), and only the converted nodes are taken back: the initializers ``proto``
    holds stay where they are. Nodes the converter cannot take (ops the opset does not define, schema
    violations, subgraphs, other domains) are refused before it runs; a conversion that fails names the nodes,
    op types and opset step it failed on. Every problem raises :class:`UnsupportedError`."""
    src = next(o.version for o in proto.opset_import if _is_default(o.domain))
    g = proto.graph
    head = f"{label}: ai.onnx opset {src} cannot be upgraded to {target} with onnx.version_converter"
    problems = _precheck(proto, src)
    if problems:
        raise UnsupportedError(head, problems)
    light = _light(proto)
    try:
        conv = _convert(light, target)
    except Exception as e:  # noqa: BLE001 - RuntimeError, ConvertError, InferenceError, ...
        problems = _diagnose(light, src, target) or [f"the whole graph: {_converter_message(e)}"]
        raise UnsupportedError(head, problems) from None

    def where(n: onnx.NodeProto) -> str:  # the model's node that became ``n`` (an adapter keeps its output names)
        k = next((k for k, m in enumerate(g.node) if n.output and n.output[0] in m.output), None)
        return _where(k, g.node[k], src) if k is not None else f"node {n.name or '?'} ({n.op_type}, opset {target})"

    problems = _fix_resize_10(conv, where) if src <= 10 else []
    if problems:
        raise UnsupportedError(head, problems)
    # the converted nodes, with the large Constant values they were converted without
    detached = {
        n.output[0]: a.t
        for n in g.node
        if n.op_type == "Constant" and _is_default(n.domain) and n.output
        for a in n.attribute
        if a.name == "value" and _inline_bytes(a.t) >= _STUB_BYTES
    }
    for n in conv.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] in detached:
            for a in n.attribute:
                if a.name == "value" and _is_stub(a.t):
                    a.t.CopyFrom(detached[n.output[0]])
    del g.node[:]
    g.node.extend(conv.graph.node)
    # initializers: the model's own (data untouched), less any the converter dropped, plus those it made
    have = {t.name for t in conv.graph.initializer}
    for i in reversed(range(len(g.initializer))):
        if g.initializer[i].name not in have:
            del g.initializer[i]
    mine = {t.name for t in g.initializer}
    g.initializer.extend(t for t in conv.graph.initializer if t.name not in mine and not _is_stub(t))
    if [o.name for o in conv.graph.output] != [o.name for o in g.output]:
        del g.output[:]
        g.output.extend(conv.graph.output)
    # declared types of values the new graph still produces (the importer infers the rest)
    produced = {o for n in g.node for o in n.output}
    keep = [vi for vi in g.value_info if vi.name in produced]
    del g.value_info[:]
    g.value_info.extend(keep)
    for o in proto.opset_import:
        if _is_default(o.domain):
            o.version = target
