"""Quantization schemes as types.

A :class:`~edgec.ir.tensor.QuantizedTensor` names its scheme by a string (``"symmetric"`` ...), which is what IR
files, manifests and artifacts record; :data:`SCHEMES` maps that name to the :class:`Scheme` object that owns
everything the name decides: the fields the tensor must and must not carry (``errors``), the reference
dequantization every target reproduces (``dequantize``), the code range and signedness of the integer codes,
the grid's exact zero, and what the scheme adds to ``describe()`` and ``repr()``. ``QuantizedTensor.scheme_type``
returns the object, so code asks it (``q.scheme_type.has_zero_point``) instead of comparing names.

The classes hold no state: one instance per scheme, shared.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from .dtypes import code_range

if TYPE_CHECKING:
    from .tensor import QuantizedTensor


class Scheme:
    """What one quantization scheme means: see the module's docstring. Subclasses set the class attributes."""

    name: ClassVar[str]
    #: the integer codes are signed (two's complement around 0) rather than unsigned
    signed: ClassVar[bool] = False
    #: the tensor carries zero points (the codes are shifted by them before scaling)
    has_zero_point: ClassVar[bool] = False
    #: the tensor carries per-block float offsets added after scaling
    has_offsets: ClassVar[bool] = False
    #: the codes index a table of values (a codebook) rather than a uniform grid
    indexes_codebook: ClassVar[bool] = False
    #: the widest code, in bits
    max_bits: ClassVar[int] = 8

    def __repr__(self) -> str:
        return f"<scheme {self.name}>"

    def code_range(self, bits: int) -> tuple[int, int]:
        """The smallest and largest code of a ``bits``-bit code of this scheme."""
        return code_range(bits, self.signed)

    # ---- validation -----------------------------------------------------------------------------------------
    def errors(self, q: QuantizedTensor) -> list[str]:
        """Every way ``q`` breaks this scheme's rules (the checks on bits, code dtype, axes and groups common to
        every scheme come first, in :meth:`QuantizedTensor.validate`)."""
        errs: list[str] = []
        if q.vector_dim != 1 or q.codebook_bits is not None:
            errs.append(
                f"vector_dim={q.vector_dim}, codebook_bits={q.codebook_bits}: each needs the vector "
                "scheme (1 and None otherwise)"
            )
        errs += self.field_errors(q)
        if q.offsets is not None and not self.has_offsets:
            errs.append("only the affine scheme carries offsets")
        return errs + _param_shape_errors(q)

    def field_errors(self, q: QuantizedTensor) -> list[str]:
        """The fields this scheme needs or forbids, and the range of its codes."""
        raise NotImplementedError

    # ---- meaning --------------------------------------------------------------------------------------------
    def dequantize(self, q: QuantizedTensor) -> np.ndarray:
        """The exact values ``q`` stands for, in ``q.dtype`` (the arithmetic in float32)."""
        raise NotImplementedError

    def exact_zero(self, q: QuantizedTensor, zero: np.ndarray) -> QuantizedTensor | None:
        """``q`` with the positions in ``zero`` set to the grid's exact zero; None when the grid has none."""
        return None

    def take_rows(self, q: QuantizedTensor, idx: np.ndarray) -> QuantizedTensor:
        """``q`` with its rows (axis 0) reordered; codes and per-row parameters move together."""

        def pick(p: np.ndarray | None) -> np.ndarray | None:
            if p is None or p.ndim == 0 or p.shape[0] == 1:
                return p
            return np.ascontiguousarray(p[idx])

        lp = None if q.layout_params is None else {k: pick(v) for k, v in q.layout_params.items()}
        return dataclasses.replace(
            q,
            codes=np.ascontiguousarray(q.codes[idx]),
            scales=pick(q.scales),
            zero_points=pick(q.zero_points),
            offsets=pick(q.offsets),
            codebook=pick(q.codebook) if (q.codebook is not None and q.codebook.ndim > 1) else q.codebook,
            layout_params=lp,
        )

    def transposed(self, q: QuantizedTensor) -> QuantizedTensor | None:
        """The 2-D transpose of ``q`` on the same grid (a MatMul's ``[in, out]`` weight as a Linear's
        ``[out, in]``); None where this scheme has no such form (codebooks, vectors)."""
        return None

    def describe(self, q: QuantizedTensor) -> dict[str, Any]:
        """What this scheme adds to :meth:`QuantizedTensor.describe`."""
        return {}

    def label(self, q: QuantizedTensor) -> str:
        g = f", group={q.group_size}" if q.group_size else ""
        return f"QuantizedTensor({self.name} {q.bits}b {list(q.shape)}, axis={q.axis}{g})"


