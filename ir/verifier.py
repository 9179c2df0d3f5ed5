"""The IR verifier: structure, use-def consistency, types, shapes and annotations.

Verification is linear in the size of the graph (the pass manager runs it after every pass): use records are
looked up, not searched, and a constant's own checks (a quantized tensor's :meth:`QuantizedTensor.validate`,
a sparsity pattern against the data) run once per distinct tensor per call, and are remembered across calls
for tensors whose arrays are immutable (read-only all the way down to their buffer, e.g. memory-mapped
weights), keyed by the objects themselves, so a tensor replaced or re-annotated is checked again.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from .core import ConstData, IRError, Model, Node, Value
from .ops import EDGEC_DOMAIN, OPS
from .tensor import QuantizedTensor, Sparsity, Tensor


class VerificationError(IRError):
    """The IR is invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__("invalid IR:\n" + "\n".join(f"  - {e}" for e in errors[:20]) + more)


def verify(model: Model, check_shapes: bool = False) -> None:
    """Raise :class:`VerificationError` listing every problem; return None when the model is valid.

    Args:
        model: the model to check.
        check_shapes: also run ONNX shape inference and compare against the recorded shapes.
    """
    g = model.graph
    errs: list[str] = []
    defined: set[int] = set()
    names: dict[str, object] = {}  # value name -> what defined it: a description, or the producing Node

    def what(w: object) -> str:
        return f"output of {w.name!r}" if isinstance(w, Node) else cast(str, w)

    def claim(v: Value, w: object) -> None:
        if v.name in names:
            errs.append(f"value name {v.name!r} is used twice ({what(names[v.name])} and {what(w)})")
        names[v.name] = w

    for v in g.inputs:
        claim(v, "graph input")
        defined.add(id(v))
        if v.dtype is None:
            errs.append(f"graph input {v.name!r} has no dtype")
    checks = _ConstChecks()
    for key, v in g.initializers.items():
        claim(v, "constant")
        defined.add(id(v))
        if key != v.name:
            errs.append(f"constant registered as {key!r} is named {v.name!r}")
        if v.const is None:
            errs.append(f"constant {v.name!r} has no data")
            continue
        if v.shape != v.const.shape:
            errs.append(f"constant {v.name!r} declares shape {v.shape} but holds {v.const.shape}")
        if isinstance(v.const, QuantizedTensor):
            errs.extend(f"quantized constant {v.name!r}: {e}" for e in checks.quantized(v.const))
        if v.sparsity is not None:
            errs.extend(f"sparsity of {v.name!r}: {e}" for e in checks.sparsity(v.sparsity, v.const))
    node_names: set[str] = set()
    opset_domains = model.opset_imports
    add_defined, add_node_name = defined.add, node_names.add
    for n in g.nodes:
        # the checks of every node, in this order; the hot path (a valid node) formats no message
        name, domain = n.name, n.domain
        if n._graph is not g:
            errs.append(f"{_where(n)} does not point back to its graph")
        if name in node_names:
            errs.append(f"{_where(n)}: node name used twice")
        add_node_name(name)
        if domain:
            if domain == EDGEC_DOMAIN:
                d = OPS.get(n.op_type)
                if d is None:
                    errs.append(f"{_where(n)}: unknown edgec op; known: {', '.join(sorted(OPS))}")
                else:
                    present = len(n.inputs)
                    if not d.min_inputs <= present <= d.max_inputs:
                        errs.append(f"{_where(n)}: takes {d.min_inputs}..{d.max_inputs} inputs, has {present}")
                    unknown = set(n.attributes) - set(d.attributes)
                    if unknown:
                        errs.append(
                            f"{_where(n)}: unknown attributes {sorted(unknown)}; allowed {sorted(d.attributes)}"
                        )
            elif domain != "ai.onnx" and domain not in opset_domains:
                errs.append(f"{_where(n)}: domain {domain!r} is not in the model's opset imports")
        i = 0
        for x in n._inputs:
            if x is not None:
                if id(x) not in defined:
                    errs.append(f"{_where(n)}: input {i} {x.name!r} is used before it is defined (or is undefined)")
                if not x._has_use(n, i):
                    errs.append(f"{_where(n)}: input {i} {x.name!r} does not record this use")
            i += 1
        k = 0
        for o in n.outputs:
            claim(o, n)
            if o._producer is not n or o._index != k:
                errs.append(f"{_where(n)}: output {k} {o.name!r} names another producer")
            add_defined(id(o))
            if o.quant is not None:
                errs.extend(f"activation quant of {o.name!r}: {e}" for e in o.quant.validate())
            k += 1
    for v in g.values():
        if not v._uses:
            continue
        for u in tuple(v._uses):
            un = u.node
            if un._graph is not g:
                errs.append(f"value {v.name!r} lists a use by {un.name!r}, which is not in the graph")
            elif u.index >= len(un._inputs) or un._inputs[u.index] is not v:
                errs.append(f"value {v.name!r} lists a stale use ({un.name!r}, input {u.index})")
    for o in g.outputs:
        if id(o) not in defined:
            errs.append(f"graph output {o.name!r} is not defined in the graph")
    if check_shapes and not errs:
        errs.extend(_shape_errors(model))
    if errs:
        raise VerificationError(errs)


