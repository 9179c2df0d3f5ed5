"""Core ML encodings of edgec's weights: one IR weight -> the ``constexpr_*`` ops that reproduce it exactly.

======================  ===========================================  ==========================================
IR weight               iOS18 / macOS15 opset                        iOS16 / iOS17 opset
======================  ===========================================  ==========================================
float                   fp16 ``const``                               fp16 ``const``
float, pruned           ``constexpr_sparse_to_dense`` (uint1 mask)    ``constexpr_sparse_to_dense`` (packed mask)
int8 / int4 grid        ``constexpr_blockwise_shift_scale``          int8 per channel/tensor:
                        (int4/uint4/int8/uint8 data, fp16 scales)    ``constexpr_affine_dequantize``
int grid, pruned        ``constexpr_sparse_blockwise_shift_scale``   (stored dense)
                        + ``constexpr_sparse_to_dense``
codebook (palette)      ``constexpr_lut_to_dense``: uint1/2/3/4/6/8  per-tensor palettes of 2/4/16/64/256
                        indices, LUT per tensor/channel/group        entries: ``constexpr_lut_to_dense``
codebook x scales       ``constexpr_lut_to_dense``, one LUT per      --
                        scale block (see ``_lut``)
codebook, pruned        ``constexpr_lut_to_sparse`` +                --
                        ``constexpr_sparse_to_dense``
vector (vq)             ``constexpr_lut_to_dense`` with              --
                        ``vector_axis``: LUT ``[R, G, 2**nb, d]``
======================  ===========================================  ==========================================

Float values (weights, scales, palettes) are fp16 as tabled under ``precision=fp16`` (the default) and fp32
under ``precision=fp32``. Every encoding is checked after saving: the package is re-loaded and each weight
decoded by coremltools must equal the IR's dequantized weight in the compute type, bit for bit
(:func:`~.check_package`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import UnsupportedError
from ...ir import QuantizedTensor, Value
from ...ir.schemes import Codebook, Vector
from ...target import Encoders

# The weight encodings, by scheme (WeightEncoder's methods register themselves): what the target carries.
ENCODERS = Encoders()
encoder = ENCODERS.register

INDEX_BITS = (1, 2, 3, 4, 6, 8)  # the palette index types Core ML has (uint1..uint8, no 5 or 7)


def _index_bits(bits: int) -> int:
    return next(b for b in INDEX_BITS if b >= bits)


def _index_dtype(types, nb: int):
    """The MIL storage type of ``nb``-bit palette indices."""
    return {
        1: types.np_uint1_dtype,
        2: types.np_uint2_dtype,
        3: types.np_uint3_dtype,
        4: types.np_uint4_dtype,
        6: types.np_uint6_dtype,
        8: np.uint8,
    }[nb]


def to_fp16(a: np.ndarray) -> np.ndarray:
    """fp16 with finite values saturated to +-65504 (an additive mask of -3.4e38 stays a large finite
    negative, so a fully masked row gives a uniform softmax rather than NaN); infinities stay infinite."""
    fin = np.isfinite(a)
    return np.where(fin, np.clip(a, -65504.0, 65504.0), a).astype(np.float16)


def old_opset_problem(name: str, q) -> str | None:
    """Why the iOS16/17 opsets cannot store this weight (None: they can): they have 8-bit grids with one
    scale per tensor or per axis (``constexpr_affine_dequantize``) and palettes per tensor only."""
    if not isinstance(q, QuantizedTensor):
        return None
    hint = "use deployment=ios18 or macos15"
    if isinstance(q.scheme_type, Vector):
        return f"weight {name!r}: vector palettes need the iOS18 opset; {hint}"
    if isinstance(q.scheme_type, Codebook):
        if np.asarray(q.codebook).ndim != 1 or q.scales is not None:
            return (
                f"weight {name!r}: per-channel, per-group or scaled palettes need the iOS18 opset; {hint}, or "
                "one palette per tensor"
            )
        return None
    varying = [d for d, n in enumerate(np.shape(q.scales) if q.scales is not None else ()) if n != 1]
    if q.bits != 8 or q.group_size or len(varying) > 1:
        return (
            f"weight {name!r}: {q.bits}-bit{' group-wise' if q.group_size else ''} grids need the iOS18 opset "
            f"(iOS16/17 store 8-bit per-channel grids only); {hint}, or quantize{{bits=8}} per channel"
        )
    return None


def _grid_widths(v: Value, q: QuantizedTensor) -> UnsupportedError:
    return UnsupportedError(
        f"weight {v.name!r}: the coreml target stores {q.bits}-bit {q.scheme} grids only "
        "at 4 or 8 bits (quantize{bits=4|8}) or as palettes (quantize{method=codebook})"
    )


@dataclasses.dataclass
class Encoded:
    var: object  # the MIL value (a constexpr op's output or an fp16 array)
    kind: str  # "fp16", "sparse", "blockwise", "affine", "palette", ... (for the manifest)
    op: str | None = None  # name of the MIL op whose output is the decoded weight (None: a plain const)


class WeightEncoder:
    """Encodes constant weights into a MIL program for one deployment target (``ios16`` ... ``macos15``)."""

    def __init__(self, mb, types, ios18: bool, sparse_min_ratio: float = 0.1, fp32: bool = False):
        self.mb, self.types, self.ios18 = mb, types, ios18
        self.sparse_min_ratio = sparse_min_ratio
        # fp32 compute: float weights, scales and palettes are stored in fp32 (the grid decodes to the IR's
        # fp32 weight); fp16 compute: in fp16, scales exactly (an inexact fp16 scale is refused)
        self.fp32 = fp32
        self.ft = np.float32 if fp32 else np.float16

    # ---- entry point ---------------------------------------------------------------------------------------
    def encode(self, v: Value, name: str) -> Encoded:
        q = v.const
        sparse = self._sparse_mask(v)
        if not isinstance(q, QuantizedTensor):
            w32 = np.asarray(v.numpy(), np.float32)
            w = w32 if self.fp32 else to_fp16(w32)
            if sparse is not None:
                return self._sparse_float(w, sparse, name)
            return Encoded(w, "fp32" if self.fp32 else "fp16")
        fn = ENCODERS.get(q.scheme)
        if fn is None:
            raise _grid_widths(v, q)
        return fn(self, v, q, sparse, name)

    def _sparse_mask(self, v: Value) -> np.ndarray | None:
        """The non-zero mask of a pruned weight, when pruning made it sparse enough to pay for the mask."""
        sp = v.sparsity
        if sp is None or (sp.ratio or 0.0) < self.sparse_min_ratio and sp.n is None:
            return None
        q = v.const
        w = q.dequantize() if isinstance(q, QuantizedTensor) else np.asarray(v.numpy())
        mask = w != 0
        return mask if mask.mean() <= 1 - self.sparse_min_ratio else None

    # ---- float -----------------------------------------------------------------------------------------------
    def _sparse_float(self, w16: np.ndarray, mask: np.ndarray, name: str) -> Encoded:
        mb, types = self.mb, self.types
        nz = w16[mask]
        if self.ios18:
            out = mb.constexpr_sparse_to_dense(nonzero_data=nz, mask=mask.astype(types.np_uint1_dtype), name=name)
        else:
            from coremltools.optimize._utils import pack_elements_into_bits

            out = mb.constexpr_sparse_to_dense(
                nonzero_data=nz,
                mask=pack_elements_into_bits(mask.astype(np.uint8).reshape(-1), 1),
                shape=np.array(w16.shape, np.uint32),
                name=name,
            )
        return Encoded(out, "sparse", name)

    # ---- uniform grids ---------------------------------------------------------------------------------------
    def _scales16(self, v: Value, q: QuantizedTensor) -> np.ndarray:
        scale = np.asarray(q.scales, np.float32)
        if scale.ndim != q.codes.ndim:
            scale = scale.reshape(scale.shape + (1,) * (q.codes.ndim - scale.ndim))
        s16 = scale.astype(self.ft)
        if not np.array_equal(s16.astype(np.float32), scale):
            raise UnsupportedError(
                f"weight {v.name!r}: Core ML stores fp16 scales in fp16 compute; quantize with "
                "quantize{scale_dtype=f16} so they are exact, or compile with "
                "coreml{precision=fp32} (an imported Q/DQ model's float32 scales)"
            )
        return s16

    @encoder("symmetric", "asymmetric")
    def _blockwise(self, v: Value, q: QuantizedTensor, sparse, name: str) -> Encoded:
        if q.bits not in (4, 8):
            raise _grid_widths(v, q)
        mb, types = self.mb, self.types
        signed = q.signed
        s16 = self._scales16(v, q)
        codes = np.asarray(q.codes)
        zp = None if q.zero_points is None else np.asarray(q.zero_points).reshape(s16.shape)
        if not self.ios18:
            enc = self._affine(v, q, codes, s16, zp, name)
            if sparse is not None:
                enc.kind += " (pruned zeros stored densely: sparse + quantized needs the iOS18 opset)"
            return enc
        if q.bits <= 4:
            dt = types.np_int4_dtype if signed else types.np_uint4_dtype
        else:
            dt = np.int8 if signed else np.uint8
        kw = {"scale": s16}
        if zp is not None:
            kw["offset"] = zp.astype(dt)
        if sparse is not None:
            mask, nz = mb.constexpr_sparse_blockwise_shift_scale(
                data_mask=sparse.astype(types.np_uint1_dtype),
                nonzero_data=codes[sparse].astype(dt),
                name=name + "_sparse_q",
                **kw,
            )
            return Encoded(
                mb.constexpr_sparse_to_dense(nonzero_data=nz, mask=mask, name=name), f"sparse+int{q.bits}", name
            )
        return Encoded(mb.constexpr_blockwise_shift_scale(data=codes.astype(dt), name=name, **kw), f"int{q.bits}", name)

    def _affine(self, v, q, codes, s16, zp, name) -> Encoded:
        """iOS16/17: ``constexpr_affine_dequantize`` holds 8-bit codes with one scale per tensor or per axis."""
        problem = old_opset_problem(v.name, q)
        if problem:
            raise UnsupportedError(problem)
        varying = [d for d, n in enumerate(s16.shape) if n != 1]
        axis = varying[0] if varying else 0
        dt = np.int8 if q.signed else np.uint8
        scale = s16.reshape(-1) if varying else s16.reshape(())
        z = np.zeros_like(scale, dt) if zp is None else zp.reshape(scale.shape).astype(dt)
        out = self.mb.constexpr_affine_dequantize(
            quantized_data=codes.astype(dt), zero_point=z, scale=scale, axis=np.int32(axis), name=name
        )
        return Encoded(out, "int8", name)

    # ---- palettes --------------------------------------------------------------------------------------------
    def _lut(self, q: QuantizedTensor, nb: int) -> np.ndarray:
        """The IR's codebook as a Core ML LUT of rank(weight) + 2, ``[*blocks, 2**nb, 1]``, in the compute type.
        Scaled palettes (NF4-style ``codebook[code] * scale``) get one LUT per scale block holding the products,
        rounded once to the compute type exactly as the IR's weight is; coremltools rewrites a LUT followed by a blockwise
        scale into this same form for every opset before iOS26, so this is what the runtime holds anyway."""
        cb = np.asarray(q.codebook, np.float32)
        rank, n = q.codes.ndim, cb.shape[-1]
        pad = np.zeros(cb.shape[:-1] + ((1 << nb) - n,), np.float32)
        cb = np.concatenate([cb, pad], axis=-1)
        if cb.ndim == 1:
            shape = [1] * rank
        elif cb.ndim == 2:
            shape = [1] * rank
            assert q.axis is not None  # a per-channel codebook has its axis set (checked by the IR)
            shape[q.axis] = cb.shape[0]
        else:
            shape = [cb.shape[0], cb.shape[1]]
        lut = cb.reshape(shape + [1 << nb, 1])
        if q.scales is not None:
            s = np.asarray(q.scales, np.float32)
            s = s.reshape(s.shape + (1,) * (rank - s.ndim))
            lut = lut * s.reshape(s.shape + (1, 1))
        return lut.astype(self.ft)

    @encoder("codebook")
    def _palette(self, v: Value, q: QuantizedTensor, sparse, name: str) -> Encoded:
        mb, types = self.mb, self.types
        nb = _index_bits(q.bits)
        codes = np.asarray(q.codes)
        if not self.ios18:
            return self._palette_ios16(v, q, codes, name, sparse)
        idx_dt = _index_dtype(types, nb)
        lut = self._lut(q, nb)
        kind = f"palette{q.bits}" + ("x" + "scale" if q.scales is not None else "")
        if sparse is not None:
            mask, nz = mb.constexpr_lut_to_sparse(
                indices_mask=sparse.astype(types.np_uint1_dtype),
                indices_nonzero_data=codes[sparse].astype(idx_dt),
                lut=lut,
                name=name + "_sparse_lut",
            )
            return Encoded(mb.constexpr_sparse_to_dense(nonzero_data=nz, mask=mask, name=name), "sparse+" + kind, name)
        return Encoded(mb.constexpr_lut_to_dense(indices=codes.astype(idx_dt), lut=lut, name=name), kind, name)

    @encoder("vector")
    def _vector(self, v: Value, q: QuantizedTensor, sparse, name: str) -> Encoded:
        """Vector palettization: indices ``[O, K / d]`` (uint1..uint8), one LUT ``[2**nb, d]`` per block of rows and
        columns, ``lut [R, G, 2**nb, d]`` with ``vector_axis=1`` (entries padded with zeros up to 2**nb)."""
        types = self.types
        if not self.ios18:
            problem = old_opset_problem(v.name, q)
            assert problem is not None  # the old opsets have no vector palettes
            raise UnsupportedError(problem)
        nb = _index_bits(q.bits)
        cb = np.asarray(q.codebook, np.float32)
        r, g, n, d = cb.shape
        lut = np.concatenate([cb, np.zeros((r, g, (1 << nb) - n, d), np.float32)], axis=2)
        idx_dt = _index_dtype(types, nb)
        out = self.mb.constexpr_lut_to_dense(
            indices=np.asarray(q.codes).astype(idx_dt),
            lut=lut if self.fp32 else to_fp16(lut),
            vector_axis=np.int32(1),
            name=name,
        )
        return Encoded(out, f"vector{d}d-palette{q.bits}", name)

    def _palette_ios16(self, v: Value, q: QuantizedTensor, codes: np.ndarray, name: str, sparse=None) -> Encoded:
        from coremltools.optimize._utils import pack_elements_into_bits

        problem = old_opset_problem(v.name, q)
        if problem:
            raise UnsupportedError(problem)
        nb = next(b for b in (1, 2, 4, 6, 8) if b >= q.bits)
        cb = np.asarray(q.codebook, np.float32).astype(self.ft)
        lut = np.concatenate([cb, np.zeros((1 << nb) - cb.size, self.ft)])
        out = self.mb.constexpr_lut_to_dense(
            indices=pack_elements_into_bits(codes.astype(np.uint8).reshape(-1), nb),
            lut=lut,
            shape=np.array(codes.shape, np.uint32),
            name=name,
        )
        return Encoded(
            out,
            f"palette{q.bits}"
            + ("" if sparse is None else " (pruned zeros stored densely: sparse + palettized needs the iOS18 opset)"),
            name,
        )
