"""fuse-attention: ``Softmax(Q @ K^T * scale + mask) @ V`` as exported by torch becomes
``edgec::Attention(Q, K, V, mask)`` with K in ``[..., S, D]`` layout."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ...ir import Model, Node, Value
from ...ir.passes import Pass, PassContext
from ._match import fuse, other_input, producer, scalar, sole_user


@dataclasses.dataclass(frozen=True)
class FuseAttention(Pass):
    name: ClassVar[str] = "fuse-attention"
    summary: ClassVar[str] = "scaled dot-product attention subgraphs -> edgec::Attention"

    def run(self, model: Model, ctx: PassContext) -> bool:
        g = model.graph
        changed = False
        for sm in g:
            if sm.graph is not g or sm.op_type != "Softmax" or sm.domain:
                continue
            s_in = sm.arg(0)
            if s_in.rank is None or sm.attr("axis", -1) not in (-1, s_in.rank - 1):
                continue
            out_mm = sole_user(sm.output, "MatMul")
            if out_mm is None or out_mm.inputs[0] is not sm.output:
                continue
            v = out_mm.inputs[1]
            chain: list[Node] = [out_mm, sm]
            cur: Value | None
            cur, mask, scale = s_in, None, 1.0
            add = producer(cur, "Add")
            if add is not None and sole_user(cur) is sm:
                for cand in add.inputs:
                    if cand is None:
                        continue
                    p = cand.producer
                    if p is not None and not p.domain and p.op_type in ("Mul", "Div", "MatMul"):
                        mask, cur = other_input(add, cand), cand
                        chain.append(add)
                        break
            sc = cur.producer
            if sc is not None and not sc.domain and sc.op_type in ("Mul", "Div") and sole_user(cur) is not None:
                for k_in in sc.inputs:
                    val = scalar(k_in)
                    if val is not None and val != 0:
                        other = other_input(sc, k_in)
                        if sc.op_type == "Div" and k_in is not sc.inputs[1]:
                            continue
                        scale = val if sc.op_type == "Mul" else 1.0 / val
                        cur = other
                        chain.append(sc)
                        break
            qk = producer(cur, "MatMul")
            if qk is None or cur is None or sole_user(cur) is None:
                continue
            chain.append(qk)
            q, _ = qk.inputs
            kt = qk.arg(1)
            r = kt.rank
            if r is None or r < 2:
                continue
            # K^T -> K: compose with the transpose that made K^T, or add one.
            tp = producer(kt, "Transpose")
            if tp is not None and sole_user(kt) is qk:
                perm = list(tp.attr("perm"))
                perm[-1], perm[-2] = perm[-2], perm[-1]
                src = tp.arg(0)
                chain.append(tp)
            else:
                perm = list(range(r))
                perm[-1], perm[-2] = perm[-2], perm[-1]
                src = kt
            if perm == list(range(r)):
                k = src
            else:
                t = Node("Transpose", [src], {"perm": perm}, name=g.unique_name("attn_k"), outputs=1)
                g.insert_before(qk, t)
                t.output.dtype = src.dtype
                if src.shape is not None:
                    t.output.shape = tuple(src.shape[p] for p in perm)
                k = t.output
            ins = [q, k, v] + ([mask] if mask is not None else [])
            att = Node(
                "Attention", ins, {"scale": float(scale)}, domain="edgec", name=g.unique_name("attention"), outputs=1
            )
            fuse(g, out_mm.output, att, chain)
            changed = True
        if changed:
            model.opset_imports.setdefault("edgec", 1)
        return changed
