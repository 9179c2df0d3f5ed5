"""prune-heads: structured pruning that physically removes attention heads.

An *attention block* is an ``edgec::Attention`` node whose Q, K and V inputs each come from one
``edgec::Linear`` (constant weight) through ops that never mix heads, and whose output reaches one or more
``edgec::Linear`` consumers (the output projection) the same way: head splits and merges (``Reshape``),
``Transpose``, ``Unsqueeze`` / ``Expand`` (grouped-query attention), slices and concatenations along other
axes and element-wise ops whose other operand does not vary across heads (rotary embeddings, scaling).
:func:`find_blocks` traces every value between the projections with the position of its head axis and
accepts a block only when every use of every traced value is understood, so a block it returns can be
shrunk without changing anything else.

The unit removed is a *head group*: one head for multi-head attention, one key/value head with the query
heads that share it for grouped-query attention. Removing a group removes the matching rows of the Q, K and
V projections (and their biases), the matching input columns of the output projection, and rescales the
head count in every ``Reshape``/``Expand`` shape on the way (each gets its own new constant; shared shape
constants of other blocks are untouched). When the removed heads' value rows or output columns are all
zero, the outputs do not change.

Groups are ranked by ``||W_v[g]|| * ||W_o[:, g]||`` (what the head writes into the residual stream;
``score=wanda`` multiplies in the norm of the head's output activations on calibration data), and the lowest
``sparsity`` fraction of each block's groups is removed (at least one group stays).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...errors import UsageError
from ...ir import Model, Node, QuantizedTensor, Value
from ...ir.passes import Pass, PassContext, option
from .prune_channels import reinfer, replace_const, selected

REPORT_KEY = "edgec.prune_heads"
UNARY = {
    "Neg",
    "Sigmoid",
    "Relu",
    "Tanh",
    "Cast",
    "Identity",
    "Exp",
    "Erf",
    "Sqrt",
    "Abs",
    "Reciprocal",
    "Dropout",
    "Gelu",
    "edgec::Gelu",
}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where"}


class _Unsupported(Exception):
    pass


def _const_ints(v: Value | None) -> list[int] | None:
    if v is None or not v.is_const or isinstance(v.const, QuantizedTensor):
        return None
    return [int(x) for x in np.asarray(v.numpy()).reshape(-1)]


def _linear_weight(n: Node) -> np.ndarray | None:
    if n.qualified_op != "edgec::Linear" or len(n.inputs) < 2:
        return None
    w = n.arg(1)
    if not w.is_const or isinstance(w.const, QuantizedTensor):
        return None
    arr = np.asarray(w.numpy())
    if arr.ndim != 2:
        return None
    if len(n.inputs) > 2 and n.inputs[2] is not None and not n.inputs[2].is_const:
        return None
    return arr


def _block_weight(n: Node) -> np.ndarray:
    """The weight of a block's Q/K/V or output projection (a Linear that :func:`_linear_weight` accepted)."""
    w = _linear_weight(n)
    assert w is not None  # find_blocks checked it; shrinking gives float 2-D constants again
    return w


@dataclasses.dataclass
class Trace:
    """What shrinking one traced region means: shape constants to rescale and constants to slice."""

    reshapes: list[tuple[Node, int, int]] = dataclasses.field(default_factory=list)  # node, axis, size
    slices: list[tuple[Node, int, int, int]] = dataclasses.field(default_factory=list)  # node, input, axis, size
    ends: list[tuple[Node, int, int]] = dataclasses.field(default_factory=list)  # node, input, axis


def _dims(v: Value) -> list:
    if v.shape is None:
        raise _Unsupported(f"{v.name} has no inferred shape")
    return list(v.shape)


