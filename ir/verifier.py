"""The IR verifier: structure, use-def consistency, types, shapes and annotations."""

from __future__ import annotations

from .core import IRError, Model
from .ops import EDGEC_DOMAIN, OPS
from .tensor import QuantizedTensor


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
    names: dict[str, str] = {}

    def claim(v, what: str) -> None:
        if v.name in names:
            errs.append(f"value name {v.name!r} is used twice ({names[v.name]} and {what})")
        names[v.name] = what

    for v in g.inputs:
        claim(v, "graph input")
        defined.add(id(v))
        if v.dtype is None:
            errs.append(f"graph input {v.name!r} has no dtype")
    for k, v in g.initializers.items():
        claim(v, "constant")
        defined.add(id(v))
        if k != v.name:
            errs.append(f"constant registered as {k!r} is named {v.name!r}")
        if v.const is None:
            errs.append(f"constant {v.name!r} has no data")
            continue
        if v.shape != v.const.shape:
            errs.append(f"constant {v.name!r} declares shape {v.shape} but holds {v.const.shape}")
        if isinstance(v.const, QuantizedTensor):
            errs.extend(f"quantized constant {v.name!r}: {e}" for e in v.const.validate())
        if v.sparsity is not None:
            errs.extend(f"sparsity of {v.name!r}: {e}" for e in v.sparsity.validate(v.const.numpy()))
    node_names: set[str] = set()
    for n in g.nodes:
        where = f"node {n.name!r} ({n.qualified_op})"
        if n.graph is not g:
            errs.append(f"{where} does not point back to its graph")
        if n.name in node_names:
            errs.append(f"{where}: node name used twice")
        node_names.add(n.name)
        if n.domain == EDGEC_DOMAIN:
            d = OPS.get(n.op_type)
            if d is None:
                errs.append(f"{where}: unknown edgec op; known: {', '.join(sorted(OPS))}")
            else:
                present = len(n.inputs)
                if not d.min_inputs <= present <= d.max_inputs:
                    errs.append(f"{where}: takes {d.min_inputs}..{d.max_inputs} inputs, has {present}")
                unknown = set(n.attributes) - set(d.attributes)
                if unknown:
                    errs.append(f"{where}: unknown attributes {sorted(unknown)}; allowed {sorted(d.attributes)}")
        elif n.domain not in ("", "ai.onnx") and n.domain not in model.opset_imports:
            errs.append(f"{where}: domain {n.domain!r} is not in the model's opset imports")
        for i, v in enumerate(n.inputs):
            if v is None:
                continue
            if id(v) not in defined:
                errs.append(f"{where}: input {i} {v.name!r} is used before it is defined (or is undefined)")
            if not any(u.node is n and u.index == i for u in v.uses):
                errs.append(f"{where}: input {i} {v.name!r} does not record this use")
        for k, o in enumerate(n.outputs):
            claim(o, f"output of {n.name!r}")
            if o.producer is not n or o.index != k:
                errs.append(f"{where}: output {k} {o.name!r} names another producer")
            defined.add(id(o))
            if o.quant is not None:
                errs.extend(f"activation quant of {o.name!r}: {e}" for e in o.quant.validate())
    for v in g.values():
        for u in v.uses:
            if u.node.graph is not g:
                errs.append(f"value {v.name!r} lists a use by {u.node.name!r}, which is not in the graph")
            elif u.index >= len(u.node.inputs) or u.node.inputs[u.index] is not v:
                errs.append(f"value {v.name!r} lists a stale use ({u.node.name!r}, input {u.index})")
    for o in g.outputs:
        if id(o) not in defined:
            errs.append(f"graph output {o.name!r} is not defined in the graph")
    if check_shapes and not errs:
        errs.extend(_shape_errors(model))
    if errs:
        raise VerificationError(errs)


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
