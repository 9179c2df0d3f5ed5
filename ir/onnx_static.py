"""Control flow that is static at compile time, rewritten into plain tensor ops (at the ONNX proto level).

edgec's IR holds tensors only: no subgraphs, no sequences, no optionals. :func:`eliminate_control_flow` turns
what the model's fixed input shapes and constants decide into plain ops, exactly as ONNX defines them:

- **If** with a constant condition: the taken branch, inlined. With a run-time condition: both branches computed
  and each output chosen with ``Where`` (only when both branches are deterministic, produce tensors only, and
  each pair of outputs has the same static shape and dtype: checked after inference).
- **Loop** with a constant trip count (and a constant or absent initial condition) whose body's condition output
  is a compile-time constant in every iteration (the condition input passed through, an Identity of it, a
  constant, or arithmetic on the iteration number): unrolled; carried values flow from copy to copy, scan
  outputs are each iteration's value stacked on axis 0. Without a trip count, unrolled until the condition is
  a constant false.
- **Scan** (opset 9 semantics; opset 8's batched form without ``sequence_lens``, or with every length full) with
  a static sequence length: unrolled, each scan input sliced along its axis in its direction, each scan output
  stacked along its axis in its direction.
- **Sequences** and **optionals** as compile-time lists of tensor values: SequenceConstruct / Empty / Insert /
  Erase / At / Length, SplitToSequence, ConcatFromSequence, SequenceMap (its body unrolled per element),
  Optional / OptionalHasElement / OptionalGetElement, Identity; positions must be constants.

Bodies are inlined with every value they define renamed apart (references to outer scopes stay), so nested
control flow is handled by the next round. Constants are initializers, Constant nodes, ``Shape`` / ``Size`` of
statically shaped values, and deterministic nodes of constants (evaluated with ``onnx.reference``). The rewrite
emits ops valid at the model's own opset (Unsqueeze / Squeeze axes as attributes before 13), so it can run
before an opset upgrade. Anything else raises :class:`~edgec.ir.onnx_io.UnsupportedModelError` naming the node,
its op and why; a graph input or output of sequence or optional type cannot be represented at all.
"""

from __future__ import annotations

import re
from typing import Any, cast

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_io import UnsupportedModelError

MAX_UNROLLED_NODES = 20000  # nodes one Loop / Scan / SequenceMap may unroll into
MAX_CONST_ELEMENTS = 1 << 20  # constants evaluated at compile time are at most this large (inputs and outputs)
MAX_ROUNDS = 64  # rewriting rounds (each inlines one level of nesting)
_SUBGRAPH = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_CONTROL = frozenset({"If", "Loop", "Scan", "SequenceMap"})
_SEQUENCE_OPS = frozenset(
    {
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceInsert",
        "SequenceErase",
        "SequenceAt",
        "SequenceLength",
        "SplitToSequence",
        "ConcatFromSequence",
        "SequenceMap",
        "Optional",
        "OptionalHasElement",
        "OptionalGetElement",
    }
)
_RANDOM = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}
)
_SMALL_INIT_BYTES = 1024  # initializers shape inference sees with their data (larger ones: declared only)


class _Defer(Exception):
    """A node that cannot be rewritten (yet): the reason, reported if no later round can do it either."""


def _default(domain: str) -> bool:
    return domain in ("", "ai.onnx")


def _subgraphs(n: onnx.NodeProto) -> list[onnx.GraphProto]:
    out = []
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def _is_special(n: onnx.NodeProto) -> bool:
    return any(a.type in _SUBGRAPH for a in n.attribute) or (_default(n.domain) and n.op_type in _SEQUENCE_OPS)


def _not_tensor(t: onnx.TypeProto) -> str | None:
    kind = t.WhichOneof("value")
    return {
        "sequence_type": "a sequence",
        "optional_type": "an optional",
        "map_type": "a map",
        "sparse_tensor_type": "a sparse tensor",
    }.get(kind or "")