def _where(n: Node) -> str:
    return f"node {n.name!r} ({n.qualified_op})"


def _shape_errors(model: Model) -> list[str]:
    """Infer shapes in place, compare with what was recorded, then restore the recorded types."""
    from .onnx_io import infer_shapes

    recorded = {o.name: (o.dtype, o.shape) for n in model.graph for o in n.outputs}
    try:
        infer_shapes(model)
    except IRError as e:
        return [str(e)]
    errs = []
    for n in model.graph:
        for o in n.outputs:
            dt, shape = recorded[o.name]
            if dt is not None and o.dtype is not None and dt != o.dtype:
                errs.append(f"value {o.name!r} is recorded as {dt.short} but infers to {o.dtype.short}")
            if shape is not None and o.shape is not None and len(shape) == len(o.shape):
                for a, b in zip(shape, o.shape):
                    if isinstance(a, int) and isinstance(b, int) and a != b:
                        errs.append(f"value {o.name!r} is recorded with shape {shape} but infers to {o.shape}")
                        break
            o.dtype, o.shape = dt if dt is not None else o.dtype, shape if shape is not None else o.shape
    return errs


# ------------------------------------------------------------------------------------- constants' own checks
# tensor -> {key: (what the result depends on, errors)}; entries go with the tensor.
_REMEMBERED: "weakref.WeakKeyDictionary[object, dict[object, tuple[tuple[object, ...], list[str]]]]" = (
    weakref.WeakKeyDictionary()
)


def _immutable(a: Any) -> bool:
    """Whether ``a``'s contents cannot change: a read-only array whose bases are all read-only, down to a
    read-only buffer (bytes, a read-only memory map)."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        if a.base is None:
            return True
        a = a.base
    try:
        with memoryview(a) as m:
            return m.readonly
    except TypeError:
        return False


def _fields(q: QuantizedTensor) -> tuple[object, ...]:
    return tuple(getattr(q, f.name) for f in dataclasses.fields(q))


def _frozen_quantized(q: QuantizedTensor) -> bool:
    arrays = [a for a in (q.codes, q.scales, q.zero_points, q.codebook, q.offsets) if a is not None]
    arrays += list((q.layout_params or {}).values())
    return all(isinstance(a, np.ndarray) and _immutable(a) for a in arrays)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


class _ConstChecks:
    """The constants' own checks for one verify call: each distinct tensor checked once (a tensor shared by
    many constants is not re-checked per constant), immutable ones remembered across calls."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, object], tuple[object, tuple[object, ...], list[str]]] = {}

    def _cached(
        self, obj: object, key: object, deps: tuple[object, ...], frozen: bool, compute: Callable[[], list[str]]
    ) -> list[str]:
        seen = self._seen.get((id(obj), key))
        if seen is not None and seen[0] is obj and _same(seen[1], deps):
            return seen[2]
        stored = None
        if frozen:
            try:
                stored = _REMEMBERED.get(obj, {}).get(key)
            except TypeError:  # not weakly referenceable: never remembered
                frozen = False
        if stored is not None and _same(stored[0], deps):
            errs = stored[1]
        else:
            errs = compute()
            if frozen:
                try:
                    _REMEMBERED.setdefault(obj, {})[key] = (deps, errs)
                except TypeError:  # not weakly referenceable: checked again next time
                    pass
        self._seen[(id(obj), key)] = (obj, deps, errs)
        return errs

    def quantized(self, q: QuantizedTensor) -> list[str]:
        deps = _fields(q)  # a field swapped behind the frozen dataclass's back invalidates the result
        return self._cached(q, "validate", deps, _frozen_quantized(q), q.validate)

    def sparsity(self, sp: Sparsity, const: ConstData) -> list[str]:
        if isinstance(const, Tensor):
            frozen = _immutable(const.numpy())
        else:
            frozen = isinstance(const, QuantizedTensor) and _frozen_quantized(const)
        # Sparsity is a frozen dataclass compared by value: the key holds it, deps hold the data
        deps = _fields(const) if isinstance(const, QuantizedTensor) else (const.numpy(),)
        return self._cached(const, ("sparsity", sp), deps, frozen, lambda: sp.validate(const.numpy()))
