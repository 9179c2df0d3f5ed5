"""Uniform quantization grids: scales and zero points per tensor, channel or group, and exact rounding.

Weights are handled as 2-D ``[out, K]`` matrices (a conv weight ``[O, I, kh, kw]`` is ``[O, I*kh*kw]``);
groups run along K. ``make_tensor`` turns codes and parameters back into a :class:`QuantizedTensor` of
the original shape whose ``dequantize()`` is exactly what the pass computed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...ir import QuantizedTensor
from ...ir.dtypes import code_range


@dataclasses.dataclass(frozen=True)
class GridSpec:
    bits: int
    symmetric: bool
    granularity: str  # "tensor" | "channel" | "group"
    group_size: int = 128
    scale_dtype: str = "f32"  # "f16": scales are float16 values (half the storage where a target keeps them so)

    def groups(self, k: int) -> int:
        if self.granularity == "group":
            return k // self.group_size
        return 1

    @property
    def qmin(self) -> int:
        return code_range(self.bits, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return code_range(self.bits, self.symmetric)[1]


def as_matrix(w: np.ndarray) -> np.ndarray:
    return w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)


def grouped(w2: np.ndarray, spec: GridSpec) -> np.ndarray:
    """``[out, K]`` -> ``[rows, G, K/G]`` where rows is 1 for per-tensor grids."""
    out, k = w2.shape
    g = spec.groups(k)
    if spec.granularity == "tensor":
        return w2.reshape(1, 1, -1)
    return w2.reshape(out, g, k // g)


def round_scale(scale: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Scales as stored: float32, or (``scale_dtype=f16``) float16 values, kept positive and finite. Codes
    are then computed against the rounded scale, so the grid stays exact.

    For grids of 4 bits and fewer the float16 scale also keeps its significand short enough that every
    ``(code - zero point) * scale`` is itself a float16 value (8 significant bits for symmetric grids,
    whose |code - zp| <= 2**(bits-1) needs bits-1 of the 11, 7 for asymmetric ones): a runtime may then
    dequantize in float16 (OpenVINO's fast decompression) and still produce exactly these weights."""
    scale = np.asarray(scale, np.float32)
    if spec.scale_dtype != "f16":
        return scale
    scale = np.clip(scale, 2.0**-14, 65504.0)  # normal float16 range: short significands stay exact
    if spec.bits <= 4:
        keep = 11 - (spec.bits - 1 if spec.symmetric else spec.bits)
        m, e = np.frexp(scale.astype(np.float64))
        scale = np.ldexp(np.round(m * 2.0**keep) / 2.0**keep, e)
    return np.minimum(scale, 65504.0).astype(np.float16).astype(np.float32)