def _trace(model: Model, start: Value, axis: int, groups: int, is_end) -> Trace:
    """Follow ``start``'s head axis (``axis``, non-negative) forward until every path ends in a node for which
    ``is_end(node, input_index)`` holds. Raises _Unsupported naming the first op it cannot see through."""
    out_ids = {id(v) for v in model.graph.outputs}
    ax: dict[int, int] = {id(start): axis}
    tr = Trace()
    for n in model.graph:
        traced = [i for i, u in enumerate(n.inputs) if u is not None and id(u) in ax]
        if not traced:
            continue
        if any(id(o) in out_ids for o in n.inputs if o is not None and id(o) in ax):
            raise _Unsupported("a traced value is a graph output")
        if all(is_end(n, i) for i in traced):
            tr.ends.extend((n, i, ax[id(n.inputs[i])]) for i in traced)
            continue
        op = n.qualified_op
        a = ax[id(n.inputs[traced[0]])]
        x = n.arg(traced[0])
        if len(n.outputs) != 1:
            raise _Unsupported(f"{op} {n.name} has several outputs")
        y = n.outputs[0]
        if op in UNARY:
            out_axis = a
        elif op == "Transpose":
            perm = n.attr("perm", None)
            if perm is None:
                raise _Unsupported(f"Transpose {n.name} without perm")
            out_axis = list(perm).index(a)
        elif op == "Reshape":
            out_axis = _reshape(n, x, a, groups, tr)
        elif op in ("Unsqueeze", "Squeeze"):
            axes = _const_ints(n.inputs[1]) if len(n.inputs) > 1 else n.attr("axes", None)
            if axes is None:
                raise _Unsupported(f"{op} {n.name} with dynamic axes")
            r = len(_dims(x))
            if op == "Unsqueeze":
                rank = r + len(axes)
                axes = sorted(ax_ % rank for ax_ in axes)
                out_axis = [p for p in range(rank) if p not in axes][a]
            else:
                axes = sorted(ax_ % r for ax_ in axes)
                if a in axes:
                    raise _Unsupported(f"Squeeze {n.name} removes the head axis")
                out_axis = a - sum(1 for p in axes if p < a)
        elif op == "Expand":
            shape = _const_ints(n.inputs[1])
            if shape is None:
                raise _Unsupported(f"Expand {n.name} with a dynamic shape")
            r = len(_dims(x))
            rank = max(r, len(shape))
            out_axis = a + rank - r
            p = out_axis - (rank - len(shape))
            size = _dims(x)[a]
            if p >= 0 and shape[p] not in (1, -1):
                if shape[p] != size:
                    raise _Unsupported(f"Expand {n.name} broadcasts the head axis")
                tr.reshapes.append((n, p, size))
        elif op == "Slice":
            if traced != [0]:
                raise _Unsupported(f"Slice {n.name} with traced bounds")
            r = len(_dims(x))
            axes = _const_ints(n.inputs[3]) if len(n.inputs) > 3 and n.inputs[3] is not None else None
            if axes is None:
                starts = _const_ints(n.inputs[1])
                if starts is None:
                    raise _Unsupported(f"Slice {n.name} with dynamic bounds")
                axes = list(range(len(starts)))
            if a in [p % r for p in axes]:
                raise _Unsupported(f"Slice {n.name} slices the head axis")
            out_axis = a
        elif op == "Concat":
            r = len(_dims(x))
            if int(n.attr("axis", 0)) % r == a:
                raise _Unsupported(f"Concat {n.name} concatenates along the head axis")
            if any(u is None or ax.get(id(u)) != a for u in n.inputs):
                raise _Unsupported(f"Concat {n.name} joins a traced value with another")
            out_axis = a
        elif op in ELEMENTWISE:
            rank = len(_dims(y))
            out_axis = a + rank - len(_dims(x))
            size = _dims(x)[a]
            for i, u in enumerate(n.inputs):
                if u is None:
                    continue
                ud = _dims(u)
                p = out_axis - (rank - len(ud))
                if id(u) in ax:
                    if p < 0 or ax[id(u)] != p:
                        raise _Unsupported(f"{op} {n.name} combines head axes at different positions")
                    continue
                if p < 0 or ud[p] == 1:
                    continue
                if ud[p] == size and u.is_const:
                    tr.slices.append((n, i, p, size))
                    continue
                raise _Unsupported(f"{op} {n.name}: input {u.name} varies across heads")
        else:
            raise _Unsupported(f"{op} {n.name}")
        if isinstance(_dims(y)[out_axis], int) and _dims(y)[out_axis] % groups:
            raise _Unsupported(f"{n.name}: the head axis ({_dims(y)[out_axis]}) is not a multiple of {groups}")
        ax[id(y)] = out_axis
    return tr


