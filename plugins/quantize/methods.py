"""Weight quantization methods on a 2-D weight ``W [out, K]`` (conv weights flattened).

Each method returns ``(codes_grouped, scale, zero_point)`` on a :class:`GridSpec`, or for codebook
methods a ready :class:`QuantizedTensor`. ``H = X^T X`` (``[K, K]``, from calibration inputs) is given
to the methods that use activations.

* ``rtn``: round to nearest on the min/max grid.
* ``mse``: per channel/group clipping ratio minimising the weight reconstruction error, or, with
  ``H``, the layer's output error ``(w - q) H (w - q)^T`` (SeqMSE-style).
* ``gptq``: Frantar et al. 2022: columns quantized in order (optionally by decreasing ``diag(H)``), the
  error of each compensated on the not-yet-quantized columns through the inverse Hessian's Cholesky
  factor, with lazy block updates. Group parameters are fixed up front from the original weights
  ("static groups") so groups stay contiguous and the grid is explicit.
* ``nf4`` / ``codebook``: 4-bit NormalFloat levels with absmax scales per group; k-means palettes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from ...ir import QuantizedTensor
from ...ir.schemes import SCHEMES
from ...ir.tensor import release_pages
from .grid import GridSpec, dequantize_codes, grouped, make_tensor, params, quantize_codes

CLIP_GRID = np.linspace(1.0, 0.5, 26, dtype=np.float32)  # candidate clipping ratios, 1.0 first


def rtn(
    w2: np.ndarray, spec: GridSpec, h: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    wg = grouped(w2, spec)
    scale, zp = params(wg, spec)
    return quantize_codes(wg, scale, zp, spec), scale, zp


def mse(
    w2: np.ndarray, spec: GridSpec, h: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Best clipping ratio per block; with ``h`` the error is measured on the layer output."""
    wg = grouped(w2, spec).astype(np.float32)
    best_err = np.full(wg.shape[:2], np.inf)
    best: list[Any] | None = None  # [codes, scale, zero point or None]
    for r in CLIP_GRID:
        scale, zp = params(wg, spec, clip=r)
        q = quantize_codes(wg, scale, zp, spec)
        d = dequantize_codes(q, scale, zp) - wg
        if h is None or spec.granularity == "tensor":
            err = (d.astype(np.float64) ** 2).sum(-1)
        else:
            # Output error per block: d_block H_block d_block^T, H restricted to the block's columns.
            rows, g, gs = d.shape
            hb = np.stack([h[j * gs : (j + 1) * gs, j * gs : (j + 1) * gs] for j in range(g)])  # [G, gs, gs]
            err = np.einsum("rgi,gij,rgj->rg", d.astype(np.float64), hb, d.astype(np.float64))
        better = err < best_err
        if best is None:
            best = [q.copy(), scale.copy(), None if zp is None else zp.copy()]
        else:
            best[0][better] = q[better]
            best[1][better] = scale[better]
            if zp is not None:
                best[2][better] = zp[better]
        best_err = np.where(better, err, best_err)
    assert best is not None  # CLIP_GRID is not empty
    return best[0], best[1], best[2]


