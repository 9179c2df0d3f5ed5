"""GGUF block formats as quantization grids: what llama.cpp stores, fitted by edgec's methods.

Each GGUF type fixes a grid: block size, code range, how scales (and mins) are stored (fp16 per block, or
6/4-bit sub-block scales under an fp16 super-block scale for the K-quants). :func:`fit` chooses the grid
parameters for a weight matrix ``[out, K]`` (blocks run along K, as llama.cpp lays them out), in exactly
the representable values: fp16 ``d``, integer sub-scales. The resulting :class:`QuantizedTensor` carries
per-sub-block float32 scales (and offsets) equal to the products llama.cpp's dequantizer computes, so
``QuantizedTensor.dequantize()`` is bit-identical to dequantizing the written file, and the GGUF target
only packs bits (:mod:`edgec.targets.gguf.encode`).

Shared by the quantize and mixed-precision passes (which fit the grids) and the ``gguf`` target (which packs
them). Importing this module registers every type's storage layout (``gguf.<TYPE>``: weights and bytes per
block) with the IR (:func:`edgec.ir.tensor.register_layout`), so :attr:`QuantizedTensor.nbytes` knows them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import numpy as np

from ..ir import QuantizedTensor
from ..ir.schemes import SCHEMES
from ..ir.tensor import SchemeName, register_layout

IQ4_NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)


@dataclasses.dataclass(frozen=True)
class GGUFType:
    name: str
    family: str  # "sym" | "affine" | "ksym" | "kaffine" | "nl"
    bits: int
    block: int  # weights per stored block (the unit grids are fitted on)
    block_bytes: int  # bytes per stored block in the file (gguf-py's GGML_QUANT_SIZES)
    sub: int  # weights per scale
    qmin: int
    qmax: int
    sc_min: int = 0  # K-quants: integer sub-scale range
    sc_max: int = 0

    @property
    def layout(self) -> str:
        """The :attr:`QuantizedTensor.layout` of tensors on this type's grid."""
        return f"gguf.{self.name}"

    @property
    def scheme(self) -> SchemeName:
        return cast(
            SchemeName,
            {"sym": "symmetric", "ksym": "symmetric", "affine": "affine", "kaffine": "affine", "nl": "codebook"}[
                self.family
            ],
        )


TYPES: dict[str, GGUFType] = {
    t.name: t
    for t in (
        #        name    family  bits block bytes sub qmin qmax [sc_min sc_max]
        GGUFType("Q8_0", "sym", 8, 32, 34, 32, -128, 127),
        GGUFType("Q4_0", "sym", 4, 32, 18, 32, -8, 7),
        GGUFType("Q5_0", "sym", 5, 32, 22, 32, -16, 15),
        GGUFType("Q4_1", "affine", 4, 32, 20, 32, 0, 15),
        GGUFType("Q5_1", "affine", 5, 32, 24, 32, 0, 31),
        GGUFType("Q2_K", "kaffine", 2, 256, 84, 16, 0, 3, 0, 15),
        GGUFType("Q3_K", "ksym", 3, 256, 110, 16, -4, 3, -32, 31),
        GGUFType("Q4_K", "kaffine", 4, 256, 144, 32, 0, 15, 0, 63),
        GGUFType("Q5_K", "kaffine", 5, 256, 176, 32, 0, 31, 0, 63),
        GGUFType("Q6_K", "ksym", 6, 256, 210, 16, -32, 31, -128, 127),
        GGUFType("IQ4_NL", "nl", 4, 32, 18, 32, 0, 15),
    )
}
for _t in TYPES.values():  # the IR sizes tensors on these grids by their blocks (QuantizedTensor.nbytes)
    register_layout(_t.layout, _t.block, _t.block_bytes)
del _t

FLOAT_TYPES = ("F32", "F16", "BF16")
# What llama.cpp's quantizer substitutes when a row length is not a multiple of 256 (llama-quant.cpp).
K_FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
# Bits a role (embedding, head) asks for -> the GGUF type used for it.
TYPE_FOR_BITS = {8: "Q8_0", 6: "Q6_K", 5: "Q5_K", 4: "Q4_K", 3: "Q3_K", 2: "Q2_K"}


def resolve(name: str, k: int) -> tuple[str | None, str]:
    """The type a row of length ``k`` gets for requested type ``name`` (None: keep float), and a note."""
    t = TYPES[name]
    if k % t.block == 0:
        return name, ""
    if name in K_FALLBACK and k % TYPES[K_FALLBACK[name]].block == 0:
        fb = K_FALLBACK[name]
        return fb, f"row length {k} is not a multiple of 256; used {fb} as llama.cpp does"
    return None, f"row length {k} is not a multiple of {t.block}; kept float"