def _reshape(n: Node, x: Value, a: int, groups: int, tr: Trace) -> int:
    """The head axis after a Reshape that splits, merges or keeps it (recording the shape entry to rescale)."""
    shape = _const_ints(n.inputs[1])
    if shape is None:
        raise _Unsupported(f"Reshape {n.name} with a dynamic shape")
    d = _dims(x)
    size = d[a]
    if not isinstance(size, int):
        raise _Unsupported(f"Reshape {n.name}: the head axis has no static size")
    r = len(d)

    def same(i_out: int, i_in: int) -> bool:
        return shape[i_out] in (0, -1) or shape[i_out] == d[i_in]

    if len(shape) == r + 1:  # split a into (a, a+1): the groups must stay on the outer part
        if not (all(same(i, i) for i in range(a)) and all(same(i + 1, i) for i in range(a + 1, r))):
            raise _Unsupported(f"Reshape {n.name} moves other axes")
        outer, inner = shape[a], shape[a + 1]
        if outer == -1 and inner > 0:
            outer = size // inner
        if outer <= 0 or size % outer or outer % groups:
            raise _Unsupported(f"Reshape {n.name} splits the head axis off the group boundaries")
        if shape[a] != -1:
            tr.reshapes.append((n, a, outer))
        return a
    if len(shape) == r - 1 and a + 1 < r and isinstance(d[a + 1], int):  # merge (a, a+1) into a
        if not (all(same(i, i) for i in range(a)) and all(same(i - 1, i) for i in range(a + 2, r))):
            raise _Unsupported(f"Reshape {n.name} moves other axes")
        merged = size * d[a + 1]
        if shape[a] not in (-1, merged):
            raise _Unsupported(f"Reshape {n.name} does not merge the head axis with the next one")
        if shape[a] != -1:
            tr.reshapes.append((n, a, merged))
        return a
    if len(shape) == r and all(same(i, i) for i in range(r) if i != a) and shape[a] in (0, -1, size):
        if shape[a] == size:
            tr.reshapes.append((n, a, size))
        return a
    raise _Unsupported(f"Reshape {n.name} to {shape}")


@dataclasses.dataclass
class Block:
    attention: Node
    projections: list[Node]  # q, k, v
    outputs: list[Node]  # output projections
    groups: int
    traces: list[Trace]

    @property
    def heads(self) -> int:
        return int(_dims(self.attention.arg(0))[-3])


def _projection(v: Value) -> Node | None:
    """The Linear a Q/K/V input comes from: walk back along first non-constant inputs."""
    for _ in range(24):
        p = v.producer
        if p is None:
            return None
        if _linear_weight(p) is not None:
            return p
        nxt = [u for u in p.inputs if u is not None and not u.is_const and u.producer is not None]
        if not nxt:
            return None
        v = nxt[0]
    return None