def gptq(
    w2: np.ndarray,
    spec: GridSpec | None,
    h: np.ndarray,
    *,
    damp: float = 0.01,
    act_order: bool = True,
    block: int = 128,
    perm: np.ndarray | None = None,
    grid=None,
):
    """GPTQ with lazy block updates; returns codes/scales/zero points on the static-group grid.

    ``h`` is ``X^T X`` (float32). When ``perm`` is given, ``h`` is already in that column order and is
    consumed (factored in place): the caller must not use it afterwards. Memory: one K x K float32 buffer.

    With ``grid`` (a fitted :class:`edgec.api.gguf.Grid`, e.g. a GGUF block format) columns are quantized on
    that grid instead of ``spec``'s, and the codes ``[out, K]`` are returned alone.
    """
    from scipy.linalg.blas import dger

    if h is None:
        raise ValueError("gptq needs calibration data (the layer's input Hessian)")
    spec = cast(GridSpec, spec)  # None only with grid, whose path never reads spec
    out, k = w2.shape
    if perm is None:
        perm = hessian_order(np.diag(h), act_order)
        h = np.ascontiguousarray(h[np.ix_(perm, perm)], dtype=np.float32)
    # The one float32 working copy (columns permuted), as the reference implementation, filled a slice of
    # rows at a time so a memory-mapped original never stays resident beside it. Memory beyond H: this
    # copy, the 8-bit codes and update temporaries of at most out x 1024.
    w = np.empty((out, k), np.float32)
    per_rows = grid is None and spec.granularity != "tensor"
    parts = []
    for r in range(0, out, 256):
        rows = np.asarray(w2[r : r + 256], np.float32)
        if per_rows:  # grid parameters from the original weights, per contiguous group (static groups)
            parts.append(params(grouped(rows, spec), spec))
        w[r : r + 256] = rows[:, perm]
        del rows
        release_pages(w2[r : r + 256])
    if grid is None:
        if per_rows:
            scale = np.concatenate([p[0] for p in parts])
            zp = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
        else:
            scale, zp = params(grouped(np.asarray(w2, np.float32), spec), spec)
        g = spec.groups(k)
        gs = k // g if spec.granularity != "tensor" else k
    else:
        scale, zp, gs = np.ones((1, 1), np.float32), None, k
    inv = np.argsort(perm)
    hinv, dead = inverse_hessian_factor(h, damp, "quantize{method=gptq,damp=0.1}")
    w[:, dead] = 0.0  # upper triangle valid; the strictly lower triangle is never read below
    symmetric = SCHEMES[grid.t.scheme].signed if grid is not None else spec.symmetric
    codes = np.zeros((out, k), np.int8 if symmetric else np.uint8)
    col_group = perm // gs  # original group of each permuted column
    sc = scale.astype(np.float64)
    zc = None if zp is None else zp.astype(np.float64)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        # Fortran order: the columns from i on are one contiguous block, updated in place by BLAS ger.
        w_blk = np.asfortranarray(w[:, b0:b1], dtype=np.float64)
        err = np.zeros_like(w_blk)
        hb = np.triu(hinv[b0:b1, b0:b1]).astype(np.float64)
        for i in range(b1 - b0):
            j = b0 + i
            col = w_blk[:, i]
            if grid is not None:
                oc = slice(int(perm[j]), int(perm[j]) + 1)
                qc = grid.quantize(col.astype(np.float32)[:, None], oc)
                codes[:, j] = qc[:, 0]
                deq = grid.dequantize(qc, oc)[:, 0].astype(np.float64)
                e = (col - deq) / hb[i, i]
                dger(-1.0, e, hb[i, i:], a=w_blk[:, i:], overwrite_a=True)
                err[:, i] = e
                continue
            grp = 0 if spec.granularity == "tensor" else col_group[j]
            s = sc[:, grp] if sc.shape[0] > 1 else np.full(out, sc[0, grp])
            z = None if zc is None else (zc[:, grp] if zc.shape[0] > 1 else np.full(out, zc[0, grp]))
            q = np.round(col.astype(np.float32).astype(np.float64) / s) + (z if z is not None else 0)
            q = np.clip(q, spec.qmin, spec.qmax)
            codes[:, j] = q
            deq = (q - (z if z is not None else 0)) * s
            e = (col - deq) / hb[i, i]
            dger(-1.0, e, hb[i, i:], a=w_blk[:, i:], overwrite_a=True)  # w_blk[:, i:] -= e hb[i, i:]
            err[:, i] = e
        e32 = err.astype(np.float32)
        for c0 in range(b1, k, 1024):  # lazy update of the later columns, in slices (small temporaries)
            c1 = min(c0 + 1024, k)
            w[:, c0:c1] -= e32 @ hinv[b0:b1, c0:c1]
    del w
    codes = codes[:, inv]
    if grid is not None:
        return codes
    return codes.reshape(grouped(codes, spec).shape), scale, zp


_CONTROLLER: Any = None