class _Grid(Scheme):
    """A uniform grid: ``(code - zero_point) * scale + offset``, the zero point and offset where the scheme has
    them."""

    def field_errors(self, q: QuantizedTensor) -> list[str]:
        errs: list[str] = []
        lo, hi = self.code_range(q.bits)
        if q.codes.size and (q.codes.min() < lo or q.codes.max() > hi):
            errs.append(
                f"codes lie in [{q.codes.min()}, {q.codes.max()}], outside the {q.bits}-bit "
                f"{'signed' if self.signed else 'unsigned'} range [{lo}, {hi}]"
            )
        if q.scales is None:
            errs.append(f"{self.name} scheme needs scales")
        if self.has_zero_point and q.zero_points is None:
            errs.append(f"{self.name} scheme needs zero_points")
        if not self.has_zero_point and q.zero_points is not None:
            errs.append(f"{self.name} scheme must not carry zero_points")
        if self.has_offsets and q.offsets is None:
            errs.append(f"{self.name} scheme needs offsets")
        return errs

    def dequantize(self, q: QuantizedTensor) -> np.ndarray:
        from .tensor import expand_blocks

        if q.group_size and q.codes.ndim == 2 and q.group_axis == 1:
            # [rows, G, gs] with parameters [rows|1, G, 1]: broadcasting, in place, one full-size buffer.
            rows, k = q.shape
            w = q.codes.astype(np.float32).reshape(rows, k // q.group_size, q.group_size)

            def p(a: np.ndarray) -> np.ndarray:
                return np.asarray(a, np.float32).reshape(a.shape[0], -1, 1)

            if q.zero_points is not None:
                w -= p(q.zero_points)
            w *= p(cast(np.ndarray, q.scales))
            if q.offsets is not None:
                w += p(q.offsets)
            return w.reshape(rows, k).astype(q.dtype.numpy, copy=False)
        c = q.codes.astype(np.float32)
        if q.zero_points is not None:
            c = c - expand_blocks(q.zero_points.astype(np.float32), q.shape)
        w = c * expand_blocks(cast(np.ndarray, q.scales).astype(np.float32), q.shape)
        if q.offsets is not None:
            w = w + expand_blocks(q.offsets.astype(np.float32), q.shape)
        return cast(np.ndarray, w.astype(q.dtype.numpy))

    def transposed(self, q: QuantizedTensor) -> QuantizedTensor | None:
        if q.codes.ndim != 2 or q.layout:  # a storage layout's blocks run along one axis
            return None

        def t(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.ascontiguousarray(np.asarray(a).T)

        def swap(ax: int | None) -> int | None:
            return None if ax is None else 1 - ax

        return dataclasses.replace(
            q,
            codes=np.ascontiguousarray(q.codes.T),
            scales=t(q.scales),
            zero_points=t(q.zero_points),
            offsets=t(q.offsets),
            axis=swap(q.axis),
            group_axis=swap(q.group_axis),
        )


class Symmetric(_Grid):
    """Signed codes times a scale: ``code * scale``; code 0 is the exact zero."""

    name = "symmetric"
    signed = True

    def exact_zero(self, q: QuantizedTensor, zero: np.ndarray) -> QuantizedTensor | None:
        codes = np.array(q.codes, copy=True)
        codes[zero] = 0
        return dataclasses.replace(q, codes=codes)


class Asymmetric(_Grid):
    """Unsigned codes with a zero point: ``(code - zero_point) * scale``; the zero point is the exact zero."""

    name = "asymmetric"
    has_zero_point = True

    def exact_zero(self, q: QuantizedTensor, zero: np.ndarray) -> QuantizedTensor | None:
        from .tensor import expand_blocks

        codes = np.array(q.codes, copy=True)
        zp = expand_blocks(np.asarray(q.zero_points), q.shape)
        codes[zero] = zp[zero]
        return dataclasses.replace(q, codes=codes)


class Affine(_Grid):
    """Unsigned codes times a scale plus a float offset: ``code * scale + offset`` (no exact zero)."""

    name = "affine"
    has_offsets = True


class Codebook(Scheme):
    """Codes index a palette (per tensor ``[n]``, per channel ``[C, n]`` or per group ``[C, K / gs, n]``),
    optionally times a scale: ``codebook[code] * scale``."""

    name = "codebook"
    indexes_codebook = True

    def field_errors(self, q: QuantizedTensor) -> list[str]:
        errs: list[str] = []
        if q.codebook is None:
            return ["codebook scheme needs a codebook"]
        n = q.codebook.shape[-1]
        if n > (1 << q.bits):
            errs.append(f"codebook has {n} entries, more than 2**bits={1 << q.bits}")
        if q.codes.size and (q.codes.min() < 0 or q.codes.max() >= n):
            errs.append(f"codes index outside the codebook's {n} entries")
        if q.codebook.ndim == 2 and (q.axis is None or q.codebook.shape[0] != q.shape[q.axis]):
            errs.append("a per-channel codebook needs axis set and one row per channel")
        if q.codebook.ndim == 3 and (
            len(q.shape) != 2
            or q.axis != 0
            or q.group_axis != 1
            or not q.group_size
            or q.codebook.shape[:2] != (q.shape[0], q.shape[1] // q.group_size)
        ):
            errs.append(
                "a per-group codebook needs a 2-D weight, axis=0, group_axis=1 and shape "
                "[channels, K / group_size, entries]"
            )
        return errs

    def dequantize(self, q: QuantizedTensor) -> np.ndarray:
        from .tensor import expand_blocks

        cb = cast(np.ndarray, q.codebook).astype(np.float32)
        if cb.ndim == 1:
            w = cb[q.codes.astype(np.int64)]
        elif cb.ndim == 3:
            rows, k = q.shape
            gs = cast(int, q.group_size)
            idx = q.codes.astype(np.int64).reshape(rows, k // gs, gs)
            w = np.take_along_axis(cb, idx, axis=2).reshape(rows, k)
        else:
            idx = q.codes.astype(np.int64)
            moved = np.moveaxis(idx, cast(int, q.axis), 0)
            w = np.take_along_axis(cb, moved.reshape(moved.shape[0], -1), axis=1).reshape(moved.shape)
            w = np.moveaxis(w, 0, cast(int, q.axis))
        if q.scales is not None:
            w = w * expand_blocks(q.scales.astype(np.float32), q.shape)
        return w.astype(q.dtype.numpy)

    def exact_zero(self, q: QuantizedTensor, zero: np.ndarray) -> QuantizedTensor | None:
        """The entry nearest zero of each palette becomes exactly 0; the pruned positions take it (the weights
        that were coded to that entry keep it: they were the ones nearest zero)."""
        codes = np.array(q.codes, copy=True)
        cb = np.array(q.codebook, np.float32, copy=True)
        near = np.argmin(np.abs(cb), axis=-1)  # per palette
        np.put_along_axis(cb, near[..., None], 0.0, axis=-1)
        if cb.ndim == 1:
            pick = np.full(q.shape, near, codes.dtype)
        elif cb.ndim == 2:
            shape = [1] * codes.ndim
            shape[cast(int, q.axis)] = -1
            pick = np.broadcast_to(near.reshape(shape), q.shape)
        else:
            pick = np.repeat(near, cast(int, q.group_size), axis=1)
        codes[zero] = pick[zero].astype(codes.dtype)
        return dataclasses.replace(q, codes=codes, codebook=cb)

    def take_rows(self, q: QuantizedTensor, idx: np.ndarray) -> QuantizedTensor:
        if q.codebook is not None and q.codebook.ndim > 1 and q.axis != 0:
            raise ValueError("cannot reorder rows of a codebook tensor whose palettes are not per row")
        return super().take_rows(q, idx)


class Vector(Scheme):
    """Codes ``[O, K / d]`` index ``d``-dimensional vectors in codebooks ``[row blocks, K / group_size, n, d]``."""

    name = "vector"
    indexes_codebook = True
    max_bits = 16

    def errors(self, q: QuantizedTensor) -> list[str]:
        from .tensor import codebook_storage_errors

        errs: list[str] = []
        d, cb = q.vector_dim, q.codebook
        if q.codes.ndim != 2:
            return [
                f"vector quantization needs a 2-D weight (codes [O, K / vector_dim]); codes have rank {q.codes.ndim}"
            ]
        if d < 1:
            return [f"vector_dim must be positive, got {d}"]
        if cb is None or cb.ndim != 4 or cb.shape[-1] != d:
            return [
                f"vector codebooks have shape [row blocks, column groups, entries, vector_dim={d}]; got "
                f"{None if cb is None else list(cb.shape)}"
            ]
        o, k = q.shape
        if o % cb.shape[0]:
            errs.append(f"{cb.shape[0]} row blocks do not divide the weight's {o} rows")
        if q.group_axis != 1 or not q.group_size or q.group_size % d or k % q.group_size:
            errs.append(
                f"group_size={q.group_size} (group_axis={q.group_axis}) must be a multiple of "
                f"vector_dim={d} dividing K={k}, along group_axis=1"
            )
        elif cb.shape[1] != k // q.group_size:
            errs.append(f"the codebooks have {cb.shape[1]} column groups; K / group_size = {k // q.group_size}")
        if cb.shape[2] > (1 << q.bits):
            errs.append(f"codebook has {cb.shape[2]} entries, more than 2**bits={1 << q.bits}")
        if q.codes.size and (q.codes.min() < 0 or q.codes.max() >= cb.shape[2]):
            errs.append(f"codes index outside the codebook's {cb.shape[2]} entries")
        if q.axis is not None or any(p is not None for p in (q.scales, q.zero_points, q.offsets)):
            errs.append("a vector-quantized tensor carries no axis, scales, zero points or offsets")
        errs += codebook_storage_errors(cb, q.codebook_bits)
        return errs

    def dequantize(self, q: QuantizedTensor) -> np.ndarray:
        from .tensor import decode_vectors

        return decode_vectors(q.codes, cast(np.ndarray, q.codebook), cast(int, q.group_size)).astype(q.dtype.numpy)

    def take_rows(self, q: QuantizedTensor, idx: np.ndarray) -> QuantizedTensor:
        if cast(np.ndarray, q.codebook).shape[0] != 1:
            raise ValueError("cannot reorder rows of a vector tensor whose codebooks belong to row blocks")
        return dataclasses.replace(q, codes=np.ascontiguousarray(q.codes[idx]))

    def describe(self, q: QuantizedTensor) -> dict[str, Any]:
        return {"vector_dim": q.vector_dim, "bits_per_weight": q.bits_per_weight, "codebook_bits": q.codebook_bits}

    def label(self, q: QuantizedTensor) -> str:
        g = f", group={q.group_size}" if q.group_size else ""
        return f"QuantizedTensor(vector {q.vector_dim}D {q.bits}b-index {list(q.shape)}{g})"


def _param_shape_errors(q: QuantizedTensor) -> list[str]:
    """Scales, zero points and offsets have the codes' rank; each dimension shared, full or one per group."""
    errs: list[str] = []
    rank = q.codes.ndim
    for pname in ("scales", "zero_points", "offsets"):
        p = getattr(q, pname)
        if p is None:
            continue
        if p.ndim != rank:
            errs.append(f"{pname} rank {p.ndim} differs from codes rank {rank}")
            continue
        for d, (ps, cs) in enumerate(zip(p.shape, q.shape)):
            expected = {1, cs}
            if q.group_size and d == q.group_axis:
                expected.add(cs // q.group_size)
            if ps not in expected:
                errs.append(f"{pname} dim {d} has extent {ps}; allowed {sorted(expected)}")
    return errs


#: every scheme, by the name a QuantizedTensor (and every file that records one) carries
SCHEMES: dict[str, Scheme] = {s.name: s for s in (Symmetric(), Asymmetric(), Affine(), Codebook(), Vector())}


def scheme(name: str) -> Scheme:
    """The scheme called ``name``; a KeyError naming the known ones otherwise."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown quantization scheme {name!r}; known: {', '.join(SCHEMES)}") from None
