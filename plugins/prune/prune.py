"""prune: magnitude, Wanda or SparseGPT pruning, unstructured (per layer or global) or N:M.

``method=wanda`` (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs") scores each weight by
``|w| x ||x_k||`` (its magnitude times the norm of its input channel over the calibration data) and prunes
the lowest scores of every output row (or of every N:M block): no retraining, no weight update.

``method=sparsegpt`` (Frantar & Alistarh 2023) picks the mask block by block from ``w^2 / [H^-1]_jj^2`` and
updates the weights not pruned through the inverse Hessian ``(X^T X)^-1`` (GPTQ's machinery), so the layer's
output on the calibration data moves least; each output row reaches the target sparsity in every block of
128 columns.

Pruned weights are set to exactly zero and the weight's value carries a :class:`~edgec.ir.Sparsity`
annotation (the ratio reached, and ``n``/``m`` for N:M patterns), so a later ``quantize`` keeps the zeros and
targets that can store sparsity (Core ML's ``constexpr_sparse_to_dense``, TensorRT's 2:4) do; the others
store the zeros densely. N:M groups run along the input axis (axis 1: a Linear's K, a Conv's input channels).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...api.capture import Stream
from ...api.layers import find_layers, layer_rows
from ...errors import UsageError
from ...ir import Model, Sparsity, Tensor
from ...ir.passes import Pass, PassContext, option

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


def nm_mask(w: np.ndarray, n: int, m: int, score: np.ndarray | None = None) -> np.ndarray:
    """Keep the ``n`` highest-scoring (default: largest-magnitude) weights of every ``m`` consecutive ones
    along axis 1."""
    moved = np.moveaxis(np.abs(w) if score is None else score, 1, -1)
    blocks = moved.reshape(-1, m)
    # Stable order: ties keep the earlier element, so the mask is deterministic.
    order = np.argsort(-blocks, axis=1, kind="stable")
    keep = np.zeros_like(blocks, dtype=bool)
    np.put_along_axis(keep, order[:, :n], True, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, 1)


def row_mask(score: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the highest ``1 - sparsity`` of the scores of every output row (axis 0); each row prunes at
    least its share (rounded up), so the layer reaches the target."""
    s2 = score.reshape(score.shape[0], -1)
    k = min(int(np.ceil(sparsity * s2.shape[1] - 1e-9)), s2.shape[1])
    keep = np.ones(s2.shape, bool)
    if k:
        idx = np.argsort(s2, axis=1, kind="stable")[:, :k]
        np.put_along_axis(keep, idx, False, axis=1)
    return keep.reshape(score.shape)


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