def one_blas_thread() -> Any:
    """A context in which BLAS / LAPACK run on one thread. OpenBLAS's threaded Cholesky (potrf, potri) splits its
    work by the thread count, so its rounding depends on it; on one thread the factor, and so every weight GPTQ
    derives from it, is the same bits in this process and in a worker of any size (``--workers``, Ray). Its
    matrix products do not depend on the thread count (tested) and keep every thread."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()  # after scipy.linalg's import: sees both OpenBLAS copies
    return _CONTROLLER.limit(limits=1, user_api="blas")


def inverse_hessian_factor(h: np.ndarray, damp: float, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ's ``U``: the upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``, computed in place in
    ``h``'s precision (float32 or float64). Dead inputs (zero diagonal) get 1 on the diagonal first; their mask
    is returned with the factor, whose strictly lower triangle is left as garbage (never read by GPTQ; take
    ``np.triu`` to use it as a matrix). ``fix`` names the option to raise when H is not positive definite."""
    from scipy.linalg import lapack

    k = h.shape[0]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    # potrf(H) -> potri (H^-1) -> potrf(H^-1). H is symmetric, so a C-ordered buffer read as Fortran (h.T, no
    # copy) is the same matrix, and LAPACK with uplo=U only reads and writes the upper triangle: no
    # symmetrising copies.
    a = h if h.flags.f_contiguous else h.T  # the same symmetric matrix, Fortran-ordered without a copy
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (a,))
    with one_blas_thread():
        c, info = potrf(a, lower=False, overwrite_a=True)
        if info == 0:
            c, info = potri(c, lower=False, overwrite_c=True)
        if info == 0:
            c, info = potrf(c, lower=False, overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(
            f"the layer's Hessian is not positive definite after dampening (damp={damp}); raise it, e.g. {fix}"
        )
    return c, dead


def hessian_order(diag: np.ndarray, act_order: bool) -> np.ndarray:
    """Column order for GPTQ: decreasing activation energy with act_order, else the natural order."""
    return np.argsort(-diag, kind="stable") if act_order else np.arange(diag.size)


# ------------------------------------------------------------------------------------------------ codebooks
# The 16 NormalFloat-4 levels (Dettmers et al. 2023, QLoRA), as in bitsandbytes.
NF4_LEVELS = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=np.float32,
)


def nf4(w2: np.ndarray, group_size: int, shape: tuple[int, ...], f16: bool = False) -> QuantizedTensor:
    """NF4 codes with absmax scales per group of ``group_size`` along K (2-D weights). ``f16``: the levels and
    the scales are float16 values, so ``level * scale`` is rounded once when computed in float16 (Core ML)."""
    out, k = w2.shape
    g = k // group_size
    wg = w2.reshape(out, g, group_size).astype(np.float32)
    absmax = np.abs(wg).max(-1)
    absmax = np.where(absmax > 0, absmax, 1.0).astype(np.float32)
    levels = NF4_LEVELS.copy()
    if f16:
        levels = levels.astype(np.float16).astype(np.float32)
        absmax = np.clip(absmax, 2.0**-14, 65504.0).astype(np.float16).astype(np.float32)
    normed = wg / absmax[..., None]
    codes = np.abs(normed[..., None] - levels).argmin(-1).astype(np.uint8)
    return QuantizedTensor(
        codes=codes.reshape(shape),
        bits=4,
        scheme="codebook",
        codebook=levels,
        scales=absmax.reshape(out, g),
        axis=0,
        group_size=group_size,
        group_axis=1,
        method="nf4",
    )


