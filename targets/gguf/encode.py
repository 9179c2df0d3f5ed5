"""Pack edgec's GGUF-grid QuantizedTensors into llama.cpp block bytes, re-rounding nothing.

Every value written is recovered exactly from the tensor: fp16 block scales are the float32 scales
(checked to be fp16-representable), K-quant sub-scales are ``scale / d`` (checked to be integers in
range). Anything that does not fit raises :class:`EncodeError` instead of silently rounding.
"""

from __future__ import annotations

import numpy as np

from ...api.gguf import TYPES, GGUFType
from ...ir import QuantizedTensor

QK_K = 256


class EncodeError(ValueError):
    pass


def _f16_exact(x: np.ndarray, what: str) -> np.ndarray:
    h = x.astype(np.float16)
    if not np.array_equal(h.astype(np.float32), x.astype(np.float32), equal_nan=True):
        raise EncodeError(f"{what} is not exactly representable in fp16 (the tensor is not on this type's grid)")
    return h


def _int_exact(x: np.ndarray, lo: int, hi: int, what: str) -> np.ndarray:
    r = np.round(x)
    if not np.array_equal(r, x) or (r < lo).any() or (r > hi).any():
        raise EncodeError(f"{what} are not integers in [{lo}, {hi}]")
    return r.astype(np.int64)


def _nibbles(q: np.ndarray, half: int) -> np.ndarray:
    """[n, 2*half] values 0..15 -> [n, half] bytes: low nibble q[i], high nibble q[i + half]."""
    return (q[:, :half] | (q[:, half:] << 4)).astype(np.uint8)


def _bits_across(q: np.ndarray, width: int, nbits: int) -> np.ndarray:
    """Pack [n, groups * (8 / nbits) * width] values so byte (g, i) holds value g*(8/nbits)*width + s*width + i
    at bit nbits*s (gguf-py's ``reshape(n, -1, 1, width) >> shifts`` unpacking)."""
    n = q.shape[0]
    per = 8 // nbits
    v = q.reshape(n, -1, per, width).astype(np.uint32)
    out = np.zeros((n, v.shape[1], width), np.uint32)
    for s in range(per):
        out |= (v[:, :, s, :] & ((1 << nbits) - 1)) << (nbits * s)
    return out.reshape(n, -1).astype(np.uint8)


