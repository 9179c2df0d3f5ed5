"""vq: vector quantization of Linear weights, GPTVQ-style (van Baalen et al. 2024, "GPTVQ: The Blessing of
Dimensionality for LLM Quantization").

A weight ``W [O, K]`` is cut into vectors of ``dim`` consecutive input-axis elements per row; each vector is
stored as the index of an entry of a codebook ``[2**(dim * bits_per_weight), dim]`` shared by a block of
``rows`` rows (default: all) and ``group`` columns (default: all). The IR carries the result exactly as a
``vector`` QuantizedTensor.

Per layer, with ``H = X^T X / n`` from the calibration inputs:

1. ``U``, the upper Cholesky factor of ``(H + damp)^-1``, as in GPTQ.
2. Group by group, in column order:

   * the group's codebooks (one per row block) are initialised by Hessian-weighted k-means (EM / Lloyd) on
     the block's weights as updated so far, each element weighted by ``1 / U_kk^2`` (GPTQ's cost of an error
     in column ``k``);
   * its vectors are assigned column block by column block: a vector ``x`` of columns ``v`` gets the entry
     ``c`` minimising ``||(x - c) U_vv^-1||^2``, the exact loss increase of fixing those ``dim`` weights, and
     the error ``E = (x - c) U_vv^-1`` is spread over the later columns through ``U`` (lazily per block).
3. With the codes fixed, the codebooks are fine-tuned on the layer output error
   ``tr((W - Q) H (W - Q)^T)``, a quadratic in the codebook entries, by conjugate gradients.
4. Codebooks are stored as float16 (``codebook_bits=16``), as ``int8 * 2**e`` with one exponent per
   codebook (``codebook_bits=8``, exact in float16 too, so every target carries it bit for bit) or float32.

The bits a weight costs, codebooks included, are in each layer's report (``bits_per_weight_total``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...api.layers import Layer, find_layers
from ...errors import UsageError
from ...ir import Model, QuantizedTensor
from ...ir.passes import Pass, PassContext, option
from ...ir.tensor import decode_vectors, pow2_int8, vector_index
from .methods import inverse_hessian_factor
from .quantize import LayerWork, hessian, quad, quantize_layers, replace_weight

MAX_INDEX_BITS = 16
KMEANS_SAMPLE = 32768  # vectors k-means fits a codebook on (at least 32 per entry); all are assigned after


def index_bits(dim: int, bits_per_weight: float) -> int | None:
    """The index width for ``dim``-D vectors at ``bits_per_weight`` (None unless a whole number in 1..16)."""
    b = dim * bits_per_weight
    return int(round(b)) if abs(b - round(b)) < 1e-9 and 1 <= round(b) <= MAX_INDEX_BITS else None


def total_bits(shape: tuple[int, int], dim: int, bits: int, group: int, codebook_bits: int, rows: int = 0) -> float:
    """Bits per weight of a ``vector`` tensor, codebooks (and their int8 exponents) counted; ``rows`` rows per
    codebook (0: all)."""
    o, k = shape
    books = k // group * (o // rows if rows else 1)
    cb = books * ((1 << bits) * dim * codebook_bits + (8 if codebook_bits == 8 else 0))
    return (o * k // dim * bits + cb) / (o * k)


# ------------------------------------------------------------------------------------------------ k-means
def _nearest(x: np.ndarray, c: np.ndarray, wt: np.ndarray | None = None, chunk: int = 1 << 22) -> np.ndarray:
    """Index of the nearest entry of ``c [B, n, d]`` for each vector of ``x [B, N, d]`` (batch b against its own
    codebook ``c[b]``): Euclidean, or weighted per element by ``wt [B, N, d]`` (``sum_j wt_j (x_j - c_j)^2``).
    Distances are formed in slices of about ``chunk`` entries."""
    b, big, _ = x.shape
    n = c.shape[1]
    out = np.empty((b, big), np.int64)
    step = max(1, chunk // (n * b))
    ct = np.swapaxes(c, 1, 2)  # [B, d, n]
    c2 = ct * ct
    for a in range(0, big, step):
        xs = x[:, a : a + step]
        if wt is None:
            dist = c2.sum(1)[:, None, :] - 2.0 * (xs @ ct)
        else:
            ws = wt[:, a : a + step]
            dist = ws @ c2 - 2.0 * ((ws * xs) @ ct)
        out[:, a : a + step] = dist.argmin(-1)
    return out


def weighted_kmeans(x: np.ndarray, wt: np.ndarray, n: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's EM for ``n`` centroids of each batch of vectors ``x [B, N, d]`` under the diagonal weights
    ``wt [B, N, d] > 0``, on at most ``max(KMEANS_SAMPLE / B, 32 n)`` vectors per batch drawn by ``rng``
    (float32 distances, float64 means). Starts from ``n`` distinct vectors drawn by ``rng``; an emptied
    cluster takes its batch's worst-fitted vector. Returns ``[B, n, d]``."""
    b, big, d = x.shape
    keep = max(KMEANS_SAMPLE // b, 32 * n)
    if big > keep:
        pick = np.sort(rng.choice(big, size=keep, replace=False))
        x, wt, big = x[:, pick], wt[:, pick], keep
    x32, wt32 = x.astype(np.float32), wt.astype(np.float32)
    c = x[:, np.sort(rng.choice(big, size=n, replace=False))].astype(np.float64)
    ids = np.arange(b)[:, None] * n
    wts = [wt[..., j].ravel() for j in range(d)]
    wxs = [(wt[..., j] * x[..., j]).ravel() for j in range(d)]
    for _ in range(iters):
        lab = _nearest(x32, c.astype(np.float32), wt32)
        flat = (lab + ids).ravel()
        den = np.stack([np.bincount(flat, wj, b * n) for wj in wts], 1).reshape(b, n, d)
        num = np.stack([np.bincount(flat, wxj, b * n) for wxj in wxs], 1).reshape(b, n, d)
        new = np.where(den > 0, num / np.where(den > 0, den, 1.0), c)
        for bi, e in zip(*np.nonzero(den[..., 0] == 0)):  # an emptied cluster: the worst-fitted vector
            err = (wt[bi] * (x[bi] - new[bi][lab[bi]]) ** 2).sum(1)
            new[bi, e] = x[bi, int(np.argmax(err))]
        if np.allclose(new, c, rtol=1e-7, atol=1e-12):
            c = new
            break
        c = new
    return c


# ------------------------------------------------------------------------------------------------ the layer
@dataclasses.dataclass
class VQResult:
    codes: np.ndarray  # [O, K / dim]
    codebook: np.ndarray  # [R, G, n, dim], float32, on the storage grid
    loss_init: float  # tr((W - Q) H (W - Q)^T) before codebook fine-tuning
    loss: float  # ... after fine-tuning and storage rounding


def store_codebook(cb: np.ndarray, codebook_bits: int) -> np.ndarray:
    """The codebook rounded to its storage grid (float32 values)."""
    if codebook_bits == 16:
        return np.clip(cb, -65504, 65504).astype(np.float16).astype(np.float32)
    if codebook_bits == 8:
        return pow2_int8(cb)[1]
    return cb.astype(np.float32)


def finetune_codebook(flat_idx: np.ndarray, cb: np.ndarray, w: np.ndarray, h: np.ndarray, iters: int) -> np.ndarray:
    """Conjugate gradients on ``tr((W - D(C)) H (W - D(C))^T)`` over the flattened codebooks ``C [G*n, d]``,
    with ``D(C) = C[flat_idx]`` (codes fixed). The normal equations are ``S(D(C) H) = S(W H)`` where ``S``
    sums a matrix's vectors into the entries they use (the adjoint of ``D``)."""
    rows, nv = flat_idx.shape
    m, d = cb.shape
    ids = flat_idx.ravel()

    def dec(c):
        return c[flat_idx].reshape(rows, nv * d)

    def scat(a):
        av = a.reshape(rows * nv, d)
        return np.stack([np.bincount(ids, av[:, j], m) for j in range(d)], 1)

    c = cb.astype(np.float64, copy=True)
    r = scat(w @ h) - scat(dec(c) @ h)
    p = r.copy()
    rs = float(np.sum(r * r))
    rs0 = rs
    for _ in range(iters):
        if rs <= 1e-20 * max(rs0, 1e-300):
            break
        ap = scat(dec(p) @ h)
        pap = float(np.sum(p * ap))
        if pap <= 0:
            break
        alpha = rs / pap
        c += alpha * p
        r -= alpha * ap
        rs_new = float(np.sum(r * r))
        p = r + (rs_new / rs) * p
        rs = rs_new
    return c


def gptvq(
    w: np.ndarray,
    h: np.ndarray,
    *,
    dim: int,
    bits: int,
    group: int,
    rows: int = 0,
    damp: float = 0.01,
    block: int = 128,
    iters: int = 25,
    finetune: int = 25,
    codebook_bits: int = 16,
    seed: int = 0,
) -> VQResult:
    """GPTVQ on one ``[O, K]`` weight with input Hessian ``h [K, K]`` (see the module docstring): one codebook
    per ``rows`` rows (0: all) and ``group`` columns. ``group`` must be a multiple of ``dim`` dividing ``K``,
    ``rows`` must divide ``O``, and every codebook needs at least ``2**bits`` vectors."""
    o, k = w.shape
    n = 1 << bits
    rp = rows or o
    if group % dim or k % group or o % rp:
        raise ValueError(f"group={group} must be a multiple of dim={dim} dividing K={k}, rows={rows} must divide {o}")
    if rp * group // dim < n:
        raise ValueError(
            f"a codebook's block of {rp} x {group} weights holds {rp * group // dim} vectors, fewer "
            f"than its {n} entries"
        )
    r, g = o // rp, k // group
    h = np.array(h, np.float64)
    u, dead = inverse_hessian_factor(h.copy(), damp, "vq{damp=0.1}")
    u = np.triu(u)
    h[dead, dead] = 1.0  # as the factor's Hessian: dead inputs carry nothing, their weights become 0
    w0 = np.array(w, np.float64)
    w0[:, dead] = 0.0
    work = w0.copy()
    codes = np.zeros((o, k // dim), np.uint8 if bits <= 8 else np.uint16)
    books = np.zeros((r, g, n, dim))
    rng = np.random.default_rng(seed)
    block = max(dim, block // dim * dim)
    imp = 1.0 / np.diag(u) ** 2
    for gi in range(g):
        c0, c1 = gi * group, (gi + 1) * group
        x = work[:, c0:c1].reshape(r, rp * group // dim, dim)
        wt = np.broadcast_to(imp[c0:c1].reshape(1, 1, -1, dim), (r, rp, group // dim, dim)).reshape(x.shape)
        cb = weighted_kmeans(x, wt, n, iters, rng)  # [R, n, d]
        books[:, gi] = cb
        for b0 in range(c0, c1, block):
            b1 = min(b0 + block, c1)
            wb = work[:, b0:b1].copy()
            err = np.zeros_like(wb)
            for i in range(b0, b1, dim):
                li = i - b0
                a = np.linalg.inv(u[i : i + dim, i : i + dim])  # U_vv^-1 (upper triangular)
                xv = wb[:, li : li + dim]
                lab = _nearest((xv @ a).reshape(r, rp, dim), cb @ a)  # [R, rp]
                codes[:, i // dim] = lab.reshape(o)
                e = (xv - np.take_along_axis(cb, lab[..., None], axis=1).reshape(o, dim)) @ a
                if b1 > i + dim:
                    wb[:, li + dim :] -= e @ u[i : i + dim, i + dim : b1]
                err[:, li : li + dim] = e
            work[:, b0:b1] = wb
            if b1 < k:
                work[:, b1:] -= err @ u[b0:b1, b1:]
    del work
    flat = vector_index(codes, books.shape)
    loss_init = quad(books.reshape(-1, dim)[flat].reshape(o, k) - w0, h)
    tuned = finetune_codebook(flat, books.reshape(-1, dim), w0, h, finetune) if finetune else books.reshape(-1, dim)
    stored = store_codebook(tuned.reshape(books.shape), codebook_bits)
    loss = quad(decode_vectors(codes, stored, group) - w0, h)
    if finetune:  # keep the fine-tuned codebook only where it helped after rounding (it always should)
        plain = store_codebook(books, codebook_bits)
        loss_plain = quad(decode_vectors(codes, plain, group) - w0, h)
        if loss_plain < loss:
            stored, loss = plain, loss_plain
    return VQResult(codes, stored, loss_init, loss)


# ------------------------------------------------------------------------------------------------ the pass
def _gptvq_task(args: tuple) -> VQResult:
    """One layer's GPTVQ (a task: picklable arguments, no model)."""
    w, h, kw = args
    return gptvq(w, h, **kw)


def _bpw_ok(v: float) -> bool:
    return 0 < v <= MAX_INDEX_BITS


@dataclasses.dataclass(frozen=True)
class VectorQuantize(Pass):
    """GPTVQ vector quantization of Linear weights. See ``edgec passes`` for the options."""

    name: ClassVar[str] = "vq"
    lossy: ClassVar[bool] = True  # changes the numbers on purpose: --verify judges fidelity
    summary: ClassVar[str] = (
        "vector quantization (GPTVQ): codebooks of dim-D vectors from Hessian-weighted k-means, "
        "GPTQ-style assignment, codebooks fine-tuned on the output error"
    )
    dim: int = option(2, choices=(1, 2, 4, 8), help="elements per vector (consecutive along the input axis)")
    bits_per_weight: float = option(
        2.0,
        check=_bpw_ok,
        allowed="a positive number; dim * bits_per_weight must be a whole number of index bits, 1..16",
        help="index bits per weight (codebooks not counted): 2**(dim*bits) entries",
    )
    group: int = option(
        0,
        check=lambda v: v >= 0,
        allowed="0 or a positive integer",
        help="input columns sharing one codebook; 0: the whole input axis; a group "
        "that does not divide a layer's K falls back to the whole axis (reported)",
    )
    rows: int = option(
        0,
        check=lambda v: v >= 0,
        allowed="0 or a positive integer",
        help="rows sharing one codebook (0: all rows); a value that does not divide a layer's rows "
        "falls back to all rows (reported)",
    )
    codebook_bits: int = option(
        16,
        choices=(8, 16, 32),
        help="codebook storage: 16 float16, 8 int8 * 2**e (one exponent per codebook; exact in float16), 32 float32",
    )
    iters: int = option(25, check=lambda v: v > 0, allowed="a positive integer", help="k-means (EM) iterations")
    finetune: int = option(
        25,
        check=lambda v: v >= 0,
        allowed="0 or a positive integer",
        help="conjugate-gradient steps fitting the codebooks to the output error (0: off)",
    )
    damp: float = option(0.01, check=lambda v: 0 < v < 1, allowed="0 < damp < 1", help="Hessian dampening")
    block: int = option(128, check=lambda v: v > 0, allowed="a positive integer", help="lazy-update block (columns)")
    include: str = option(".*", help="regex on weight or node names to quantize")
    exclude: str = option("", help="regex on weight or node names to leave alone")
    head: bool = option(
        False, help="also quantize the output head Linear (a language model's is kept float by default)"
    )
    samples: int = option(32, check=lambda v: v > 0, allowed="a positive integer", help="calibration samples used")
    seed: int = option(0, help="k-means initialisation seed (results are deterministic for a seed)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if index_bits(self.dim, self.bits_per_weight) is None:
            raise UsageError(
                f"vq: dim={self.dim} x bits_per_weight={self.bits_per_weight:g} = "
                f"{self.dim * self.bits_per_weight:g} index bits; it must be a whole number from 1 to "
                f"{MAX_INDEX_BITS} (e.g. dim=2 with bits_per_weight=2 or 2.5, dim=4 with 2, 2.25 or 3)"
            )
        if self.group and self.group % self.dim:
            raise UsageError(f"vq: group={self.group} must be a multiple of dim={self.dim}")

    @property
    def bits(self) -> int:
        bits = index_bits(self.dim, self.bits_per_weight)
        assert bits is not None  # checked in __post_init__
        return bits

    def select(self, model: Model) -> list[Layer]:
        layers = find_layers(model, ("edgec::Linear",), self.include, self.exclude)
        return [l for l in layers if l.role == "body" or (l.role == "head" and self.head)]

    def group_for(self, k: int) -> tuple[int, str]:
        if self.group and k % self.group == 0:
            return self.group, ""
        if self.group:
            return k, f"group={self.group} does not divide K={k}; one codebook for the whole input axis"
        return k, ""

    def run(self, model: Model, ctx: PassContext) -> bool:
        layers = self.select(model)
        if not layers:
            return False
        if ctx.calibration is None:
            raise UsageError(
                "vq needs calibration data (each layer's input Hessian): pass --calib (a .npz, a "
                "folder of samples, or 'random' for a smoke test)"
            )
        quantize_layers(model, layers, ctx.calibration.samples[: self.samples], self._layer, "vq", ctx.executor)
        return True

    def _layer(self, model: Model, layer: Layer, xs: list[np.ndarray]) -> dict | LayerWork:
        w = np.asarray(layer.weight.numpy(), np.float32)
        base = {
            "node": layer.node.name,
            "op": layer.node.qualified_op,
            "role": layer.role,
            "shape": list(w.shape),
            "method": "none",
            "bits": 32,
        }
        if w.ndim != 2 or w.shape[1] % self.dim:
            return {**base, "note": f"vq needs a 2-D weight whose K is a multiple of dim={self.dim}; kept float"}
        group, note = self.group_for(w.shape[1])
        rows = self.rows if self.rows and w.shape[0] % self.rows == 0 else 0
        if self.rows and not rows:
            note = "; ".join(
                x
                for x in (note, f"rows={self.rows} does not divide the {w.shape[0]} rows; one codebook for all rows")
                if x
            )
        n = 1 << self.bits
        if (rows or w.shape[0]) * group // self.dim < n:
            return {
                **base,
                "note": f"a codebook's block holds {(rows or w.shape[0]) * group // self.dim} vectors, "
                f"fewer than its {n} entries; kept float (use a larger group= or rows=, or "
                "fewer bits)",
            }
        h = hessian(layer, xs)
        if h is None:
            return {**base, "note": "no Hessian for this layer's input; kept float"}
        kw = dict(
            dim=self.dim,
            bits=self.bits,
            group=group,
            rows=rows,
            damp=self.damp,
            block=self.block,
            iters=self.iters,
            finetune=self.finetune,
            codebook_bits=self.codebook_bits,
            seed=self.seed,
        )
        return LayerWork(_gptvq_task, (w, h, kw), lambda r: self._finish(model, layer, w, h, xs, note, group, r))

    def _finish(
        self, model: Model, layer: Layer, w: np.ndarray, h: np.ndarray, xs, note: str, group: int, r: VQResult
    ) -> dict:
        q = QuantizedTensor(
            codes=r.codes,
            bits=self.bits,
            scheme="vector",
            codebook=r.codebook,
            group_size=group,
            group_axis=1,
            vector_dim=self.dim,
            method="gptvq",
            codebook_bits=None if self.codebook_bits == 32 else self.codebook_bits,
        )
        rep = replace_weight(model, layer, q, w, h, xs, note)
        rep.update(
            vector_dim=self.dim,
            bits_per_weight=self.bits_per_weight,
            codebooks=int(np.prod(r.codebook.shape[:2])),
            bits_per_weight_total=round(q.nbytes * 8 / w.size, 4),
            codebook_bits=self.codebook_bits,
            output_loss_before_finetune=r.loss_init,
            output_loss=r.loss,
        )
        return rep