def kmeans_1d(x: np.ndarray, n: int, sw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimal 1-D k-means, optionally weighted per element (``sw``: importance, e.g. the input channel's
    activation energy): the exact minimum-error clustering of the weighted histogram of the values rounded
    to float16 (at most a few ten thousand distinct values however large the tensor; the same clustering
    coremltools computes for its palettes), by :func:`optimal_1d`. Returns (centroids sorted, labels of the
    nearest float32 centroid)."""
    x = np.asarray(x, np.float32).ravel()
    h = np.clip(x, -65504, 65504).astype(np.float16)
    if sw is None:
        vals, cnt = np.unique(h, return_counts=True)
        cnt = cnt.astype(np.float64)
    else:
        vals, inv = np.unique(h, return_inverse=True)
        cnt = np.bincount(inv.ravel(), weights=np.asarray(sw, np.float64).ravel(), minlength=vals.size)
        vals, cnt = vals[cnt > 0], cnt[cnt > 0]
    n = min(n, max(1, vals.size))
    cent = np.sort(optimal_1d(vals.astype(np.float64), cnt, n)).astype(np.float32)
    return cent, np.searchsorted((cent[1:] + cent[:-1]) / 2, x).astype(np.uint8)


def optimal_1d(v: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """Weighted optimal 1-D k-means of the sorted distinct values ``v`` with weights ``w > 0``: the exact
    minimum-error partition into ``n`` runs by dynamic programming (Wang & Song's Ckmeans.1d.dp), each layer
    solved with the divide-and-conquer optimisation (the best split point is monotone in the end point),
    all subproblems of one recursion depth at once. O(n m log m). Returns the centroids, ascending."""
    m = v.size
    if n >= m:
        return v.astype(np.float64)
    p = np.concatenate([[0.0], np.cumsum(w)])
    s1 = np.concatenate([[0.0], np.cumsum(w * v)])
    s2 = np.concatenate([[0.0], np.cumsum(w * v * v)])

    def cost(a, b):  # error of one cluster holding items a .. b-1
        ww, s = p[b] - p[a], s1[b] - s1[a]
        return np.maximum(s2[b] - s2[a] - s * s / np.where(ww > 0, ww, 1.0), 0.0)

    d = cost(np.zeros(m + 1, np.int64), np.arange(m + 1))
    splits = []
    for t in range(1, n):
        dn = np.full(m + 1, np.inf)
        arg = np.zeros(m + 1, np.int64)
        lo, hi = np.array([t]), np.array([m])  # end points still to solve
        olo, ohi = np.array([t - 1]), np.array([m - 1])  # the range their best split lies in
        while lo.size:
            mid = (lo + hi) // 2
            top = np.minimum(mid - 1, ohi)
            cnt = top - olo + 1
            ok = cnt > 0
            lo, hi, olo, ohi, mid, cnt = lo[ok], hi[ok], olo[ok], ohi[ok], mid[ok], cnt[ok]
            if not lo.size:
                break
            starts = np.concatenate([[0], np.cumsum(cnt)[:-1]])
            node = np.repeat(np.arange(lo.size), cnt)
            j = olo[node] + (np.arange(node.size) - starts[node])
            vals = d[j] + cost(j, mid[node])
            segmin = np.minimum.reduceat(vals, starts)
            hit = np.flatnonzero(vals <= segmin[node])
            best = j[hit[np.unique(node[hit], return_index=True)[1]]]
            dn[mid], arg[mid] = segmin, best
            lo, hi = np.concatenate([lo, mid + 1]), np.concatenate([mid - 1, hi])
            olo, ohi = np.concatenate([olo, best]), np.concatenate([best, ohi])
            keep = lo <= hi
            lo, hi, olo, ohi = lo[keep], hi[keep], olo[keep], ohi[keep]
        d = dn
        splits.append(arg)
    bounds = [m]
    for arg in reversed(splits):
        bounds.append(int(arg[bounds[-1]]))
    bounds.append(0)
    bounds = bounds[::-1]
    return np.array([(s1[b] - s1[a]) / (p[b] - p[a]) for a, b in zip(bounds[:-1], bounds[1:]) if p[b] > p[a]])


class PaletteGrid:
    """A codebook tensor's palettes as a GPTQ grid (``gptq(..., grid=...)``): each column is coded to the
    nearest entry of its palette, and the rounding error is spread over the later columns through the
    inverse Hessian, as GPTQ does for uniform grids (palettes from k-means, assignment error-aware)."""

    def __init__(self, q: QuantizedTensor):
        import types

        self.cb = np.asarray(q.codebook, np.float64)
        self.gs = q.group_size
        self.t = types.SimpleNamespace(scheme="codebook")

    def _palette(self, cols: slice) -> np.ndarray:
        if self.cb.ndim == 1:
            return self.cb[None, :]
        if self.cb.ndim == 2:
            return self.cb
        return self.cb[:, cols.start // self.gs, :]

    def quantize(self, col: np.ndarray, cols: slice) -> np.ndarray:
        pal = self._palette(cols)
        return np.abs(col.astype(np.float64)[:, :1] - pal).argmin(-1)[:, None]

    def dequantize(self, q: np.ndarray, cols: slice) -> np.ndarray:
        pal = np.broadcast_to(self._palette(cols), (q.shape[0], self.cb.shape[-1]))
        return np.take_along_axis(pal, q.astype(np.int64), axis=1).astype(np.float32)


def kmeans_batched(
    x: np.ndarray, n: int, iters: int = 25, sw: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd k-means on each row of ``x [B, m]`` at once (quantile init, deterministic), optionally weighted
    per element (``sw``, broadcastable to ``x``).

    Returns (centroids ``[B, n]`` sorted, labels ``[B, m]`` of the nearest float32 centroid)."""
    x = x.astype(np.float64)
    b = x.shape[0]
    sw = np.ones_like(x) if sw is None else np.broadcast_to(np.asarray(sw, np.float64), x.shape)
    cent = np.quantile(x, (np.arange(n) + 0.5) / n, axis=1).T  # [B, n]
    rows = np.arange(b)[:, None]
    for _ in range(iters):
        lab = np.abs(x[:, :, None] - cent[:, None, :]).argmin(-1)  # [B, m]
        sums = np.zeros_like(cent)
        cnt = np.zeros_like(cent)
        np.add.at(sums, (rows, lab), sw * x)
        np.add.at(cnt, (rows, lab), sw)
        new = np.where(cnt > 0, sums / np.maximum(cnt, 1), cent)
        if np.allclose(new, cent):
            break
        cent = new
    cent = np.sort(cent, axis=1).astype(np.float32)
    lab = np.abs(x.astype(np.float32)[:, :, None] - cent[:, None, :]).argmin(-1).astype(np.uint8)
    return cent, lab


def codebook(
    w: np.ndarray, bits: int, per_channel: bool, group_size: int = 0, importance: np.ndarray | None = None
) -> QuantizedTensor:
    """k-means palettization with ``2**bits`` entries, per tensor, per output channel, or per group of
    ``group_size`` weights along K within each output channel (2-D weights). ``importance`` (one value per
    column of the ``[O, K]`` matrix, e.g. the layer input's energy per channel: the Hessian diagonal) weights
    each weight's error, so the palette fits the weights the output depends on most (as SqueezeLLM)."""
    n = 1 << bits
    sw = None
    if importance is not None:
        imp = np.asarray(importance, np.float64).reshape(-1)
        imp = imp / max(float(imp.mean()), 1e-300) + 1e-6
        sw = np.broadcast_to(imp, (w.shape[0], imp.size))
    if group_size:
        rows, k = w.shape
        cb, lab = kmeans_batched(w.reshape(-1, group_size), n, sw=None if sw is None else sw.reshape(-1, group_size))
        return QuantizedTensor(
            codes=lab.reshape(rows, k),
            bits=bits,
            scheme="codebook",
            codebook=cb.reshape(rows, k // group_size, n),
            axis=0,
            group_size=group_size,
            group_axis=1,
            method="codebook",
        )
    if not per_channel:
        cent, lab = kmeans_1d(w, n, sw=None if sw is None else sw.reshape(-1))
        # Recompute labels against the float32 codebook so dequantize() is the nearest entry exactly.
        cb = np.zeros(n, np.float32)
        cb[: cent.size] = cent
        return QuantizedTensor(codes=lab.reshape(w.shape), bits=bits, scheme="codebook", codebook=cb, method="codebook")
    rows = w.reshape(w.shape[0], -1)
    cbs = np.zeros((rows.shape[0], n), np.float32)
    codes = np.zeros(rows.shape, np.uint8)
    for r in range(rows.shape[0]):
        cent, lab = kmeans_1d(rows[r], n, sw=None if sw is None else sw[r])
        cbs[r, : cent.size] = cent
        if cent.size < n:
            cbs[r, cent.size :] = cent[-1]
        codes[r] = lab
    return QuantizedTensor(
        codes=codes.reshape(w.shape), bits=bits, scheme="codebook", codebook=cbs, axis=0, method="codebook"
    )


# The uniform-grid algorithms: ``fn(w2, spec[, h]) -> (codes, scale, zero_point)``.
GRID_METHODS = {"rtn": rtn, "mse": mse, "gptq": gptq}


@dataclasses.dataclass
class Job:
    """One weight for a :class:`Method`: ``w`` in its own shape and ``w2`` as a matrix ``[out, K]``, the grid
    ``spec``, the layer's input Hessian ``h`` (None where there is none or the method needs none; in ``perm``'s
    column order when ``perm`` is set), the quantize pass (its options), the method recorded on the tensor
    (``label``) and the layer's role."""

    w: np.ndarray
    w2: np.ndarray
    spec: GridSpec
    h: np.ndarray | None
    perm: np.ndarray | None
    opts: Any
    label: str
    role: str


@dataclasses.dataclass
class Outcome:
    """A method's result: the tensor, the Hessian the report may still use (None: consumed) and a note."""

    q: QuantizedTensor
    h: np.ndarray | None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Method:
    """A quantization method of the quantize pass: ``run(job) -> Outcome``. ``hessian`` says when it needs the
    layer's input Hessian ("always", "output": with objective=output only, None: never); ``ordered``: the
    Hessian is built in the column order of its diagonal (GPTQ's act_order)."""

    run: Callable[[Job], Outcome]
    hessian: str | None = None
    ordered: bool = False

    def needs_hessian(self, objective: str) -> bool:
        return self.hessian == "always" or (self.hessian == "output" and objective == "output")


def _grid_outcome(job: Job, codes, scale, zp, h, note: str) -> Outcome:
    q = make_tensor(codes, scale, zp, job.spec, job.w.shape, job.label)
    o = job.opts
    if job.spec.granularity != ("group" if o.group else o.granularity) and job.role != "embedding":
        note = note or "group-wise grid not possible for this weight; used per channel"
    return Outcome(q, h, note)


def _rtn(job: Job, note: str = "") -> Outcome:
    return _grid_outcome(job, *rtn(job.w2, job.spec), job.h, note)


def _mse(job: Job, note: str = "") -> Outcome:
    return _grid_outcome(job, *mse(job.w2, job.spec, job.h if job.opts.objective == "output" else None), job.h, note)


def _gptq(job: Job) -> Outcome:
    if job.h is None:
        return _mse(job, "no Hessian for this layer (grouped conv or uncaptured input); used mse")
    o = job.opts
    codes, scale, zp = gptq(job.w2, job.spec, job.h, damp=o.damp, act_order=o.act_order, block=o.block, perm=job.perm)
    return _grid_outcome(job, codes, scale, zp, None, "")  # H was consumed (factored in place)


def _nf4(job: Job) -> Outcome:
    o, w = job.opts, job.w
    if w.ndim != 2 or w.shape[1] % (o.group or 64):
        return _mse(job, "nf4 needs 2-D weights with K divisible by the group; used mse")
    return Outcome(nf4(job.w2, o.group or 64, w.shape, o.scale_dtype == "f16"), job.h)


def _codebook(job: Job) -> Outcome:
    o, w, h = job.opts, job.w, job.h
    grouped_ok = w.ndim == 2 and o.group and w.shape[1] % o.group == 0
    note = ""
    if o.group and not grouped_ok:
        note = "per-group palettes need 2-D weights with K divisible by the group; used per channel"
    imp = np.diag(h).copy() if h is not None else None
    q = codebook(w, o.bits, o.per_channel_codebook or bool(o.group), o.group if grouped_ok else 0, imp)
    if h is not None:
        # objective=output: palettes fitted with each weight weighted by its input's energy, then codes assigned
        # GPTQ-style (error fed forward through the inverse Hessian).
        codes = gptq(job.w2, None, h, damp=o.damp, act_order=o.act_order, block=o.block, grid=PaletteGrid(q))
        q = dataclasses.replace(q, codes=codes.reshape(w.shape).astype(np.uint8))
    return Outcome(q, h, note)


# Every method of the quantize pass (its method= choices, in this order). AWQ's input scales are folded into the
# weights before (Quantize._awq_scales): its grid is then RTN's.
METHODS: dict[str, Method] = {
    "rtn": Method(_rtn),
    "mse": Method(_mse, hessian="output"),
    "gptq": Method(_gptq, hessian="always", ordered=True),
    "awq": Method(_rtn),
    "nf4": Method(_nf4),
    "codebook": Method(_codebook, hessian="output"),
}


def solve(job: Job) -> Outcome:
    """``job`` by its method (``job.label``): a module-level function, so that it may run as a task elsewhere."""
    return METHODS[job.label].run(job)
