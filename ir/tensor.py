"""Constant data: plain tensors and quantized tensors.

Quantization is a property of the *data*: a weight whose value is a :class:`QuantizedTensor` still feeds
an ordinary ``MatMul`` or ``Conv``; each target decides how to encode it. The quantization grid is
explicit (integer codes, scales, zero points, codebook), so ``dequantize()`` defines the exact numbers
every target must reproduce.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from .dtypes import DType, code_range
from .schemes import SCHEMES, Scheme

SchemeName = Literal["symmetric", "asymmetric", "affine", "codebook", "vector"]


def release_pages(a: np.ndarray) -> None:
    """``madvise(MADV_DONTNEED)`` on the whole pages of a read-only memory-mapped array (others: no-op)."""
    import mmap

    mm = getattr(a, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED") or a.size == 0:
        return
    try:
        base = np.frombuffer(mm, np.uint8).ctypes.data
    except (TypeError, ValueError):  # a writable or closed map: leave it alone
        return
    lo = a.ctypes.data - base
    page = mmap.PAGESIZE
    start, end = -(-lo // page) * page, (lo + a.nbytes) // page * page
    if 0 <= start < end <= len(mm):
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)


class Tensor:
    """An immutable constant. ``data`` may be a read-only memory map; it is never copied eagerly."""

    __slots__ = ("_data", "dtype", "__weakref__")  # weakly referenced: the verifier remembers checks of immutable data

    def __init__(self, data: np.ndarray, dtype: DType | None = None):
        if not isinstance(data, np.ndarray):
            data = np.asarray(data)
        self.dtype = dtype if dtype is not None else DType.from_numpy(data.dtype)
        if isinstance(data, np.memmap) or not data.flags.writeable:
            self._data = data
        else:
            # Freeze our own view; callers keep their array writable.
            self._data = data.view()
            self._data.flags.writeable = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def nbytes(self) -> int:
        """Bytes this tensor occupies when stored packed (sub-byte types count their bits)."""
        return (int(np.prod(self.shape, dtype=np.int64)) * self.dtype.bits + 7) // 8

    def numpy(self) -> np.ndarray:
        """The logical values (read-only)."""
        return self._data

    def digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self._data).tobytes()).hexdigest()[:16]

    def release(self) -> None:
        """Drop the resident pages of a memory-mapped tensor (a hint, no change in value): the pages are
        clean copies of the file and fault back in if read again. Passes that replace weights one layer at
        a time call it (through :meth:`Graph.remove_const`) so the process does not keep every float
        weight it has already quantized resident."""
        release_pages(self._data)

    def __repr__(self) -> str:
        return f"Tensor({self.dtype.short}{list(self.shape)})"


# (weights per block, bytes per block) of storage layouts whose size is not codes + float32 parameters, by
# layout name. The IR knows no format: the module that defines one registers its layouts when imported (the GGUF
# block types: ``edgec.api.gguf``, which the quantize passes and the gguf target import).
_LAYOUT_BLOCKS: dict[str, tuple[int, int]] = {}


def register_layout(name: str, block_elems: int, block_bytes: int) -> None:
    """Declare the storage layout ``name`` (a :attr:`QuantizedTensor.layout`): every ``block_elems`` weights are
    stored in ``block_bytes`` bytes. Registering the same numbers again is harmless; other numbers for a name
    already registered are a ValueError."""
    if not (isinstance(block_elems, int) and isinstance(block_bytes, int) and block_elems > 0 and block_bytes > 0):
        raise ValueError(
            f"storage layout {name!r}: weights and bytes per block must be positive integers, got "
            f"{block_elems!r} and {block_bytes!r}"
        )
    old = _LAYOUT_BLOCKS.get(name)
    if old is not None and old != (block_elems, block_bytes):
        raise ValueError(
            f"storage layout {name!r} is registered as {old[0]} weights in {old[1]} bytes; it cannot "
            f"also be {block_elems} weights in {block_bytes} bytes"
        )
    _LAYOUT_BLOCKS[name] = (block_elems, block_bytes)


def layout_block(name: str) -> tuple[int, int]:
    """``(weights per block, bytes per block)`` of the registered storage layout ``name``."""
    block = _LAYOUT_BLOCKS.get(name)
    if block is None:
        known = ", ".join(sorted(_LAYOUT_BLOCKS)) or "none"
        raise ValueError(
            f"storage layout {name!r} is not registered, so the size of a tensor stored in it is unknown: "
            "the module defining a layout registers it with edgec.ir.tensor.register_layout when imported "
            f"(gguf.* layouts: import edgec.api.gguf). Registered: {known}"
        )
    return block


def expand_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Repeat a blocked parameter (same rank, each dim 1, full, or a divisor) up to ``shape``."""
    out = param
    for d, (p, s) in enumerate(zip(param.shape, shape)):
        if p != s and p != 1:
            out = np.repeat(out, s // p, axis=d)
    return np.broadcast_to(out, shape)


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A quantized weight with its exact grid.

    Dequantization:
      * ``symmetric``:  ``w = codes * scale`` with signed codes.
      * ``asymmetric``: ``w = (codes - zero_point) * scale`` with unsigned codes.
      * ``affine``:     ``w = codes * scale + offset`` with unsigned codes and a float offset per block (the
        "scale and min" form of GGUF's Q4_1/Q5_1/K-quants, where ``offset = -(dmin * m)``).
      * ``codebook``:   ``w = codebook[codes]`` per tensor (codebook ``[n]``), per channel along ``axis``
        (``[C, n]``), or per group of ``group_size`` along ``group_axis`` within each channel of a 2-D weight
        (``[C, K / group_size, n]``); times ``scale`` when scales are given (e.g. NF4 absmax scaling).
      * ``vector``:     vector quantization of a 2-D weight ``[O, K]``: each run of ``vector_dim`` consecutive
        elements of a row is one code, ``codes [O, K / vector_dim]``, and
        ``w[o, k0:k0+d] = codebook[o // (O / R), k0 // group_size, codes[o, k0 / d]]``: one codebook ``[n, d]``
        per block of ``O / R`` rows and ``group_size`` columns, ``codebook [R, K / group_size, n, d]``,
        ``group_axis=1``. ``bits`` is the width of one index (``vector_dim * bits_per_weight``, up to 16);
        ``codebook_bits`` says how the codebooks are stored: 16 (every entry a float16 value) or 8 (every
        entry ``int8 * 2**e`` with one exponent per codebook, exact in float16 too); None: as the array is.

    ``scales`` (and ``zero_points``) have the same rank as ``codes``; each dimension is 1 (shared), the
    full extent (per element/channel) or ``extent / group_size`` along ``group_axis`` (group-wise).
    ``axis`` names the per-channel axis (None: per tensor).

    ``layout`` names a storage format whose block grid the tensor lies on exactly (``"gguf.Q4_K"`` ...);
    ``layout_params`` holds what that format stores beyond the per-block scales (e.g. the K-quants'
    per-super-block ``d``/``dmin``), so a target writes the format without re-rounding anything.
    All float arithmetic is float32, in the order written above.
    """

    codes: np.ndarray
    bits: int
    scheme: SchemeName
    scales: np.ndarray | None = None
    zero_points: np.ndarray | None = None
    axis: int | None = None
    group_size: int | None = None
    group_axis: int | None = None
    codebook: np.ndarray | None = None
    dtype: DType = DType.FLOAT32
    method: str = "rtn"
    offsets: np.ndarray | None = None
    layout: str | None = None
    layout_params: dict[str, Any] | None = None
    vector_dim: int = 1
    codebook_bits: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        if self.vector_dim > 1:
            return tuple(self.codes.shape[:-1]) + (self.codes.shape[-1] * self.vector_dim,)
        return tuple(self.codes.shape)

    @property
    def bits_per_weight(self) -> float:
        """Index bits per weight element (codebooks, scales and zero points not counted: see :attr:`nbytes`)."""
        return self.bits / self.vector_dim

    @property
    def scheme_type(self) -> Scheme:
        """The :class:`~edgec.ir.schemes.Scheme` that ``scheme`` names (KeyError for an unknown name)."""
        return SCHEMES[self.scheme]

    @property
    def signed(self) -> bool:
        return self.scheme_type.signed

    @property
    def nbytes(self) -> int:
        """Packed storage size: codes at ``bits`` each plus scales, zero points and codebook (for a tensor
        with a ``layout``, the exact bytes of its blocks: :func:`register_layout`)."""
        if self.layout:
            elems, nbytes = layout_block(self.layout)
            return int(np.prod(self.shape, dtype=np.int64)) // elems * nbytes
        n = (int(np.prod(self.codes.shape, dtype=np.int64)) * self.bits + 7) // 8
        for p in (self.scales, self.zero_points, self.codebook, self.offsets):
            if p is not None:
                n += (
                    p.nbytes
                    if (p is not self.codebook or not self.codebook_bits)
                    else (p.size * self.codebook_bits + 7) // 8
                )
        if self.codebook_bits == 8 and self.codebook is not None:
            n += int(np.prod(self.codebook.shape[:-2]))  # one exponent byte per [n, d] codebook
        return n

    def params(self) -> dict[str, np.ndarray]:
        """Every array besides the codes, by name (``layout.*`` for the layout's own)."""
        out = {
            k: getattr(self, k)
            for k in ("scales", "zero_points", "codebook", "offsets")
            if getattr(self, k) is not None
        }
        out.update({f"layout.{k}": v for k, v in (self.layout_params or {}).items()})
        return out

    def take_rows(self, idx: np.ndarray) -> "QuantizedTensor":
        """The same tensor with its rows (axis 0) reordered; codes and per-row parameters move together."""
        return self.scheme_type.take_rows(self, idx)

    def transposed(self) -> "QuantizedTensor | None":
        """The 2-D transpose on the same grid; None where the scheme has no such form (:meth:`Scheme.transposed`)."""
        return self.scheme_type.transposed(self)

    def validate(self) -> list[str]:
        """Return every way this tensor breaks its own invariants (empty when valid)."""
        errs: list[str] = []
        if self.scheme not in SCHEMES:
            errs.append(f"scheme {self.scheme!r} is not one of {tuple(SCHEMES)}")
            return errs
        kind = self.scheme_type
        if not 1 <= self.bits <= kind.max_bits:
            errs.append(f"bits must be 1..{kind.max_bits}, got {self.bits}")
            return errs
        if self.codes.dtype.kind not in "iu":
            errs.append(f"codes must be integers, got {self.codes.dtype}")
            return errs
        rank = self.codes.ndim
        for name, ax in (("axis", self.axis), ("group_axis", self.group_axis)):
            if ax is not None and not 0 <= ax < rank:
                errs.append(f"{name}={ax} out of range for rank {rank}")
        if self.group_size is not None:
            if self.group_axis is None:
                errs.append("group_size is set but group_axis is not")
            elif self.group_size <= 0 or self.shape[self.group_axis] % self.group_size:
                errs.append(
                    f"group_size={self.group_size} does not divide dim {self.group_axis} "
                    f"(extent {self.shape[self.group_axis]})"
                )
        return errs + kind.errors(self)

    def dequantize(self) -> np.ndarray:
        """The exact values this quantized tensor stands for, in ``dtype``."""
        return self.scheme_type.dequantize(self)

    def numpy(self) -> np.ndarray:
        """Alias of :meth:`dequantize`, so plain and quantized constants read alike."""
        return self.dequantize()

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.codes).tobytes())
        for k, p in self.params().items():
            h.update(k.encode() + np.ascontiguousarray(p).tobytes())
        h.update(f"{self.bits}{self.scheme}{self.axis}{self.group_size}{self.group_axis}{self.layout}".encode())
        if self.vector_dim > 1 or self.codebook_bits:
            h.update(f"v{self.vector_dim}c{self.codebook_bits}".encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (for manifests and reports)."""
        return {
            "bits": self.bits,
            "scheme": self.scheme,
            "axis": self.axis,
            "group_size": self.group_size,
            "group_axis": self.group_axis,
            "method": self.method,
            "bytes": self.nbytes,
            **({"layout": self.layout} if self.layout else {}),
            **self.scheme_type.describe(self),
        }

    def __repr__(self) -> str:
        return self.scheme_type.label(self)


def vector_bases(codebook_shape: tuple[int, ...], dtype: npt.DTypeLike = np.int64) -> np.ndarray:
    """``[R, 1, G, 1]``: where each codebook's entries start in the flattened codebooks ``[R * G * n, d]``
    (``n * (r * G + g)``), to add to the codes viewed as ``[R, O / R, G, K / G / d]``."""
    r, g, n, _ = codebook_shape
    return ((np.arange(r, dtype=dtype)[:, None] * g + np.arange(g, dtype=dtype)) * n).reshape(r, 1, g, 1)


def vector_index(codes: np.ndarray, codebook_shape: tuple[int, ...]) -> np.ndarray:
    """Row ``[O, K / d]`` indices into the flattened codebooks ``[R * G * n, d]``: ``code + n * (r * G + g)``."""
    rows, nv = codes.shape
    r, g = codebook_shape[:2]
    idx = codes.astype(np.int64).reshape(r, rows // r, g, nv // g) + vector_bases(codebook_shape)
    return cast(np.ndarray, idx.reshape(rows, nv))


def decode_vectors(codes: np.ndarray, codebook: np.ndarray, group_size: int) -> np.ndarray:
    """``[O, K]`` float32 from vector codes ``[O, K / d]`` and codebooks ``[R, K / group_size, n, d]``."""
    r, g, n, d = codebook.shape
    flat = np.asarray(codebook, np.float32).reshape(r * g * n, d)
    return cast(np.ndarray, flat[vector_index(codes, codebook.shape)]).reshape(codes.shape[0], codes.shape[1] * d)


def pow2_int8(codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each codebook (the last two axes, ``[entries, dim]``) as ``int8 * 2**e``: the exponent per codebook (the
    smallest with every entry within +-127 steps) and the rounded values (float32, exact in float16)."""
    cb = np.asarray(codebook, np.float32)
    lead = cb.reshape(-1, cb.shape[-2] * cb.shape[-1])
    amax = np.abs(lead).max(1)
    e = np.ceil(np.log2(np.where(amax > 0, amax, 1.0) / 127.0)).astype(np.int32)
    e = np.clip(e, -24, 9)  # float16 holds every int8 * 2**e for -24 <= e <= 9 (127 * 2**9 < 65504)
    step = np.ldexp(1.0, e).astype(np.float32)
    q = np.clip(np.round(lead / step[:, None]), -127, 127)
    return e.reshape(cb.shape[:-2]), (q * step[:, None]).astype(np.float32).reshape(cb.shape)


def codebook_storage_errors(cb: np.ndarray, codebook_bits: int | None) -> list[str]:
    """How a codebook breaks its declared storage (``codebook_bits`` 16: float16 values; 8: int8 * 2**e)."""
    if codebook_bits is None:
        return []
    a = np.asarray(cb, np.float32)
    if codebook_bits == 16:
        return (
            []
            if np.array_equal(a.astype(np.float16).astype(np.float32), a)
            else ["codebook_bits=16 but some codebook entries are not float16 values"]
        )
    if codebook_bits == 8:
        return (
            []
            if np.array_equal(pow2_int8(a)[1], a)
            else ["codebook_bits=8 but some codebook entries are not int8 * 2**e (one exponent per codebook)"]
        )
    return [f"codebook_bits must be 8, 16 or unset, got {codebook_bits}"]


@dataclasses.dataclass(frozen=True)
class ActivationQuant:
    """Calibrated quantization parameters of an activation (per tensor)."""

    scale: float
    zero_point: int = 0
    bits: int = 8
    signed: bool = True
    observer: str = "minmax"

    def validate(self) -> list[str]:
        errs = []
        if not self.scale > 0 or not np.isfinite(self.scale):
            errs.append(f"activation scale must be positive and finite, got {self.scale}")
        lo, hi = code_range(self.bits, self.signed)
        if not lo <= self.zero_point <= hi:
            errs.append(f"zero_point {self.zero_point} outside [{lo}, {hi}]")
        return errs


@dataclasses.dataclass(frozen=True)
class Sparsity:
    """Sparsity of a weight: an N:M pattern along ``axis`` and/or plain unstructured sparsity."""

    n: int | None = None
    m: int | None = None
    axis: int = -1
    ratio: float | None = None

    def validate(self, data: np.ndarray | None) -> list[str]:
        errs = []
        if (self.n is None) != (self.m is None):
            errs.append("N:M sparsity needs both n and m")
        elif self.n is not None:
            m = cast(int, self.m)  # set with n (checked above)
            if not 0 < self.n < m:
                errs.append(f"N:M sparsity needs 0 < n < m, got {self.n}:{self.m}")
            elif data is not None:
                moved = np.moveaxis(data, self.axis, -1)
                if moved.shape[-1] % m:
                    errs.append(f"dim {self.axis} extent {moved.shape[-1]} is not a multiple of m={self.m}")
                else:
                    nz = (moved.reshape(-1, m) != 0).sum(axis=1)
                    if (nz > self.n).any():
                        errs.append(f"{int((nz > self.n).sum())} blocks break the {self.n}:{self.m} pattern")
        return errs