def _block(model: Model, attn: Node) -> Block:
    q, k, v = attn.arg(0), attn.arg(1), attn.arg(2)
    if q.shape is None or len(q.shape) < 3 or not isinstance(q.shape[-3], int):
        raise _Unsupported("Q has no static head axis")
    projs = [p for p in (_projection(u) for u in (q, k, v)) if p is not None]
    if len(projs) != 3 or len({id(p) for p in projs}) != 3:
        raise _Unsupported("Q, K and V do not each come from their own Linear")
    dk = _dims(k)[-1]
    rows_k = _block_weight(projs[1]).shape[0]
    if not isinstance(dk, int) or rows_k % dk:
        raise _Unsupported("K's head size is not static")
    groups = int(np.gcd(int(q.shape[-3]), rows_k // dk))
    traces = []
    for idx, (p, u) in enumerate(zip(projs, (q, k, v))):
        t = _trace(
            model, p.outputs[0], len(_dims(p.outputs[0])) - 1, groups, lambda n, i, idx=idx: n is attn and i == idx
        )
        if [(n is attn, i) for n, i, _ in t.ends] != [(True, idx)]:
            raise _Unsupported(f"projection {p.name} does not reach only its attention input")
        rank = len(_dims(u))
        if t.ends[0][2] >= rank - 2:
            raise _Unsupported("the head axis is one of the attention's last two axes")
        traces.append(t)
    if len(attn.inputs) > 3 and attn.inputs[3] is not None:
        m, a_q = attn.arg(3), traces[0].ends[0][2]
        md, rank = _dims(m), len(_dims(q))
        pm = a_q - (rank - len(md))
        if pm >= 0 and md[pm] != 1:
            raise _Unsupported("the attention mask varies across heads")
    a_out = traces[0].ends[0][2]
    t = _trace(model, attn.outputs[0], a_out, groups, lambda n, i: i == 0 and _linear_weight(n) is not None)
    if not t.ends or any(a != len(_dims(n.arg(0))) - 1 for n, _, a in t.ends):
        raise _Unsupported("the attention output does not reach Linear inputs on their last axis")
    traces.append(t)
    return Block(attn, projs, [n for n, _, _ in t.ends], groups, traces)


def find_blocks(model: Model, explain: list[str] | None = None) -> list[Block]:
    """Every attention block :class:`PruneHeads` can shrink; ``explain`` collects why others were skipped."""
    out = []
    for n in model.graph:
        if n.qualified_op != "edgec::Attention":
            continue
        try:
            out.append(_block(model, n))
        except _Unsupported as e:
            if explain is not None:
                explain.append(f"{n.name}: {e}")
    return out


def _rows(groups: int, total: int, keep: np.ndarray) -> np.ndarray:
    per = total // groups
    return (keep[:, None] * per + np.arange(per)[None, :]).reshape(-1)


@dataclasses.dataclass(frozen=True)
class PruneHeads(Pass):
    name: ClassVar[str] = "prune-heads"
    lossy: ClassVar[bool] = True  # changes the numbers on purpose: --verify judges fidelity
    summary: ClassVar[str] = "structured pruning: remove attention heads (Q/K/V rows, output columns, head counts)"
    sparsity: float = option(
        0.25,
        check=lambda v: 0 <= v < 1,
        allowed="0 <= sparsity < 1",
        help="fraction of each attention's head groups removed",
    )
    score: str = option(
        "magnitude",
        choices=("magnitude", "wanda"),
        help="head ranking (wanda: times the head's output activation norm on calibration data)",
    )
    include: str = option(".*", help="regex on attention node names")
    exclude: str = option("", help="regex on attention node names to leave alone")

    def run(self, model: Model, ctx: PassContext) -> bool:
        skipped: list[str] = []
        blocks = [b for b in find_blocks(model, skipped) if selected(b.attention.name, self.include, self.exclude)]
        if skipped:  # the report says which attentions were left alone and why
            model.report(REPORT_KEY)["skipped"] = skipped
        if not blocks or self.sparsity == 0:
            return False
        if self.score == "wanda" and ctx.calibration is None:
            raise UsageError("prune-heads{score=wanda} needs calibration data: pass --calib")
        act = self._activation_norms(model, blocks, ctx) if self.score == "wanda" else {}
        plan = []
        for b in blocks:
            keep_n = max(1, round(b.groups * (1 - self.sparsity)))
            if keep_n >= b.groups:
                continue
            wv = _block_weight(b.projections[2]).astype(np.float64)
            s = np.sqrt(np.sum(wv.reshape(b.groups, -1) ** 2, 1))
            if len(b.projections[2].inputs) > 2 and b.projections[2].inputs[2] is not None:
                bias = np.asarray(b.projections[2].arg(2).numpy(), np.float64)
                s = np.sqrt(s**2 + np.sum(bias.reshape(b.groups, -1) ** 2, 1))
            for o in b.outputs:
                wo = _block_weight(o).astype(np.float64)
                s = s * np.sqrt(np.sum(wo.reshape(wo.shape[0], b.groups, -1) ** 2, (0, 2)))
            if id(b.attention) in act:
                s = s * act[id(b.attention)]
            plan.append((b, np.sort(np.argsort(-s, kind="stable")[:keep_n])))
        if not plan:
            return False
        self._check_llm(model, plan)
        reports = model.report(REPORT_KEY)
        for b, keep in plan:
            heads = b.heads
            self._shrink(model, b, keep)
            reports[b.attention.name] = {
                "groups_before": b.groups,
                "groups_after": int(len(keep)),
                "heads_before": heads,
                "heads_after": heads * len(keep) // b.groups,
                "kept_groups": keep.tolist(),
                "score": self.score,
            }
        reinfer(model)
        return True

    @staticmethod
    def _check_llm(model: Model, plan) -> None:
        """A language model's configuration states one head count for every layer: prune uniformly (and
        record the new counts) or refuse before anything changes."""
        from ...api.llm import LLM_KEY, LLMConfig

        cfg = LLMConfig.from_model(model)
        if cfg is None:
            return
        after = {b.heads * len(k) // b.groups for b, k in plan}
        attentions = sum(1 for n in model.graph if n.qualified_op == "edgec::Attention")
        if len(plan) != attentions or len(after) != 1:
            raise UsageError(
                "prune-heads: this language model states one head count for all its layers (its "
                "GGUF/llama.cpp form cannot vary it); prune every layer alike (no include=/exclude=)"
            )
        b, keep = plan[0]
        model.metadata[LLM_KEY] = dataclasses.replace(
            cfg, heads=after.pop(), kv_heads=cfg.kv_heads * len(keep) // b.groups
        ).to_json()

    def _shrink(self, model: Model, b: Block, keep: np.ndarray) -> None:
        G = b.groups
        for p in b.projections:
            w = _block_weight(p)
            rows = _rows(G, w.shape[0], keep)
            replace_const(model, p, 1, w[rows])
            if len(p.inputs) > 2 and p.inputs[2] is not None:
                replace_const(model, p, 2, np.asarray(p.arg(2).numpy())[rows])
        for o in b.outputs:
            w = _block_weight(o)
            replace_const(model, o, 1, w[:, _rows(G, w.shape[1], keep)])
        for t in b.traces:
            for n, axis, size in t.reshapes:
                shape = np.asarray(n.arg(1).numpy()).copy()
                shape[axis] = size // G * len(keep)
                replace_const(model, n, 1, shape, "_pruned")
            for n, i, axis, size in t.slices:
                arr = np.asarray(n.arg(i).numpy())
                replace_const(model, n, i, np.take(arr, _rows(G, size, keep), axis=axis))

    @staticmethod
    def _activation_norms(model: Model, blocks: list[Block], ctx: PassContext) -> dict[int, np.ndarray]:
        """Per block, the norm of each head group's share of the output projection's input."""
        from ...ir import ReferenceExecutor

        names = sorted({o.arg(0).name for b in blocks for o in b.outputs})
        ex = ReferenceExecutor(model, capture=names, capture_only=True)
        acc: dict[str, np.ndarray] = {}
        for s in ctx.calibration.samples[:16]:
            res = ex.run(s)
            for nm in names:
                a = np.asarray(res[nm], np.float64)
                acc[nm] = acc.get(nm, 0) + np.sum(a.reshape(-1, a.shape[-1]) ** 2, 0)
        out = {}
        for b in blocks:
            cols = acc[b.outputs[0].arg(0).name]
            out[id(b.attention)] = np.sqrt(cols.reshape(b.groups, -1).sum(1))
        return out
