"""Per-input-channel scaling shared by AWQ and SmoothQuant.

For Linear layers ``Y = X W^T`` that read the same input X, ``X W^T = (X / s)(W * s)^T`` for any positive
per-channel ``s``. The weights take ``* s``; ``1 / s`` is folded into the op that produces X when that op
feeds only these layers and is affine per channel (LayerNormalization, RMSNorm, Linear); otherwise an
explicit ``Mul(X, 1/s)`` is inserted in front of them.
"""

from __future__ import annotations

import numpy as np

from ...ir import Model, Node, QuantizedTensor, Tensor, Value

FOLDABLE = {"LayerNormalization", "edgec::RMSNorm", "edgec::Linear"}


def linear_groups(model: Model, nodes: list[Node]) -> list[tuple[Value, list[Node]]]:
    """Group Linear nodes by the value they read (q/k/v projections share one input)."""
    groups: dict[int, tuple[Value, list[Node]]] = {}
    for n in nodes:
        x = n.arg(0)
        groups.setdefault(id(x), (x, []))[1].append(n)
    return list(groups.values())


def _set_const(model: Model, node: Node, index: int, data: np.ndarray) -> None:
    """Give ``node`` a fresh constant at ``index`` (the old one may be shared with other nodes)."""
    old = node.arg(index)
    g = model.graph
    new = g.add_const(g.unique_name(old.name + "_scaled"), Tensor(data.astype(np.float32)))
    node.replace_input_with(index, new)
    if not old.uses and old.name in g.initializers:
        g.remove_const(old.name)


def _gated_linear(model: Model, x: Value) -> Node | None:
    """For ``x = a * b`` (a gated MLP's ``silu(gate) * up``), the float Linear producing one factor and
    read only there: dividing its output rows divides ``x`` exactly."""
    p = x.producer
    if p is None or p.qualified_op != "Mul" or any(v is None or v.is_const for v in p.inputs):
        return None
    for v in p.inputs:
        if v is None:  # (none is: checked above)
            continue
        q = v.producer
        if (
            q is not None
            and q.qualified_op == "edgec::Linear"
            and len(v.uses) == 1
            and not isinstance(q.arg(1).const, QuantizedTensor)
        ):
            return q
    return None


def foldable(model: Model, x: Value, linears: list[Node]) -> bool:
    """Whether :func:`apply_input_scale` can fold the division into an existing op (no extra node)."""
    p = x.producer
    users_ok = (
        p is not None
        and all(u.node in linears and u.index == 0 for u in x.uses)
        and not any(o is x for o in model.graph.outputs)
    )
    if not users_ok or p is None:
        return False
    if p.qualified_op in ("LayerNormalization", "edgec::RMSNorm"):
        return True
    if p.qualified_op == "edgec::Linear":
        return not isinstance(p.arg(1).const, QuantizedTensor)
    return _gated_linear(model, x) is not None


def apply_input_scale(model: Model, x: Value, linears: list[Node], s: np.ndarray, explicit: bool = True) -> str:
    """Scale the Linears' weights by ``s`` (per input channel) and divide X by ``s``. Returns where the
    division went: the producer's name, or ``"explicit Mul"`` (only with ``explicit``; without it, a scale
    that cannot be folded raises ValueError before anything changes)."""
    s = s.astype(np.float32)
    if not explicit and not foldable(model, x, linears):
        raise ValueError(f"the scale of {x.name} cannot be folded into an existing op")
    for n in linears:
        w = n.arg(1)
        if isinstance(w.const, QuantizedTensor):
            raise ValueError(f"{n.name}: weights are already quantized; run scaling before quantize")
        _set_const(model, n, 1, w.numpy() * s[None, :])
    p = x.producer
    users_ok = (
        p is not None
        and all(u.node in linears and u.index == 0 for u in x.uses)
        and not any(o is x for o in model.graph.outputs)
    )
    gated = _gated_linear(model, x) if users_ok else None
    if gated is not None:
        _set_const(model, gated, 1, gated.arg(1).numpy() / s[:, None])
        if len(gated.inputs) > 2 and gated.inputs[2] is not None:
            _set_const(model, gated, 2, gated.arg(2).numpy() / s)
        return gated.name
    if users_ok and p is not None and p.qualified_op in FOLDABLE:
        if p.qualified_op == "LayerNormalization":
            _set_const(model, p, 1, p.arg(1).numpy() / s)
            if len(p.inputs) > 2 and p.inputs[2] is not None:
                _set_const(model, p, 2, p.arg(2).numpy() / s)
            return p.name
        if p.qualified_op == "edgec::RMSNorm":
            _set_const(model, p, 1, p.arg(1).numpy() / s)
            return p.name
        if p.qualified_op == "edgec::Linear" and not isinstance(p.arg(1).const, QuantizedTensor):
            _set_const(model, p, 1, p.arg(1).numpy() / s[:, None])
            if len(p.inputs) > 2 and p.inputs[2] is not None:
                _set_const(model, p, 2, p.arg(2).numpy() / s)
            return p.name
    g = model.graph
    inv = g.add_const(g.unique_name(x.name + "_inv_scale"), Tensor((1.0 / s).astype(np.float32)))
    anchor = min(linears, key=lambda n: g.nodes.index(n))
    with g.inserting_before(anchor):
        mul = g.op("Mul", [x, inv], name=g.unique_name("input_scale"))
    mul.output.dtype, mul.output.shape = x.dtype, x.shape
    for n in linears:
        n.replace_input_with(0, mul.output)
    return "explicit Mul"