def _f16(x: np.ndarray) -> np.ndarray:
    """Round to fp16 (finite), returned as float32: the value the file stores."""
    # + 0.0 turns -0.0 into +0.0: an integer sub-scale of 0 decodes to +0 in llama.cpp, so must ours.
    return cast(np.ndarray, np.clip(x, -65504.0, 65504.0).astype(np.float16).astype(np.float32) + np.float32(0.0))


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    idx = np.abs(x).argmax(-1)[..., None]
    return np.take_along_axis(x, idx, -1)[..., 0]


@dataclasses.dataclass
class Grid:
    """A fitted grid for ``[out, K]``: per-sub-block scales (and offsets), float32, exact."""

    t: GGUFType
    scales: np.ndarray  # [out, K / sub]
    offsets: np.ndarray | None
    layout_params: dict[str, Any]

    def quantize(self, w2: np.ndarray, cols: slice | None = None) -> np.ndarray:
        """Nearest codes for ``w2`` (all columns, or the column range ``cols`` of the matrix)."""
        s, o = self.col_params(cols, w2.shape[1])
        if self.t.family == "nl":
            return nearest_nl(w2, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.round((w2 - o) / s) if o is not None else np.round(w2 / s)
        q = np.where(s != 0, q, 0 if o is None else self.t.qmin)
        return cast(np.ndarray, np.clip(np.nan_to_num(q), self.t.qmin, self.t.qmax).astype(np.float32))

    def dequantize(self, q: np.ndarray, cols: slice | None = None) -> np.ndarray:
        s, o = self.col_params(cols, q.shape[1])
        if self.t.family == "nl":
            return cast(np.ndarray, (IQ4_NL_VALUES[q.astype(np.int64)] * s).astype(np.float32))
        w = q.astype(np.float32) * s
        return cast(np.ndarray, (w + o).astype(np.float32) if o is not None else w.astype(np.float32))

    def col_params(self, cols: slice | None, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        start = 0 if cols is None else cols.start
        idx = (np.arange(start, start + n)) // self.t.sub
        s = self.scales[:, idx]
        return s, (None if self.offsets is None else self.offsets[:, idx])

    def tensor(self, codes: np.ndarray, method: str) -> QuantizedTensor:
        t = self.t
        dt = np.int8 if SCHEMES[t.scheme].signed else np.uint8
        return QuantizedTensor(
            codes=codes.astype(dt),
            bits=t.bits,
            scheme=t.scheme,
            scales=self.scales.astype(np.float32),
            offsets=None if self.offsets is None else self.offsets.astype(np.float32),
            axis=0,
            group_size=t.sub,
            group_axis=1,
            codebook=IQ4_NL_VALUES.copy() if t.family == "nl" else None,
            method=method,
            layout=t.layout,
            layout_params=self.layout_params or None,
        )


def nearest_nl(w2: np.ndarray, s: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """IQ4_NL codes: the index of the nearest ``s * value`` (in float32, as dequantized)."""
    out = np.empty(w2.shape, np.float32)
    for r in range(0, w2.shape[0], chunk):
        cand = s[r : r + chunk, :, None] * IQ4_NL_VALUES  # [rows, K, 16]
        out[r : r + chunk] = np.abs(cand - w2[r : r + chunk, :, None]).argmin(-1)
    return out


def fit(w2: np.ndarray, t: GGUFType, clip: np.ndarray | float = 1.0) -> Grid:
    """Grid parameters for ``w2 [out, K]`` (K a multiple of ``t.block``), ranges shrunk by ``clip``
    (a scalar or one ratio per block ``[out, K / block]``)."""
    out, k = w2.shape
    nb = k // t.block
    ns = t.block // t.sub
    wb = w2.astype(np.float32).reshape(out, nb, ns, t.sub)
    r = np.broadcast_to(np.asarray(clip, np.float32), (out, nb))[..., None]  # [out, nb, 1]
    lp: dict[str, Any] = {}
    if t.family in ("sym", "nl"):
        mx = _signed_absmax(wb)[..., 0] * r[..., 0]  # [out, nb]
        if t.name == "Q8_0":
            d: np.ndarray = np.abs(mx) / 127.0
        elif t.family == "nl":
            d = mx / -127.0
        else:
            d = mx / t.qmin  # the extreme lands on the most negative code, as llama.cpp does
        return Grid(t, _f16(d), None, lp)
    if t.family == "affine":
        lo, hi = wb.min(-1)[..., 0], wb.max(-1)[..., 0]
        lo = np.where(lo < 0, lo * r[..., 0], lo)
        hi = np.where(hi > 0, hi * r[..., 0], hi)
        d = (hi - lo) / t.qmax
        return Grid(t, _f16(d), _f16(lo), lp)
    if t.family == "kaffine":
        lo = np.minimum(wb.min(-1), 0.0) * r  # [out, nb, ns]; K-quant mins are stored as -min >= 0
        hi = np.maximum(wb.max(-1), 0.0) * r
        s = (hi - lo) / t.qmax
        m = -lo
        d = _f16(s.max(-1) / t.sc_max)  # [out, nb]
        dmin = _f16(m.max(-1) / t.sc_max)
        with np.errstate(divide="ignore", invalid="ignore"):
            sc = np.clip(np.nan_to_num(np.round(s / d[..., None])), 0, t.sc_max) + 0.0
            mi = np.clip(np.nan_to_num(np.round(m / dmin[..., None])), 0, t.sc_max) + 0.0
        scales = (d[..., None] * sc).reshape(out, nb * ns).astype(np.float32)
        offsets = (-(dmin[..., None] * mi)).reshape(out, nb * ns).astype(np.float32)
        lp = {"d": d.astype(np.float16), "dmin": dmin.astype(np.float16)}
        return Grid(t, scales, offsets, lp)
    # ksym: signed sub-scales under an fp16 super-scale
    s = _signed_absmax(wb) * r / t.qmin  # [out, nb, ns], signed
    d = _f16(_signed_absmax(s) / t.sc_min)  # the largest sub-scale lands on sc_min
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.clip(np.nan_to_num(np.round(s / d[..., None])), t.sc_min, t.sc_max) + 0.0
    scales = (d[..., None] * sc).reshape(out, nb * ns).astype(np.float32)
    return Grid(t, scales, None, {"d": d.astype(np.float16)})


CLIP_GRID = np.linspace(1.0, 0.6, 21, dtype=np.float32)


def fit_mse(w2: np.ndarray, t: GGUFType, h_diag: np.ndarray | None = None) -> Grid:
    """Per block, the clipping ratio whose exact grid gives the smallest (optionally activation-weighted)
    squared error."""
    out, k = w2.shape
    nb = k // t.block
    w2 = w2.astype(np.float32)
    wt = None if h_diag is None else np.broadcast_to(h_diag.astype(np.float32), (out, k)).reshape(out, nb, t.block)
    best_err = np.full((out, nb), np.inf)
    best_r = np.ones((out, nb), np.float32)
    for r in CLIP_GRID:
        g = fit(w2, t, r)
        d = (g.dequantize(g.quantize(w2)) - w2).reshape(out, nb, t.block).astype(np.float64) ** 2
        err = (d * wt).sum(-1) if wt is not None else d.sum(-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_r = np.where(better, r, best_r)
    return fit(w2, t, best_r)


def quantize_matrix(
    w2: np.ndarray, t: GGUFType, method: str = "rtn", h_diag: np.ndarray | None = None, chunk: int = 4096
) -> QuantizedTensor:
    """Fit and quantize ``w2`` (rows are independent: large tables go ``chunk`` rows at a time, so the
    temporaries stay small)."""
    parts = []
    for r in range(0, w2.shape[0], chunk):
        wr = np.asarray(w2[r : r + chunk], np.float32)
        g = fit_mse(wr, t, h_diag) if method == "mse" else fit(wr, t)
        parts.append((g, g.quantize(wr).astype(np.int8 if SCHEMES[t.scheme].signed else np.uint8)))
    if len(parts) == 1:
        return parts[0][0].tensor(parts[0][1], method)
    g0 = parts[0][0]
    grid = Grid(
        t,
        np.concatenate([g.scales for g, _ in parts]),
        None if g0.offsets is None else np.concatenate([g.offsets for g, _ in parts]),
        {k: np.concatenate([g.layout_params[k] for g, _ in parts]) for k in g0.layout_params},
    )
    return grid.tensor(np.concatenate([c for _, c in parts]), method)


def fake_quant(w2: np.ndarray, t: GGUFType) -> np.ndarray:
    g = fit(w2, t)
    return g.dequantize(g.quantize(w2.astype(np.float32)))