def _short_neighbours(scale: np.ndarray, spec: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """The short-significand float16 scales just below and just above ``scale`` (see :func:`round_scale`)."""
    keep = 11 - (spec.bits - 1 if spec.symmetric else spec.bits)
    m, e = np.frexp(np.clip(scale, 2.0**-14, 65504.0).astype(np.float64))
    out = []
    for f in (np.floor, np.ceil):
        s = np.ldexp(f(m * 2.0**keep) / 2.0**keep, e)
        out.append(np.clip(s, 2.0**-14, 65504.0).astype(np.float16).astype(np.float32))
    return out[0], out[1]


def params(wg: np.ndarray, spec: GridSpec, clip: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale (and zero point) per ``[rows, G]`` block from its range, shrunk by ``clip`` in (0, 1].

    With float16 scales of 4 bits or fewer, whose significands are short (:func:`round_scale`), the
    representable scales are 0.4% apart: each block takes whichever neighbour of its ideal scale gives the
    smaller squared error, rather than the nearest."""
    wg = wg.astype(np.float32, copy=False)
    if spec.symmetric:
        amax = np.maximum(-wg.min(-1), wg.max(-1)) * clip  # max |w| without a full-size |w| temporary
        scale = np.where(amax > 0, amax / spec.qmax, 1.0)
        if spec.scale_dtype == "f16" and spec.bits <= 4:
            return _pick(wg, [(s, None) for s in _short_neighbours(scale, spec)], spec)
        return round_scale(scale, spec), None
    lo = np.minimum(wg.min(-1), 0.0) * clip
    hi = np.maximum(wg.max(-1), 0.0) * clip
    scale = (hi - lo) / (spec.qmax - spec.qmin)
    scale = np.where(scale > 0, scale, 1.0)
    if spec.scale_dtype == "f16" and spec.bits <= 4:
        return _pick(
            wg,
            [
                (s, np.clip(np.round(-lo / s), spec.qmin, spec.qmax).astype(np.float32))
                for s in _short_neighbours(scale, spec)
            ],
            spec,
        )
    scale = round_scale(scale, spec)
    zp = np.clip(np.round(-lo / scale), spec.qmin, spec.qmax).astype(np.float32)
    return scale, zp


def _pick(wg: np.ndarray, cands: list, spec: GridSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Per block, the (scale, zero point) candidate with the smallest squared error on ``wg``."""
    best_s, best_z, best_e = None, None, None
    for s, z in cands:
        d = fake_quant(wg, s, z, spec)
        d -= wg
        e = np.einsum("...k,...k->...", d, d)
        del d
        if best_e is None:
            best_s, best_z, best_e = s.copy(), None if z is None else z.copy(), e
            continue
        better = e < best_e
        best_s = np.where(better, s, best_s)
        best_z = None if z is None else np.where(better, z, best_z)
        best_e = np.minimum(e, best_e)
    assert best_s is not None  # cands is never empty
    return best_s, best_z


def quantize_codes(wg: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, spec: GridSpec) -> np.ndarray:
    """Integer codes (as float32, exact) for ``wg`` on the given grid."""
    q = np.round(wg.astype(np.float32) / scale[..., None])
    if zp is not None:
        q = q + zp[..., None]
    return np.clip(q, spec.qmin, spec.qmax)


def dequantize_codes(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None) -> np.ndarray:
    """Exactly the arithmetic of :meth:`QuantizedTensor.dequantize` (float32)."""
    if zp is not None:
        q = q - zp[..., None]
    return (q * scale[..., None]).astype(np.float32)


def fake_quant(wg: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, spec: GridSpec) -> np.ndarray:
    return dequantize_codes(quantize_codes(wg, scale, zp, spec), scale, zp)


def make_tensor(
    codes_g: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, spec: GridSpec, shape: tuple[int, ...], method: str
) -> QuantizedTensor:
    """Assemble the :class:`QuantizedTensor` of the original ``shape`` from grouped codes and parameters."""
    out = shape[0]
    rank = len(shape)
    codes = codes_g.reshape(shape).astype(np.int8 if spec.symmetric else np.uint8)
    if spec.granularity == "tensor":
        pshape = (1,) * rank
        axis = None
    else:
        axis = 0
        g = scale.shape[1]
        pshape = (out, g) + (1,) * (rank - 2) if rank > 1 else (out,)
    scales = scale.reshape(pshape).astype(np.float32)
    zps = zp.reshape(pshape).astype(np.uint8) if zp is not None else None
    group_size = group_axis = None
    if spec.granularity == "group":
        group_size, group_axis = spec.group_size, 1
        if rank > 2:
            # Groups run along the flattened K = I*kh*kw; they are blocks of input channels when each covers
            # whole kernels: scales [O, I / g, 1, ...].
            kernel = int(np.prod(shape[2:]))
            if spec.group_size % kernel:
                raise ValueError("a group-wise grid on a conv weight must cover whole kernels")
            group_size = spec.group_size // kernel
    return QuantizedTensor(
        codes=codes,
        bits=spec.bits,
        scheme="symmetric" if spec.symmetric else "asymmetric",
        scales=scales,
        zero_points=zps,
        axis=axis,
        group_size=group_size,
        group_axis=group_axis,
        method=method,
    )


def sqnr_db(w: np.ndarray, wq: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (accumulated in float64 over row chunks: no full-size
    float64 temporaries for large embedding tables)."""
    w2, q2 = as_matrix(w), as_matrix(wq)
    noise = sig = 0.0
    for r in range(0, w2.shape[0], 4096):
        a = w2[r : r + 4096].astype(np.float64)
        noise += float(np.sum((a - q2[r : r + 4096]) ** 2))
        sig += float(np.sum(a * a))
    return float("inf") if noise == 0 else 10.0 * np.log10(sig / noise) if sig > 0 else 0.0
