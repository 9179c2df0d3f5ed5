"""Small helpers shared by the pattern-matching passes."""

from __future__ import annotations

import numpy as np

from ...ir import Graph, IRError, Node, QuantizedTensor, Value


def const(v: Value | None) -> np.ndarray | None:
    """The value's data when it is a plain (non-quantized) constant, else None."""
    if v is None or v.const is None or isinstance(v.const, QuantizedTensor):
        return None
    return v.const.numpy()


def scalar(v: Value | None) -> float | None:
    """The single number a constant holds (any shape with one element), else None."""
    c = const(v)
    if c is None or c.size != 1:
        return None
    return float(c.reshape(()))


def producer(v: Value | None, op: str) -> Node | None:
    """The producer of ``v`` when it is an ``op`` node (default domain) whose output only feeds one user."""
    if v is None or v.producer is None or v.producer.op_type != op or v.producer.domain:
        return None
    return v.producer


def sole_user(v: Value, op: str | None = None) -> Node | None:
    """The single node using ``v`` (optionally only if it is an ``op``), when ``v`` is not a graph output."""
    uses = v.uses
    if len(uses) != 1 or (v._graph is not None and is_output(v._graph, v)):
        return None
    n = uses[0].node
    if op is not None and (n.op_type != op or n.domain):
        return None
    return n


def is_output(graph: Graph, v: Value) -> bool:
    return any(o is v for o in graph.outputs)


def other_input(n: Node, v: Value | None) -> Value | None:
    """For a binary node using ``v``, the other operand."""
    a, b = n.inputs[0], n.inputs[1]
    return b if a is v else a if b is v else None


def replace(graph: Graph, old: Value, new: Value, dead: list[Node]) -> None:
    """Redirect every use of ``old`` (and graph outputs) to ``new``, then remove the dead nodes, last first. A
    fresh ``new`` (no uses yet: a fused node's result) takes over ``old``'s activation quantization, which its
    readers read (an imported Q/DQ model's annotations survive the fusions)."""
    if old.quant is not None and new.quant is None and not new.uses:
        new.quant = old.quant
    old.replace_all_uses_with(new)
    for n in dead:
        if n.graph is graph and not any(o.uses or is_output(graph, o) for o in n.outputs):
            graph.remove(n)


def take_output_name(g: Graph, old: Value, new: Value) -> None:
    """Let a fused node's result inherit the name of a graph output it replaces."""
    if is_output(g, old):
        name = old.name
        g.rename(old, g.unique_name(name + "_unfused"))
        g.rename(new, name)


def fuse(g: Graph, end: Value, node: Node, dead: list[Node]) -> None:
    """Insert ``node`` (the fused replacement of the chain ending in ``end``) and drop the chain."""
    anchor = end.producer
    if anchor is None:
        raise IRError(f"value {end.name!r} has no producer to fuse")
    g.insert_before(anchor, node)
    node.output.dtype, node.output.shape = end.dtype, end.shape
    take_output_name(g, end, node.output)
    replace(g, end, node.output, dead)
