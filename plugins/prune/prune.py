"""prune: magnitude pruning, unstructured (per layer or global) or N:M.

Pruned weights are set to exactly zero and the weight's value carries a :class:`~edgec.ir.Sparsity`
annotation (the ratio reached, and ``n``/``m`` for N:M patterns), so a later ``quantize`` keeps the zeros and
targets that can store sparsity (Core ML's ``constexpr_sparse_to_dense``, TensorRT's 2:4) do; the others
store the zeros densely. N:M groups run along the input axis (axis 1: a Linear's K, a Conv's input channels).
"""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import numpy as np

from ...errors import UsageError
from ...ir import Model, Sparsity, Tensor
from ...ir.passes import Pass, PassContext, option
from ..quantize.quantize import find_layers

REPORT_KEY = "edgec.prune"


def _pattern(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        n, m = (int(t) for t in text.split(":"))
    except ValueError:
        raise UsageError(f"prune: pattern={text!r} is not N:M (e.g. 2:4)") from None
    if not 0 < n < m:
        raise UsageError(f"prune: pattern={text!r} needs 0 < N < M")
    return n, m


def nm_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` largest-magnitude weights of every ``m`` consecutive ones along axis 1."""
    moved = np.moveaxis(np.abs(w), 1, -1)
    blocks = moved.reshape(-1, m)
    # Stable order: ties keep the earlier element, so the mask is deterministic.
    order = np.argsort(-blocks, axis=1, kind="stable")
    keep = np.zeros_like(blocks, dtype=bool)
    np.put_along_axis(keep, order[:, :n], True, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, 1)


def magnitude_mask(w: np.ndarray, sparsity: float, threshold: float | None = None) -> np.ndarray:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights (or those at or under ``threshold``)."""
    a = np.abs(w)
    if threshold is None:
        k = int(round(sparsity * a.size))
        if k == 0:
            return np.ones(a.shape, bool)
        flat = a.reshape(-1)
        idx = np.argsort(flat, kind="stable")[:k]
        keep = np.ones(a.size, bool)
        keep[idx] = False
        return keep.reshape(a.shape)
    return a > threshold


@dataclasses.dataclass(frozen=True)
class Prune(Pass):
    """Magnitude pruning. See ``edgec passes`` for the options."""

    name: ClassVar[str] = "prune"
    summary: ClassVar[str] = "magnitude pruning: unstructured (layer or global scope) or N:M (2:4, 4:8)"
    sparsity: float = option(0.5, check=lambda v: 0 <= v < 1, allowed="0 <= sparsity < 1",
                             help="fraction of weights set to zero (unstructured)")
    pattern: str = option("", help="N:M pattern along the input axis, e.g. 2:4 (overrides sparsity)")
    scope: str = option("layer", choices=("layer", "global"), help="unstructured: one threshold per layer or "
                        "one across all selected layers")
    ops: str = option("Linear:Conv", help="op types to prune, ':'-separated (Linear, Conv)")
    include: str = option(".*", help="regex on weight or node names to prune")
    exclude: str = option("", help="regex on weight or node names to leave alone")
    head: bool = option(False, help="also prune the output head Linear")

    def __post_init__(self) -> None:
        super().__post_init__()
        _pattern(self.pattern)
        bad = set(self.ops.split(":")) - {"Linear", "Conv"}
        if bad:
            raise UsageError(f"prune: ops={self.ops!r} names {sorted(bad)}; allowed: Linear, Conv")

    def run(self, model: Model, ctx: PassContext) -> bool:
        op_names = tuple({"Linear": "edgec::Linear", "Conv": "Conv"}[o] for o in self.ops.split(":"))
        layers = [l for l in find_layers(model, op_names, self.include, self.exclude)
                  if l.role == "body" or (l.role == "head" and self.head)]
        nm = _pattern(self.pattern)
        if not layers or (nm is None and self.sparsity == 0):
            return False
        threshold = None
        if nm is None and self.scope == "global":
            mags = np.concatenate([np.abs(np.asarray(l.weight.numpy(), np.float32)).reshape(-1) for l in layers])
            k = int(round(self.sparsity * mags.size))
            threshold = float(np.partition(mags, k - 1)[k - 1]) if k else -1.0
            del mags
        reports = json.loads(model.metadata.get(REPORT_KEY, "{}"))
        g = model.graph
        for layer in layers:
            w = np.asarray(layer.weight.numpy(), np.float32)
            if nm is not None:
                if w.ndim < 2 or w.shape[1] % nm[1]:
                    reports[layer.weight.name] = {"node": layer.node.name, "skipped":
                                                  f"input axis extent {w.shape[1] if w.ndim > 1 else 1} is not a "
                                                  f"multiple of {nm[1]}"}
                    continue
                keep = nm_mask(w, *nm)
            else:
                keep = magnitude_mask(w, self.sparsity, threshold)
            pruned = np.where(keep, w, np.float32(0)).astype(w.dtype)
            ratio = float(1.0 - np.count_nonzero(pruned) / pruned.size)
            new = g.add_const(g.unique_name(layer.weight.name + "_pruned"), Tensor(pruned))
            new.sparsity = Sparsity(n=nm[0] if nm else None, m=nm[1] if nm else None, axis=1, ratio=round(ratio, 6))
            for u in list(layer.weight.uses):
                u.node.replace_input_with(u.index, new)
            if not layer.weight.uses:
                g.remove_const(layer.weight.name)
            reports[new.name] = {"node": layer.node.name, "sparsity": round(ratio, 6),
                                 **({"pattern": self.pattern} if nm else {"scope": self.scope})}
        model.metadata[REPORT_KEY] = json.dumps(reports, sort_keys=True)
        return True