def encode(q: QuantizedTensor) -> tuple[np.ndarray, str]:
    """``(bytes [rows, row_bytes], type name)`` for a tensor whose ``layout`` is ``gguf.<TYPE>``."""
    if not q.layout or not q.layout.startswith("gguf."):
        raise EncodeError(f"{q!r} is not on a GGUF grid (layout {q.layout!r}); quantize it with quantize{{gguf=...}}")
    t = TYPES.get(q.layout.split(".", 1)[1])
    if t is None:
        raise EncodeError(f"unknown GGUF layout {q.layout!r}")
    if q.codes.ndim != 2 or q.shape[1] % t.block:
        raise EncodeError(f"{t.name} needs 2-D weights whose rows are multiples of {t.block}, got {list(q.shape)}")
    out, k = q.shape
    n = out * k // t.block
    codes = q.codes.astype(np.int64).reshape(n, t.block)
    scales = np.asarray(q.scales, np.float32).reshape(out, -1)
    if scales.shape[1] != k // t.sub:
        raise EncodeError(f"{t.name} needs one scale per {t.sub} weights")
    scales = scales.reshape(n, t.block // t.sub)
    offsets = None if q.offsets is None else np.asarray(q.offsets, np.float32).reshape(n, t.block // t.sub)
    fn = _ENCODERS[t.family]
    blocks = fn(t, codes, scales, offsets, q.layout_params or {}, n)
    return blocks.reshape(out, -1), t.name


def _sym(t: GGUFType, codes, scales, offsets, lp, n):
    d = _f16_exact(scales[:, 0], f"{t.name} block scales").view(np.uint8).reshape(n, 2)
    if t.name == "Q8_0":
        return np.concatenate([d, codes.astype(np.int8).view(np.uint8)], axis=1)
    u = codes - t.qmin  # stored unsigned: code + 8 (Q4_0) or + 16 (Q5_0)
    qs = _nibbles(u & 0xF, 16)
    if t.name == "Q4_0":
        return np.concatenate([d, qs], axis=1)
    qh = _qh32(u)
    return np.concatenate([d, qh, qs], axis=1)


def _qh32(u: np.ndarray) -> np.ndarray:
    bits = ((u >> 4) & 1).astype(np.uint32)
    word = (bits << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    return word.astype("<u4").view(np.uint8).reshape(-1, 4)


def _affine(t: GGUFType, codes, scales, offsets, lp, n):
    d = _f16_exact(scales[:, 0], f"{t.name} block scales").view(np.uint8).reshape(n, 2)
    m = _f16_exact(offsets[:, 0], f"{t.name} block mins").view(np.uint8).reshape(n, 2)
    qs = _nibbles(codes & 0xF, 16)
    if t.name == "Q4_1":
        return np.concatenate([d, m, qs], axis=1)
    return np.concatenate([d, m, _qh32(codes), qs], axis=1)


def _nl(t: GGUFType, codes, scales, offsets, lp, n):
    d = _f16_exact(scales[:, 0], "IQ4_NL block scales").view(np.uint8).reshape(n, 2)
    return np.concatenate([d, _nibbles(codes & 0xF, 16)], axis=1)


def _super(lp: dict, key: str, n: int) -> np.ndarray:
    if key not in lp:
        raise EncodeError(f"K-quant tensor lacks its super-block {key!r}")
    return np.asarray(lp[key], np.float16).reshape(n)


def _sub_ints(vals: np.ndarray, d: np.ndarray, lo: int, hi: int, what: str) -> np.ndarray:
    d32 = d.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d32 != 0, vals / d32, 0.0)
    ints = _int_exact(r, lo, hi, what)
    if not np.array_equal((d32 * ints.astype(np.float32)).astype(np.float32), vals):
        raise EncodeError(f"{what} times the super-block scale do not reproduce the stored scales")
    return ints


def _kaffine(t: GGUFType, codes, scales, offsets, lp, n):
    d, dmin = _super(lp, "d", n), _super(lp, "dmin", n)
    sc = _sub_ints(scales, d, 0, t.sc_max, f"{t.name} sub-block scales")
    mi = _sub_ints(-offsets, dmin, 0, t.sc_max, f"{t.name} sub-block mins")
    dd = d.view(np.uint8).reshape(n, 2)
    dm = dmin.view(np.uint8).reshape(n, 2)
    if t.name == "Q2_K":
        sbytes = (sc | (mi << 4)).astype(np.uint8)
        qs = _bits_across(codes, 32, 2)
        return np.concatenate([sbytes, qs, dd, dm], axis=1)
    s12 = np.zeros((n, 12), np.uint8)
    for i in range(4):
        s12[:, i] = sc[:, i] | ((sc[:, 4 + i] >> 4) << 6)
        s12[:, 4 + i] = mi[:, i] | ((mi[:, 4 + i] >> 4) << 6)
        s12[:, 8 + i] = (sc[:, 4 + i] & 0xF) | ((mi[:, 4 + i] & 0xF) << 4)
    ql = codes & 0xF
    qs = np.concatenate([_nibbles(ql[:, g * 64 : (g + 1) * 64], 32) for g in range(4)], axis=1)
    if t.name == "Q4_K":
        return np.concatenate([dd, dm, s12, qs], axis=1)
    qh = _bits_across(codes >> 4, 32, 1)  # Q5_K: bit b of byte i is value b*32 + i
    return np.concatenate([dd, dm, s12, qh, qs], axis=1)


def _ksym(t: GGUFType, codes, scales, offsets, lp, n):
    d = _super(lp, "d", n)
    sc = _sub_ints(scales, d, t.sc_min, t.sc_max, f"{t.name} sub-block scales")
    dd = d.view(np.uint8).reshape(n, 2)
    if t.name == "Q3_K":
        u = codes + 4
        hmask = _bits_across(u >> 2, 32, 1)
        qs = _bits_across(u & 3, 32, 2)
        us = sc + 32
        s12 = np.zeros((n, 12), np.uint8)
        for k in range(8):
            s12[:, k] = (us[:, k] & 0xF) | ((us[:, k + 8] & 0xF) << 4)
        for b in range(4):
            s12[:, 8 + b] = sum((((us[:, s * 4 + b] >> 4) & 3) << (2 * s)) for s in range(4))
        return np.concatenate([hmask, qs, s12, dd], axis=1)
    u = codes + 32  # Q6_K
    lo = u & 0xF
    ql = np.concatenate([_nibbles(lo[:, g * 128 : (g + 1) * 128], 64) for g in range(2)], axis=1)
    qh = _bits_across(u >> 4, 32, 2)
    return np.concatenate([ql, qh, sc.astype(np.int8).view(np.uint8), dd], axis=1)


_ENCODERS = {"sym": _sym, "affine": _affine, "nl": _nl, "kaffine": _kaffine, "ksym": _ksym}
