"""prune-channels: structured pruning that physically removes output channels (CNN filters, MLP neurons).

A *channel group* is a producer (Conv with group=1, or ``edgec::Linear``) whose output reaches, through
unary element-wise ops that keep zero at zero (Relu, LeakyRelu, Gelu, Tanh, Clip around 0, Identity,
Dropout), only consumers that read it as their input (Conv with group=1, ``edgec::Linear``). Removing a
channel then means removing the producer's weight row (and bias entry) and the consumers' input column:
every tensor shrinks, the graph stays valid, and when the removed channels were all-zero the outputs are
unchanged. Residual adds, concatenations and graph outputs end a chain, so their channels are kept.

Channels are ranked by ``||W_producer[o]|| * ||W_consumers[:, o]||`` (how much signal enters and leaves the
channel; ``score=wanda`` multiplies in the channel's activation norm on calibration data), and the lowest
``sparsity`` fraction of each group is removed, the kept count rounded up to a multiple of ``multiple``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

import numpy as np

from ...errors import UsageError
from ...ir import Model, Node, QuantizedTensor, Tensor, Value, infer_shapes
from ...ir.passes import Pass, PassContext, option

REPORT_KEY = "edgec.prune_channels"
ZERO_PRESERVING = {"Relu", "LeakyRelu", "edgec::Gelu", "Gelu", "Tanh", "Identity", "Dropout", "Clip"}


@dataclasses.dataclass
class Group:
    producer: Node
    chain: list[Node]  # the unary ops between producer and consumers
    consumers: list[Node]

    @property
    def value(self) -> Value:
        return (self.chain[-1] if self.chain else self.producer).outputs[0]


def _weight(n: Node) -> np.ndarray | None:
    w = n.inputs[1] if len(n.inputs) > 1 else None
    if w is None or not w.is_const or isinstance(w.const, QuantizedTensor):
        return None
    return np.asarray(w.numpy())


def _layer_weight(n: Node) -> np.ndarray:
    """The weight of a node that :func:`_is_layer` accepted (find_groups' producers and consumers)."""
    w = _weight(n)
    assert w is not None  # _is_layer checked it; shrinking gives float constants again
    return w


def _is_layer(n: Node) -> bool:
    op = n.qualified_op
    if op == "Conv":
        return int(n.attr("group", 1)) == 1 and _weight(n) is not None
    if op != "edgec::Linear":
        return False
    w = _weight(n)
    return w is not None and w.ndim == 2


def _keeps_zero(n: Node) -> bool:
    op = n.qualified_op
    if op not in ZERO_PRESERVING or len(n.outputs) != 1:
        return False
    if op == "Clip":
        lo = n.inputs[1] if len(n.inputs) > 1 else None
        hi = n.inputs[2] if len(n.inputs) > 2 else None
        for v, ok in ((lo, lambda a: a <= 0), (hi, lambda a: a >= 0)):
            if v is not None and (not v.is_const or not ok(float(np.asarray(v.numpy()).reshape(())))):
                return False
    return True


def find_groups(model: Model) -> list[Group]:
    outputs = {id(v) for v in model.graph.outputs}
    groups = []
    for n in model.graph:
        if not _is_layer(n):
            continue
        if len(n.inputs) > 2 and n.inputs[2] is not None and not n.inputs[2].is_const:
            continue
        chain, v = [], n.outputs[0]
        while id(v) not in outputs and len(v.uses) == 1 and _keeps_zero(v.uses[0].node) and v.uses[0].index == 0:
            chain.append(v.uses[0].node)
            v = chain[-1].outputs[0]
        if id(v) in outputs or not v.uses:
            continue
        users = [u.node for u in v.uses]
        if any(u.index != 0 or not _is_layer(u.node) for u in v.uses):
            continue
        # the consumers' input axis must be the channel axis: Conv -> Conv, Linear -> Linear
        if any(c.qualified_op != n.qualified_op for c in users):
            continue
        groups.append(Group(n, chain, users))
    return groups


def selected(name: str, include: str, exclude: str) -> bool:
    """The include=/exclude= regex options of the structured pruning passes."""
    return bool(re.search(include, name)) and not (exclude and re.search(exclude, name))


def reinfer(model: Model) -> None:
    """After tensors shrank: every inferred shape again from scratch, and the constants nothing reads gone."""
    for n in model.graph:
        for o in n.outputs:
            o.shape = None
    infer_shapes(model)
    model.graph.remove_unused_consts()


def replace_const(model: Model, node: Node, index: int, arr: np.ndarray, tag: str = "_sliced") -> None:
    """Give ``node`` a new constant input ``index`` holding ``arr`` (the old one goes once nothing reads it)."""
    g = model.graph
    old = node.arg(index)
    new = g.add_const(g.unique_name(old.name + tag), Tensor(np.ascontiguousarray(arr)))
    node.replace_input_with(index, new)
    if not old.uses and old.name in g.initializers:
        g.remove_const(old.name)


@dataclasses.dataclass(frozen=True)
class PruneChannels(Pass):
    name: ClassVar[str] = "prune-channels"
    lossy: ClassVar[bool] = True  # changes the numbers on purpose: --verify judges fidelity
    summary: ClassVar[str] = "structured pruning: remove output channels / MLP neurons, shrinking every tensor"
    sparsity: float = option(
        0.25, check=lambda v: 0 <= v < 1, allowed="0 <= sparsity < 1", help="fraction of each group's channels removed"
    )
    score: str = option(
        "magnitude",
        choices=("magnitude", "wanda"),
        help="channel ranking (wanda: times the channel's activation norm on calibration data)",
    )
    multiple: int = option(1, check=lambda v: v >= 1, allowed=">= 1", help="keep a multiple of this many channels")
    include: str = option(".*", help="regex on producer node names")
    exclude: str = option("", help="regex on producer node names to leave alone")

    def run(self, model: Model, ctx: PassContext) -> bool:
        groups = [g for g in find_groups(model) if selected(g.producer.name, self.include, self.exclude)]
        if not groups or self.sparsity == 0:
            return False
        if self.score == "wanda" and ctx.calibration is None:
            raise UsageError("prune-channels{score=wanda} needs calibration data: pass --calib")
        act = self._activation_norms(model, groups, ctx) if self.score == "wanda" else {}
        reports: dict = {}
        changed = False
        for grp in groups:
            wp = _layer_weight(grp.producer)
            out = wp.shape[0]
            keep_n = min(out, max(1, -(-round(out * (1 - self.sparsity)) // self.multiple) * self.multiple))
            if keep_n >= out:
                continue
            s = np.sqrt(np.sum(wp.reshape(out, -1).astype(np.float64) ** 2, 1))
            for c in grp.consumers:
                wc = _layer_weight(c)
                s = s * np.sqrt(np.sum(np.moveaxis(wc, 1, 0).reshape(out, -1).astype(np.float64) ** 2, 1))
            if id(grp.producer) in act:
                s = s * act[id(grp.producer)]
            keep = np.sort(np.argsort(-s, kind="stable")[:keep_n])
            self._shrink(model, grp, keep)
            reports[grp.producer.name] = {
                "channels_before": out,
                "channels_after": int(keep_n),
                "consumers": [c.name for c in grp.consumers],
                "score": self.score,
            }
            changed = True
        if changed:
            reinfer(model)
            model.report(REPORT_KEY).update(reports)
        return changed

    def _shrink(self, model: Model, grp: Group, keep: np.ndarray) -> None:
        p = grp.producer
        replace_const(model, p, 1, _layer_weight(p)[keep])
        if len(p.inputs) > 2 and p.inputs[2] is not None:
            replace_const(model, p, 2, np.asarray(p.arg(2).numpy())[keep])
        for c in grp.consumers:
            replace_const(model, c, 1, _layer_weight(c)[:, keep])

    @staticmethod
    def _activation_norms(model: Model, groups: list[Group], ctx: PassContext) -> dict[int, np.ndarray]:
        from ...ir import ReferenceExecutor

        names = [g.value.name for g in groups]
        ex = ReferenceExecutor(model, capture=names, capture_only=True)
        acc: dict[str, np.ndarray] = {}
        for s in ctx.calibration.samples[:16]:
            res = ex.run(s)
            for g in groups:
                a = np.asarray(res[g.value.name], np.float64)
                axis = 1 if g.producer.qualified_op == "Conv" else a.ndim - 1
                sq = np.sum(np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1) ** 2, 1)
                acc[g.value.name] = acc.get(g.value.name, 0) + sq
        return {id(g.producer): np.sqrt(acc[g.value.name]) for g in groups}