def needs_rewrite(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds anything :func:`eliminate_control_flow` rewrites or refuses."""
    g = model.graph
    return any(_not_tensor(vi.type) for vi in list(g.input) + list(g.output)) or any(_is_special(n) for n in g.node)


def _count_nodes(g: onnx.GraphProto) -> int:
    return sum(1 + sum(_count_nodes(s) for s in _subgraphs(n)) for n in g.node)


def _nondeterministic(g: onnx.GraphProto) -> str | None:
    for n in g.node:
        if _default(n.domain) and n.op_type in _RANDOM:
            return cast(str, n.op_type)
        for s in _subgraphs(n):
            r = _nondeterministic(s)
            if r:
                return r
    return None


def _copy_except(src: Any, dst: Any, skip: str) -> None:
    """Copy every field of protobuf message ``src`` that is set, except ``skip``, into ``dst``."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.message_type is not None or hasattr(value, "extend"):  # a message or a repeated field
            getattr(dst, field.name).MergeFrom(value)
        else:
            setattr(dst, field.name, value)


def _always_true(body: onnx.GraphProto) -> bool:
    """Whether a Loop body's condition output is its condition input, passed through or by an Identity."""
    if len(body.input) < 2 or not body.output:
        return False
    cond_in, cond_out = body.input[1].name, body.output[0].name
    return cond_out == cond_in or any(
        n.op_type == "Identity" and list(n.input) == [cond_in] and n.output[0] == cond_out for n in body.node
    )


def _all_names(g: onnx.GraphProto, into: set[str]) -> None:
    into.update(vi.name for vi in list(g.input) + list(g.output) + list(g.value_info))
    into.update(t.name for t in g.initializer)
    for n in g.node:
        into.update(n.input)
        into.update(n.output)
        for s in _subgraphs(n):
            _all_names(s, into)


def _defined(g: onnx.GraphProto, into: set[str]) -> None:
    """Every name ``g`` (and its nested graphs) define: inputs, initializers, node outputs."""
    into.update(vi.name for vi in g.input)
    into.update(t.name for t in g.initializer)
    for n in g.node:
        into.update(o for o in n.output if o)
        for s in _subgraphs(n):
            _defined(s, into)


def _rename(g: onnx.GraphProto, m: dict[str, str]) -> None:
    """Rename, in place, every reference and definition in ``g`` and its nested graphs that ``m`` maps."""
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = m.get(vi.name, vi.name)
    for t in g.initializer:
        t.name = m.get(t.name, t.name)
    for n in g.node:
        _rename_node(n, m)


def _rename_node(n: onnx.NodeProto, m: dict[str, str]) -> None:
    for k, v in enumerate(n.input):
        if v:
            n.input[k] = m.get(v, v)
    for k, v in enumerate(n.output):
        if v:
            n.output[k] = m.get(v, v)
    for s in _subgraphs(n):
        _rename(s, m)


class _Static:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.opset = next((int(o.version) for o in model.opset_import if _default(o.domain)), 1)
        self.names: set[str] = set()
        _all_names(self.g, self.names)
        self.names.discard("")
        self.counter = 0
        self.seqs: dict[str, list[str]] = {}
        # an optional: None (empty), ("tensor", name) or ("seq", [names])
        self.opts: dict[str, tuple[str, object] | None] = {}
        self.types: dict[str, onnx.TypeProto] = {}
        self.consts: dict[str, np.ndarray | None] = {}
        self.inits = {t.name: t for t in self.g.initializer}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.labels: dict[tuple[str, ...], str] = {
            tuple(n.output): n.name or f"#{k}" for k, n in enumerate(self.g.node)
        }
        self.where_checks: list[tuple[str, str, str, int]] = []  # (node, then value, else value, output number)
        self.new_inits: list[onnx.TensorProto] = []
        self.current = ""  # the node being rewritten, as refusals name it
        # an If with a run-time condition computes both branches (Where) only once no rewrite can make it constant
        self.select = False

    # ---------------------------------------------------------------------------------------------- naming
    def where(self, n: onnx.NodeProto) -> str:
        label = self.labels.get(tuple(n.output)) or n.name or "(inlined)"
        if " of " in label:
            return f"node {label.split(' of ', 1)[0]} ({n.op_type}, opset {self.opset}) of {label.split(' of ', 1)[1]}"
        return f"node {label} ({(n.domain + '::') if n.domain else ''}{n.op_type}, opset {self.opset})"

    def fresh(self, base: str) -> str:
        base = re.sub(r"__cf\d+$", "", base)[:60] or "v"
        while True:
            self.counter += 1
            name = f"{base}__cf{self.counter}"
            if name not in self.names:
                self.names.add(name)
                return name

    # ---------------------------------------------------------------------------------------------- emission
    def node(
        self, out: list[onnx.NodeProto], op: str, ins: list[str], outs: list[str] | None = None, **attrs: Any
    ) -> str:
        outs = outs or [self.fresh(op.lower())]
        n = helper.make_node(op, ins, outs, **attrs)
        out.append(n)
        for o in outs:
            self.producers[o] = n
        return outs[0]

    def const(self, out: list[onnx.NodeProto], arr: np.ndarray, name: str | None = None) -> str:
        arr = np.asarray(arr)
        name = name or self.fresh("const")
        self.node(out, "Constant", [], [name], value=numpy_helper.from_array(arr, name))
        self.consts[name] = arr
        return name

    def unsqueeze(self, out: list[onnx.NodeProto], x: str, axis: int, name: str | None = None) -> str:
        if self.opset >= 13:
            return self.node(
                out, "Unsqueeze", [x, self.const(out, np.array([axis], np.int64))], [name] if name else None
            )
        return self.node(out, "Unsqueeze", [x], [name] if name else None, axes=[axis])

    def squeeze(self, out: list[onnx.NodeProto], x: str, axis: int) -> str:
        if self.opset >= 13:
            return self.node(out, "Squeeze", [x, self.const(out, np.array([axis], np.int64))])
        return self.node(out, "Squeeze", [x], axes=[axis])

    def take(self, out: list[onnx.NodeProto], x: str, index: int, axis: int) -> str:
        """Element ``index`` of ``x`` along ``axis`` (the axis removed): Slice and Squeeze."""
        if self.opset >= 10:
            bounds = [self.const(out, np.array([v], np.int64)) for v in (index, index + 1, axis)]
            part = self.node(out, "Slice", [x] + bounds)
        else:
            part = self.node(out, "Slice", [x], starts=[index], ends=[index + 1], axes=[axis])
        return self.squeeze(out, part, axis)

    def stack(self, out: list[onnx.NodeProto], values: list[str], axis: int, name: str) -> None:
        """``values`` (same shape) stacked along a new ``axis`` into ``name``."""
        self.node(out, "Concat", [self.unsqueeze(out, v, axis) for v in values], [name], axis=axis)

    def identity(self, out: list[onnx.NodeProto], src: str, dst: str) -> None:
        """``dst`` becomes ``src``: a sequence or optional is aliased, a tensor copied by an Identity."""
        if src in self.seqs:
            self.seqs[dst] = self.seqs[src]
        elif src in self.opts:
            self.opts[dst] = self.opts[src]
        else:
            self.node(out, "Identity", [src], [dst])

    # ---------------------------------------------------------------------------------------------- knowledge
    def infer(self) -> None:
        """Types of the top-level values: ONNX shape inference on a copy whose large weights are declared only."""
        light = onnx.ModelProto()  # everything but the large weights (never copied)
        _copy_except(self.model, light, "graph")
        g = light.graph
        _copy_except(self.g, g, "initializer")
        declared = []
        for t in self.g.initializer:
            external = t.data_location == onnx.TensorProto.EXTERNAL
            if external or (t.ByteSize() > _SMALL_INIT_BYTES and t.data_type != onnx.TensorProto.INT64):
                declared.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            else:
                g.initializer.append(t)
        have = {vi.name for vi in g.input}
        g.input.extend(vi for vi in declared if vi.name not in have)
        inferred = light
        for data_prop in (True, False):
            try:
                inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=data_prop)
                break
            except Exception:  # noqa: BLE001 - what inference cannot do stays unknown
                continue
        ig = inferred.graph
        self.types = {vi.name: vi.type for vi in list(ig.input) + list(ig.value_info) + list(ig.output)}
        for t in self.g.initializer:
            self.types.setdefault(t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims)))

    def shape(self, name: str) -> list[int] | None:
        """The static shape of a tensor value, or None."""
        if name in self.consts and self.consts[name] is not None:
            return list(self.consts[name].shape)  # type: ignore[union-attr]
        t = self.types.get(name)
        if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
            return None
        dims = []
        for d in t.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                return None
            dims.append(int(d.dim_value))
        return dims

    def elem_type(self, name: str) -> int:
        t = self.types.get(name)
        return int(t.tensor_type.elem_type) if t is not None and t.HasField("tensor_type") else 0

    def kind(self, name: str) -> str:
        if name in self.seqs:
            return "seq"
        if name in self.opts:
            return "opt"
        t = self.types.get(name)
        if t is not None:
            k = t.WhichOneof("value")
            if k == "sequence_type":
                return "seq"
            if k == "optional_type":
                return "opt"
        return "tensor"

    def value(self, name: str, depth: int = 0) -> np.ndarray | None:
        """The compile-time value of ``name``, or None."""
        if name in self.consts:
            return self.consts[name]
        self.consts[name] = None  # cycles and repeated failures end here
        result = self._value(name, depth)
        if result is not None and result.size > MAX_CONST_ELEMENTS:
            result = None
        self.consts[name] = result
        return result

    def _value(self, name: str, depth: int) -> np.ndarray | None:
        t = self.inits.get(name)
        if t is not None:
            if t.data_location == onnx.TensorProto.EXTERNAL or len(t.dims) and np.prod(t.dims) > MAX_CONST_ELEMENTS:
                return None
            return numpy_helper.to_array(t)
        n = self.producers.get(name)
        if n is None or not _default(n.domain) or depth > 200 or n.op_type in _RANDOM or _is_special(n):
            return None
        if n.op_type in ("Shape", "Size") and n.input:
            shape = self.shape(n.input[0])
            if shape is None:
                return None
            if n.op_type == "Size":
                return np.array(int(np.prod(shape, dtype=np.int64)), np.int64)
            attrs = {a.name: a.i for a in n.attribute}
            r = len(shape)
            start, end = attrs.get("start", 0), attrs.get("end", r)
            start, end = [min(max(v + r if v < 0 else v, 0), r) for v in (start, end)]
            return np.array(shape[start:end], np.int64)
        feeds = {}
        for i in n.input:
            if not i:
                continue
            v = self.value(i, depth + 1)
            if v is None:
                return None
            feeds[i] = v
        if n.op_type == "Identity":
            return feeds[n.input[0]]
        if sum(v.size for v in feeds.values()) > MAX_CONST_ELEMENTS:
            return None
        try:
            from onnx.reference import ReferenceEvaluator

            results = ReferenceEvaluator(n, opsets={"": self.opset}).run(None, feeds)
        except Exception:  # noqa: BLE001 - an op the reference cannot run here: not a constant
            return None
        for o, r in zip(n.output, results):
            if o and o != name and isinstance(r, np.ndarray):
                self.consts[o] = r
        k = list(n.output).index(name)
        res = cast("list[Any]", results)[k] if k < len(results) else None  # run(None, ...): a list
        return np.asarray(res) if isinstance(res, (np.ndarray, np.generic)) else None

    def scalar(self, name: str, what: str) -> int:
        v = self.value(name)
        if v is None:
            raise _Defer(f"{what} ({name!r}) is computed at run time; it must be a compile-time constant")
        if v.size != 1:
            raise _Defer(f"{what} ({name!r}) has {v.size} elements, expected one")
        return int(v.reshape(-1)[0])

    # ---------------------------------------------------------------------------------------------- inlining
    def inline(
        self, out: list[onnx.NodeProto], body: onnx.GraphProto, bind: dict[str, str], hoisted: dict[str, str]
    ) -> list[str]:
        """Append a copy of ``body``'s nodes to ``out`` with its inputs bound to the names ``bind`` gives and
        every other value it defines renamed apart; its initializers become (once per ``hoisted``) top-level
        ones. Returns the names its outputs became."""
        if len(body.sparse_initializer):
            raise _Defer("a subgraph with sparse initializers is not supported")
        for t in body.initializer:
            if t.name not in hoisted:
                new = onnx.TensorProto()
                new.CopyFrom(t)
                new.name = hoisted[t.name] = self.fresh(t.name)
                self.new_inits.append(new)  # added to the graph if the rewrite succeeds
                self.inits[new.name] = new
                self.types[new.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
        defined: set[str] = set()
        _defined(body, defined)
        m = dict(hoisted)
        for vi in body.input:
            m[vi.name] = bind[vi.name]
        for name in defined:
            if name not in m:
                m[name] = self.fresh(name)
        for n in body.node:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            _rename_node(c, m)
            out.append(c)
            if _is_special(c):  # named in a refusal as the node of the body it came from
                self.labels[tuple(c.output)] = (
                    f"{n.name or repr(n.output[0])} of {body.name or 'the body'!r} in {self.current}"
                )
            for o in c.output:
                if o:
                    self.producers[o] = c
        return [m.get(o.name, o.name) for o in body.output]

    def bind(self, out: list[onnx.NodeProto], body: onnx.GraphProto, values: list[str], what: str) -> dict[str, str]:
        if len(body.input) != len(values):
            raise _Defer(f"its {what} has {len(body.input)} inputs, {len(values)} are given")
        return {vi.name: v for vi, v in zip(body.input, values)}

    def check_size(self, body: onnx.GraphProto, copies: int, what: str) -> None:
        size = _count_nodes(body)
        if copies * size > MAX_UNROLLED_NODES:
            raise _Defer(
                f"unrolling {copies} {what} of a {size}-node body would exceed the limit of "
                f"{MAX_UNROLLED_NODES} nodes (edgec.ir.onnx_static.MAX_UNROLLED_NODES)"
            )

    def empty_output(self, out: list[onnx.NodeProto], vi: onnx.ValueInfoProto, axis: int, name: str) -> None:
        """A scan output of zero iterations: an empty tensor, when the body declares its element's static type."""
        t = vi.type
        dims = (
            [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]
            if t.HasField("tensor_type") and t.tensor_type.HasField("shape")
            else None
        )
        if not t.HasField("tensor_type") or not t.tensor_type.elem_type or dims is None or None in dims:
            raise _Defer(
                f"it runs no iteration, and the element type and static shape of its scan output "
                f"{name!r} are not declared, so the empty output cannot be built"
            )
        axis = axis + len(dims) + 1 if axis < 0 else axis
        dims.insert(axis, 0)
        dt = helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type)
        self.const(out, np.zeros(cast("list[int]", dims), dt), name)  # no None: checked above

    # ---------------------------------------------------------------------------------------------- the rounds
    def run(self) -> None:
        problems = []
        for vi in self.g.input:
            what = _not_tensor(vi.type)
            if what and vi.name not in self.inits:
                problems.append(
                    f"graph input {vi.name!r} is {what}: edgec's runtimes feed tensors only; make it a "
                    "tensor input (or a constant)"
                )
        for vi in self.g.output:
            what = _not_tensor(vi.type)
            if what:
                problems.append(
                    f"graph output {vi.name!r} is {what}: edgec's runtimes return tensors only; "
                    "return its tensors as outputs of their own"
                )
        if problems:
            raise UnsupportedModelError("the model's inputs or outputs cannot be represented", problems)
        for _ in range(MAX_ROUNDS):
            if not any(_is_special(n) for n in self.g.node) and not self.alias_left():
                break
            self.infer()
            self.producers = {o: n for n in self.g.node for o in n.output if o}
            # what was not known may be now (values inlined last round, their shapes inferred)
            self.consts = {k: v for k, v in self.consts.items() if v is not None}
            changed, problems = self.round()
            select, self.select = self.select, False
            if not problems:
                continue
            if not changed and not select:  # no constant can appear any more: choose with Where where allowed
                self.select = True
                continue
            if not changed:
                raise UnsupportedModelError(
                    "control flow that is not static at compile time cannot be compiled", problems
                )
        else:
            raise UnsupportedModelError(
                "control flow cannot be compiled",
                [f"it is still there after {MAX_ROUNDS} rounds of inlining (nesting too deep)"],
            )
        self.finish()

    def alias_left(self) -> bool:
        """Whether some node still reads a sequence or optional (an Identity of one, say)."""
        special = set(self.seqs) | set(self.opts)
        return bool(special) and any(i in special for n in self.g.node for i in n.input)

    def round(self) -> tuple[bool, list[str]]:
        new: list[onnx.NodeProto] = []
        problems: list[str] = []
        changed = False
        special = set(self.seqs) | set(self.opts)
        for n in list(self.g.node):
            if not _is_special(n) and not (
                n.op_type == "Identity" and n.input and (n.input[0] in special or self.kind(n.input[0]) != "tensor")
            ):
                if special and any(i in special for i in n.input):
                    problems.append(
                        f"{self.where(n)}: it reads a sequence or optional value, which only sequence ops can take"
                    )
                new.append(n)
                continue
            out: list[onnx.NodeProto] = []
            self.new_inits = []
            self.current = self.where(n)
            try:
                self.rewrite(n, out)
            except _Defer as e:
                problems.append(f"{self.where(n)}: {e}")
                new.append(n)
                for t in self.new_inits:
                    del self.inits[t.name]
                continue
            changed = True
            self.g.initializer.extend(self.new_inits)
            new.extend(out)
            special = set(self.seqs) | set(self.opts)
        del self.g.node[:]
        self.g.node.extend(new)
        return changed, problems

    def finish(self) -> None:
        problems = []
        produced = {o for n in self.g.node for o in n.output} | set(self.inits) | {vi.name for vi in self.g.input}
        for vi in self.g.output:
            if vi.name in self.seqs or vi.name in self.opts:
                problems.append(
                    f"graph output {vi.name!r} is a sequence or optional: edgec's runtimes return tensors only"
                )
            elif vi.name not in produced:
                problems.append(f"graph output {vi.name!r} is never produced")
        if self.where_checks:
            self.infer()
            for where, a, b, k in self.where_checks:
                sa, sb, ta, tb = self.shape(a), self.shape(b), self.elem_type(a), self.elem_type(b)
                if sa is None or sb is None or sa != sb or not ta or ta != tb:
                    problems.append(
                        f"{where}: its condition is computed at run time, and its output {k} is "
                        f"{_describe(ta, sa)} in one branch and {_describe(tb, sb)} in the other: "
                        "both branches can be computed and one chosen only where the two have the same "
                        "static shape and dtype"
                    )
        if problems:
            raise UnsupportedModelError("control flow that is not static at compile time cannot be compiled", problems)

    # ---------------------------------------------------------------------------------------------- the rules
    def rewrite(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        op = n.op_type
        if not _default(n.domain):
            raise _Defer(f"control flow of domain {n.domain!r} is not supported")
        handler = getattr(self, f"_{op}", None)
        if op == "Identity":
            if n.input[0] not in self.seqs and n.input[0] not in self.opts:
                raise _Defer(f"its input {n.input[0]!r} is a sequence or optional not known at compile time")
            self.identity(out, n.input[0], n.output[0])
            return
        if handler is None or op not in _SEQUENCE_OPS | _CONTROL:
            raise _Defer(f"{op} with subgraphs is not supported")
        handler(n, out)

    def _attrs(self, n: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: helper.get_attribute_value(a) for a in n.attribute}

    def _If(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        a = self._attrs(n)
        then_g, else_g = a["then_branch"], a["else_branch"]
        cond = self.value(n.input[0])
        if cond is not None:
            if cond.size != 1:
                raise _Defer(f"its condition has {cond.size} elements, expected one")
            taken = then_g if bool(cond.reshape(-1)[0]) else else_g
            res = self.inline(out, taken, {}, {})
            for o, r in zip(n.output, res):
                if o:
                    self.identity(out, r, o)
            return
        why = "its condition is computed at run time, so"
        if not self.select:
            raise _Defer("its condition is not (yet) a compile-time constant")
        if self.opset < 9:
            raise _Defer(
                f"{why} both branches would be computed and chosen with Where, which opset {self.opset} "
                "does not define (opset 9 does)"
            )
        for g in (then_g, else_g):
            rand = _nondeterministic(g)
            if rand:
                raise _Defer(
                    f"{why} both branches would be computed, and branch {g.name!r} holds {rand}, "
                    "which is not deterministic"
                )
            for vi in g.output:
                what = _not_tensor(vi.type) or (self.kind(vi.name) != "tensor" and "a sequence or optional")
                if what:
                    raise _Defer(f"{why} one of two values would be chosen, and branch output {vi.name!r} is {what}")
        for o in n.output:
            if o and self.kind(o) != "tensor":
                raise _Defer(f"{why} one of two values would be chosen, and output {o!r} is a sequence or optional")
        ts = self.inline(out, then_g, {}, {})
        es = self.inline(out, else_g, {}, {})
        c = self.node(out, "Reshape", [n.input[0], self.const(out, np.zeros(0, np.int64))])
        for k, (o, t, e) in enumerate(zip(n.output, ts, es)):
            if o:
                self.node(out, "Where", [c, t, e], [o])
                self.where_checks.append((self.where(n), t, e, k))

    def _Loop(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        body = self._attrs(n)["body"]
        ins = list(n.input) + [""] * max(0, 2 - len(n.input))
        trip = self.scalar(ins[0], "its trip count M") if ins[0] else None
        go = bool(self.scalar(ins[1], "its initial condition")) if ins[1] else True
        if trip is None and not ins[1]:
            raise _Defer("it has neither a trip count nor a condition (an infinite loop)")
        carried = ins[2:]
        n_scan = len(body.output) - 1 - len(carried)
        if n_scan < 0 or len(body.input) != 2 + len(carried):
            raise _Defer("its body's inputs and outputs do not match its carried values")
        size = max(_count_nodes(body), 1)
        if trip is not None and trip * size > MAX_UNROLLED_NODES and _always_true(body):
            self.check_size(body, trip, "iterations")
        cur = list(carried)
        scans: list[list[str]] = [[] for _ in range(n_scan)]
        hoisted: dict[str, str] = {}
        i = 0
        while go and (trip is None or i < trip):
            if (i + 1) * size > MAX_UNROLLED_NODES:
                self.check_size(body, trip if trip is not None else i + 1, "iterations")
            it = self.const(out, np.array(i, np.int64))
            ci = self.const(out, np.array(True))
            res = self.inline(out, body, self.bind(out, body, [it, ci] + cur, "body"), hoisted)
            cur = res[1 : 1 + len(carried)]
            for k in range(n_scan):
                scans[k].append(res[1 + len(carried) + k])
            i += 1
            if trip is not None and i >= trip:
                break  # the condition after the last iteration is never read
            c = self.value(res[0])
            if c is None or c.size != 1:
                raise _Defer(
                    f"its body's condition output {body.output[0].name!r} is computed at run time: only a "
                    "loop whose condition is a compile-time constant in every iteration can be unrolled"
                )
            go = bool(c.reshape(-1)[0])
        for o, v in zip(n.output, cur):
            if o:
                self.identity(out, v, o)
        for k, o in enumerate(n.output[len(carried) :]):
            if not o:
                continue
            if scans[k]:
                self.stack(out, scans[k], 0, o)
            else:
                self.empty_output(out, body.output[1 + len(carried) + k], 0, o)

    def _Scan(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        a = self._attrs(n)
        body, k_in = a["body"], int(a["num_scan_inputs"])
        if self.opset < 9:
            self._scan8(n, out, a)
            return
        n_state = len(n.input) - k_in
        states, xs = list(n.input[:n_state]), list(n.input[n_state:])
        n_out = len(body.output) - n_state
        in_axes = list(a.get("scan_input_axes", [0] * k_in))
        in_dirs = list(a.get("scan_input_directions", [0] * k_in))
        out_axes = list(a.get("scan_output_axes", [0] * n_out))
        out_dirs = list(a.get("scan_output_directions", [0] * n_out))
        length, axes = self.scan_length(xs, in_axes)
        finals, outs = self.unroll_scan(out, body, states, xs, axes, in_dirs, out_dirs, length)
        for o, v in zip(n.output, finals):
            if o:
                self.identity(out, v, o)
        for k, o in enumerate(n.output[n_state:]):
            if not o:
                continue
            axis = out_axes[k]
            if axis < 0 and self.opset < 11:
                raise _Defer(f"scan_output_axes {axis} is negative, which opset {self.opset} does not allow")
            if outs[k]:
                self.stack(out, outs[k], axis, o)
            else:
                self.empty_output(out, body.output[n_state + k], axis, o)

    def scan_length(self, xs: list[str], axes: list[int], batched: bool = False) -> tuple[int, list[int]]:
        lengths, norm = set(), []
        for x, axis in zip(xs, axes):
            shape = self.shape(x)
            if shape is None:
                raise _Defer(
                    f"the shape of its scan input {x!r} is not static, so the number of iterations is not "
                    "known at compile time"
                )
            axis = axis + len(shape) if axis < 0 else axis
            if not 0 <= axis < len(shape):
                raise _Defer(f"scan axis {axis} is out of range for scan input {x!r} of rank {len(shape)}")
            lengths.add(shape[axis])
            norm.append(axis)
        if len(lengths) != 1:
            raise _Defer(f"its scan inputs have different lengths ({sorted(lengths)})")
        return lengths.pop(), norm

    def unroll_scan(
        self,
        out: list[onnx.NodeProto],
        body: onnx.GraphProto,
        states: list[str],
        xs: list[str],
        axes: list[int],
        in_dirs: list[int],
        out_dirs: list[int],
        length: int,
    ) -> tuple[list[str], list[list[str]]]:
        """Final states and each scan output's per-iteration values (in output order, directions applied)."""
        self.check_size(body, length, "scan steps")
        n_out = len(body.output) - len(states)
        outs: list[list[str]] = [[] for _ in range(n_out)]
        hoisted: dict[str, str] = {}
        cur = list(states)
        for t in range(length):
            elems = [self.take(out, x, length - 1 - t if d else t, axis) for x, axis, d in zip(xs, axes, in_dirs)]
            res = self.inline(out, body, self.bind(out, body, cur + elems, "body"), hoisted)
            cur = res[: len(states)]
            for k in range(n_out):
                outs[k].append(res[len(states) + k])
        return cur, [list(reversed(v)) if d else v for v, d in zip(outs, out_dirs)]

    def _scan8(self, n: onnx.NodeProto, out: list[onnx.NodeProto], a: dict[str, Any]) -> None:
        """Opset 8: a batch axis 0 (unrolled per batch element) and a scan axis 1; ``sequence_lens`` absent or
        all full."""
        body, k_in = a["body"], int(a["num_scan_inputs"])
        ins = list(n.input)
        lens, rest = ins[0], ins[1:]
        n_state = len(rest) - k_in
        states, xs = rest[:n_state], rest[n_state:]
        dirs = list(a.get("directions", [0] * k_in))
        length, _ = self.scan_length(xs, [1] * k_in)
        batch, _ = self.scan_length(xs + states, [0] * len(xs + states))
        if lens:
            v = self.value(lens)
            if v is None or not (v.reshape(-1) == length).all():
                raise _Defer(
                    "its sequence_lens is not a compile-time constant equal to the full length: "
                    "variable-length scans (padded outputs) are not supported"
                )
        self.check_size(body, batch * length, "scan steps")
        finals: list[list[str]] = [[] for _ in states]
        stacked: list[list[str]] = [[] for _ in range(len(body.output) - n_state)]
        for b in range(batch):
            bs = [self.take(out, s, b, 0) for s in states]
            bx = [self.take(out, x, b, 0) for x in xs]
            cur, outs = self.unroll_scan(out, body, bs, bx, [0] * k_in, dirs, [0] * len(stacked), length)
            for k, final in enumerate(cur):
                finals[k].append(final)
            for k, vals in enumerate(outs):
                if not vals:
                    raise _Defer("it runs no iteration: empty scan outputs of opset 8 are not supported")
                whole = self.fresh("scan_out")
                self.stack(out, vals, 0, whole)
                stacked[k].append(whole)
        for o, vals in zip(n.output, finals + stacked):
            if o:
                self.stack(out, vals, 0, o)

    def _SequenceMap(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        body = self._attrs(n)["body"]
        ins = list(n.input)
        seqs = [
            self.sequence(i) if (i in self.seqs or self.kind(i) == "seq" or k == 0) else None for k, i in enumerate(ins)
        ]
        lengths = {len(s) for s in seqs if s is not None}
        if len(lengths) != 1:
            raise _Defer(f"its input sequences have different lengths ({sorted(lengths)})")
        length = lengths.pop()
        self.check_size(body, length, "elements")
        results: list[list[str]] = [[] for _ in n.output]
        hoisted: dict[str, str] = {}
        for t in range(length):
            vals = [s[t] if s is not None else i for s, i in zip(seqs, ins)]
            res = self.inline(out, body, self.bind(out, body, vals, "body"), hoisted)
            for k, r in enumerate(res):
                results[k].append(r)
        for o, vals in zip(n.output, results):
            if o:
                self.seqs[o] = vals

    # ---------------------------------------------------------------------------------------------- sequences
    def sequence(self, name: str) -> list[str]:
        s = self.seqs.get(name)
        if s is None:
            raise _Defer(f"its input sequence {name!r} is not known at compile time")
        return s

    def position(self, name: str, length: int, insert: bool) -> int:
        pos = self.scalar(name, "the position")
        hi = length if insert else length - 1
        if not -length <= pos <= hi:
            raise _Defer(f"position {pos} is out of range for a sequence of {length} tensors")
        return pos + length if pos < 0 else pos

    def _SequenceConstruct(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        self.seqs[n.output[0]] = list(n.input)

    def _SequenceEmpty(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        self.seqs[n.output[0]] = []

    def _SequenceInsert(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        s = list(self.sequence(n.input[0]))
        pos = self.position(n.input[2], len(s), True) if len(n.input) > 2 and n.input[2] else len(s)
        s.insert(pos, n.input[1])
        self.seqs[n.output[0]] = s

    def _SequenceErase(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        s = list(self.sequence(n.input[0]))
        if not s:
            raise _Defer("it erases from an empty sequence")
        pos = self.position(n.input[1], len(s), False) if len(n.input) > 1 and n.input[1] else len(s) - 1
        del s[pos]
        self.seqs[n.output[0]] = s

    def _SequenceAt(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        s = self.sequence(n.input[0])
        self.identity(out, s[self.position(n.input[1], len(s), False)], n.output[0])

    def _SequenceLength(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        self.const(out, np.array(len(self.sequence(n.input[0])), np.int64), n.output[0])

    def _ConcatFromSequence(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        s = self.sequence(n.input[0])
        a = self._attrs(n)
        axis, new_axis = int(a["axis"]), int(a.get("new_axis", 0))
        if not s:
            raise _Defer("its sequence is empty (ConcatFromSequence fails on an empty sequence)")
        if new_axis:
            self.stack(out, s, axis, n.output[0])
        else:
            self.node(out, "Concat", list(s), [n.output[0]], axis=axis)

    def _SplitToSequence(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        x = n.input[0]
        a = self._attrs(n)
        shape = self.shape(x)
        if shape is None:
            raise _Defer(f"the shape of its input {x!r} is not static")
        axis = int(a.get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        if not 0 <= axis < len(shape):
            raise _Defer(f"axis {axis} is out of range for rank {len(shape)}")
        dim = shape[axis]
        split = n.input[1] if len(n.input) > 1 and n.input[1] else None
        squeeze = False
        if split is None:
            sizes, squeeze = [1] * dim, not int(a.get("keepdims", 1))
        else:
            v = self.value(split)
            if v is None:
                raise _Defer(f"its split ({split!r}) is computed at run time")
            if v.ndim == 0:
                step = int(v)
                if step <= 0:
                    raise _Defer(f"split {step} is not positive")
                sizes = [min(step, dim - s) for s in range(0, dim, step)]
            else:
                sizes = [int(s) for s in v.reshape(-1)]
                if sum(sizes) != dim or min(sizes, default=0) < 0:
                    raise _Defer(f"split {sizes} does not add up to the axis length {dim}")
        parts, start = [], 0
        for size in sizes:
            c = [self.const(out, np.array([v], np.int64)) for v in (start, start + size, axis)]
            part = self.node(out, "Slice", [x] + c)
            parts.append(self.squeeze(out, part, axis) if squeeze else part)
            start += size
        self.seqs[n.output[0]] = parts

    # ---------------------------------------------------------------------------------------------- optionals
    def _Optional(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        x = n.input[0] if n.input else ""
        if not x:
            self.opts[n.output[0]] = None
        elif x in self.seqs:
            self.opts[n.output[0]] = ("seq", self.seqs[x])
        elif self.kind(x) == "tensor":
            self.opts[n.output[0]] = ("tensor", x)
        else:
            raise _Defer(f"its input {x!r} is not known at compile time")

    def _OptionalHasElement(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        x = n.input[0] if n.input else ""
        if not x:
            has = False
        elif x in self.opts:
            has = self.opts[x] is not None
        elif x in self.seqs or self.kind(x) == "tensor":
            has = True  # a tensor or sequence given where an optional may be is present
        else:
            raise _Defer(f"its input {x!r} is an optional not known at compile time")
        self.const(out, np.array(has), n.output[0])

    def _OptionalGetElement(self, n: onnx.NodeProto, out: list[onnx.NodeProto]) -> None:
        x = n.input[0]
        if x in self.opts:
            o = self.opts[x]
            if o is None:
                raise _Defer(f"its optional {x!r} is empty (OptionalGetElement fails on an empty optional)")
            kind, v = o
            if kind == "seq":
                self.seqs[n.output[0]] = v  # type: ignore[assignment]
            else:
                self.node(out, "Identity", [v], [n.output[0]])  # type: ignore[list-item]
        elif x in self.seqs:
            self.seqs[n.output[0]] = self.seqs[x]
        elif self.kind(x) == "tensor":
            self.node(out, "Identity", [x], [n.output[0]])
        else:
            raise _Defer(f"its input {x!r} is an optional not known at compile time")


def _describe(elem: int, shape: list[int] | None) -> str:
    dt = onnx.TensorProto.DataType.Name(elem).lower() if elem else "of unknown dtype"
    return f"{dt}{shape}" if shape is not None else f"{dt} of unknown (or not static) shape"


def eliminate_control_flow(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its compile-time-static control flow, sequences and optionals rewritten into plain tensor
    ops (see the module's docstring). A model without any is returned as it is; otherwise a rewritten copy.

    Raises:
        UnsupportedModelError: every node that cannot be rewritten, with its op and why; graph inputs and
            outputs of sequence or optional type.
    """
    if not needs_rewrite(model):
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _Static(m).run()
    produced = {o for n in m.graph.node for o in n.output}
    keep = [vi for vi in m.graph.value_info if vi.name in produced and not _not_tensor(vi.type)]
    del m.graph.value_info[:]
    m.graph.value_info.extend(keep)
    return m