def sparsegpt(
    w2: np.ndarray,
    h: np.ndarray,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    damp: float = 0.01,
    block: int = 128,
    scale: np.ndarray | None = None,
    qmax: int = 127,
) -> np.ndarray:
    """SparseGPT (Frantar & Alistarh 2023): prune ``w2 [out, K]`` to ``sparsity`` (or an N:M pattern along K)
    one column block at a time, choosing the mask in each block by ``w^2 / [H^-1]_jj^2`` and updating the
    remaining weights through the inverse Hessian so the layer's output on the calibration data changes
    least. ``h`` is ``X^T X`` [K, K]. Returns the pruned weights (exact zeros where pruned), float32.

    With ``scale`` (float32 ``[out]``), the kept weights are also quantized in the same sweep (the paper's
    joint mode): each column is rounded to ``clip(round(w / scale), -qmax, qmax) * scale`` before its error
    (pruning and rounding together) is propagated, so later columns compensate both."""
    from scipy.linalg import lapack

    out, k = w2.shape
    w = np.array(w2, np.float64)
    h = np.array(h, np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    c, info = lapack.dpotrf(h, lower=False)
    if info == 0:
        c, info = lapack.dpotri(c, lower=False)
    if info == 0:
        c = np.triu(c) + np.triu(c, 1).T
        c, info = lapack.dpotrf(c, lower=False)
    if info != 0:
        raise np.linalg.LinAlgError("the layer's Hessian is not positive definite after dampening; raise damp")
    hinv = np.triu(c)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb = w[:, b0:b1].copy()
        hb = hinv[b0:b1, b0:b1]
        err = np.zeros_like(wb)
        d = np.diag(hb)
        if nm is None:
            score = wb**2 / d[None, :] ** 2
            n_prune = int(round(sparsity * wb.shape[1]))
            prune = np.zeros_like(wb, dtype=bool)
            if n_prune:
                idx = np.argsort(score, axis=1, kind="stable")[:, :n_prune]
                np.put_along_axis(prune, idx, True, axis=1)
        else:
            prune = np.zeros_like(wb, dtype=bool)
        for i in range(b1 - b0):
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                s = wb[:, i : i + m] ** 2 / d[None, i : i + m] ** 2  # from the weights as updated so far
                idx = np.argsort(s, axis=1, kind="stable")[:, : m - n]
                np.put_along_axis(prune[:, i : i + m], idx, True, axis=1)
            col = wb[:, i]
            if scale is not None:
                sc = scale.astype(np.float64)
                r = np.clip(np.round(col.astype(np.float32).astype(np.float64) / sc), -qmax, qmax) * sc
                q = np.where(prune[:, i], 0.0, r)
            else:
                q = np.where(prune[:, i], 0.0, col)
            e = (col - q) / hb[i, i]
            wb[:, i:] -= np.outer(e, hb[i, i:])
            wb[:, i] = q
            err[:, i] = e
        w[:, b0:b1] = wb
        w[:, b1:] -= err @ hinv[b0:b1, b1:]
    return w.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Prune(Pass):
    """Magnitude pruning. See ``edgec passes`` for the options."""

    name: ClassVar[str] = "prune"
    lossy: ClassVar[bool] = True  # changes the numbers on purpose: --verify judges fidelity
    summary: ClassVar[str] = "magnitude, Wanda or SparseGPT pruning: unstructured (per layer, global, per row) or N:M"
    method: str = option(
        "magnitude",
        choices=("magnitude", "wanda", "sparsegpt"),
        help="magnitude: |w|; wanda: "
        "|w| x input channel norm, per output row; sparsegpt: Hessian-based mask and weight update "
        "(both need calibration data)",
    )
    damp: float = option(0.01, check=lambda v: 0 < v < 1, allowed="0 < damp < 1", help="sparsegpt Hessian dampening")
    sparsity: float = option(
        0.5,
        check=lambda v: 0 <= v < 1,
        allowed="0 <= sparsity < 1",
        help="fraction of weights set to zero (unstructured)",
    )
    pattern: str = option("", help="N:M pattern along the input axis, e.g. 2:4 (overrides sparsity)")
    scope: str = option(
        "layer",
        choices=("layer", "global"),
        help="unstructured: one threshold per layer or one across all selected layers",
    )
    ops: str = option("Linear:Conv", help="op types to prune, ':'-separated (Linear, Conv)")
    include: str = option(".*", help="regex on weight or node names to prune")
    exclude: str = option("", help="regex on weight or node names to leave alone")
    head: bool = option(False, help="also prune the output head Linear")
    bits: int = option(
        0,
        choices=(0, *range(2, 9)),
        help="method=sparsegpt: also quantize the kept weights in "
        "the same sweep (symmetric, per output channel; 0: prune only)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _pattern(self.pattern)
        bad = set(self.ops.split(":")) - {"Linear", "Conv"}
        if bad:
            raise UsageError(f"prune: ops={self.ops!r} names {sorted(bad)}; allowed: Linear, Conv")
        if self.bits and self.method != "sparsegpt":
            raise UsageError(
                "prune: bits= (joint quantization) needs method=sparsegpt; otherwise run quantize after prune"
            )
        if self.method in ("wanda", "sparsegpt") and self.scope == "global":
            raise UsageError(f"prune: method={self.method} compares weights within each output row; drop scope=global")

    def run(self, model: Model, ctx: PassContext) -> bool:
        op_names = tuple({"Linear": "edgec::Linear", "Conv": "Conv"}[o] for o in self.ops.split(":"))
        layers = [
            l
            for l in find_layers(model, op_names, self.include, self.exclude)
            if l.role == "body" or (l.role == "head" and self.head)
        ]
        nm = _pattern(self.pattern)
        if not layers or (nm is None and self.sparsity == 0):
            return False
        norms: dict[int, np.ndarray] = {}
        hessians: dict[int, np.ndarray] = {}
        if self.method in ("wanda", "sparsegpt"):
            if ctx.calibration is None:
                raise UsageError(
                    f"prune{{method={self.method}}} needs calibration data: pass --calib (a .npz, a "
                    "folder of samples, or 'random' for a smoke test)"
                )
            stream = Stream(model, ctx.calibration.samples[:32])
            for layer in layers:
                acc = None
                for x in stream.capture(layer.node.arg(0)):
                    rows = layer_rows(layer, np.asarray(x, np.float32))
                    if rows is None:
                        break
                    part = (
                        rows.T @ rows
                        if self.method == "sparsegpt"
                        else np.einsum("ij,ij->j", rows, rows, dtype=np.float64)
                    )
                    acc = part if acc is None else acc + part
                else:
                    assert acc is not None  # the stream holds at least one sample
                    if self.method == "sparsegpt":
                        hessians[id(layer.node)] = acc
                    else:
                        norms[id(layer.node)] = np.sqrt(acc)
        threshold = None
        if nm is None and self.scope == "global":
            mags = np.concatenate([np.abs(np.asarray(l.weight.numpy(), np.float32)).reshape(-1) for l in layers])
            k = int(round(self.sparsity * mags.size))
            threshold = float(np.partition(mags, k - 1)[k - 1]) if k else -1.0
            del mags
        reports = model.report(REPORT_KEY)
        g = model.graph
        for layer in layers:
            w = np.asarray(layer.weight.numpy(), np.float32)
            method = "wanda" if id(layer.node) in norms else "magnitude"
            if id(layer.node) in hessians:
                method = "sparsegpt"
                if nm is not None and (
                    w.ndim < 2 or int(np.prod(w.shape[1:])) % nm[1] or (w.ndim > 2 and np.prod(w.shape[2:]) != 1)
                ):
                    reports[layer.weight.name] = {
                        "node": layer.node.name,
                        "skipped": "sparsegpt N:M needs the "
                        "input axis to be the weight's flattened K (Linear, 1x1 Conv)",
                    }
                    continue
                qscale = None
                if self.bits:
                    qmax = 2 ** (self.bits - 1) - 1
                    amax = np.abs(w.reshape(w.shape[0], -1)).max(1)
                    qscale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
                pruned = sparsegpt(
                    w.reshape(w.shape[0], -1),
                    hessians.pop(id(layer.node)),
                    self.sparsity,
                    nm,
                    self.damp,
                    scale=qscale,
                    qmax=2 ** (self.bits - 1) - 1 if self.bits else 127,
                ).reshape(w.shape)
                keep = pruned != 0
                w = pruned
                if qscale is not None:
                    self._joint(model, layer, w, qscale, nm, reports)
                    continue
            elif nm is not None:
                if w.ndim < 2 or w.shape[1] % nm[1]:
                    reports[layer.weight.name] = {
                        "node": layer.node.name,
                        "skipped": f"input axis extent {w.shape[1] if w.ndim > 1 else 1} is not a multiple of {nm[1]}",
                    }
                    continue
                keep = nm_mask(w, *nm, score=self._score(w, norms.get(id(layer.node))))
            elif id(layer.node) in norms:
                score = self._score(w, norms[id(layer.node)])
                assert score is not None  # given a norm, _score scores
                keep = row_mask(score, self.sparsity)
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
            reports[new.name] = {
                "node": layer.node.name,
                "sparsity": round(ratio, 6),
                "method": method,
                **({"pattern": self.pattern} if nm else {"scope": self.scope}),
            }
            if self.method != "magnitude" and method == "magnitude":
                reports[new.name]["note"] = "input not expressible as rows (grouped conv): magnitude used"
        return True

    def _joint(self, model: Model, layer, w: np.ndarray, scale: np.ndarray, nm, reports: dict) -> None:
        """Store a jointly pruned and quantized weight as a QuantizedTensor (code 0 = exact zero)."""
        from ...ir import QuantizedTensor

        shape = (w.shape[0],) + (1,) * (w.ndim - 1)
        s = scale.reshape(shape)
        codes = np.round(w.astype(np.float64) / s).astype(np.int8)
        q = QuantizedTensor(
            codes=codes, bits=self.bits, scheme="symmetric", scales=s.astype(np.float32), axis=0, method="sparsegpt"
        )
        if q.validate() or not np.array_equal(q.dequantize(), w):
            raise RuntimeError(f"internal: joint sparsegpt result of {layer.weight.name} is off its grid")
        g = model.graph
        ratio = float(1.0 - np.count_nonzero(codes) / codes.size)
        new = g.add_const(g.unique_name(layer.weight.name + "_pruned_q"), q)
        new.sparsity = Sparsity(n=nm[0] if nm else None, m=nm[1] if nm else None, axis=1, ratio=round(ratio, 6))
        for u in list(layer.weight.uses):
            u.node.replace_input_with(u.index, new)
        if not layer.weight.uses:
            g.remove_const(layer.weight.name)
        reports[new.name] = {
            "node": layer.node.name,
            "sparsity": round(ratio, 6),
            "method": "sparsegpt",
            "bits": self.bits,
            **({"pattern": self.pattern} if nm else {"scope": self.scope}),
        }

    @staticmethod
    def _score(w: np.ndarray, norm: np.ndarray | None) -> np.ndarray | None:
        """Wanda's |w| x ||x_k|| over the flattened input axis (None: plain magnitude)."""
        if norm is None:
            return None
        return (np.abs(w).reshape(w.shape[0], -1) * norm[None, :].astype(np.float32)).reshape(w.shape)
