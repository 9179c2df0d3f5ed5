"""Element types of the IR.

A :class:`DType` names the *logical* element type of a value. Low-bit integer types (int2, int3, int4,
uint4) and nf4 codes exist for quantized data: they are held unpacked in memory (one code per int8 /
uint8 element) and packed only by the targets that store them.
"""

from __future__ import annotations

import enum
from typing import cast

import ml_dtypes
import numpy as np
import onnx


class DType(enum.Enum):
    """Logical element type. The value is the short name used by the text form."""

    FLOAT32 = "f32"
    FLOAT16 = "f16"
    BFLOAT16 = "bf16"
    FLOAT64 = "f64"
    INT64 = "i64"
    INT32 = "i32"
    INT16 = "i16"
    INT8 = "i8"
    UINT8 = "u8"
    UINT16 = "u16"
    UINT32 = "u32"
    UINT64 = "u64"
    BOOL = "bool"
    STRING = "str"
    INT4 = "i4"
    UINT4 = "u4"
    INT3 = "i3"
    INT2 = "i2"
    UINT2 = "u2"
    NF4 = "nf4"
    # Narrow floating-point formats (OCP FP8 / MX): held as their ml_dtypes types, one byte per element.
    FLOAT8E4M3FN = "f8e4m3fn"
    FLOAT8E4M3FNUZ = "f8e4m3fnuz"
    FLOAT8E5M2 = "f8e5m2"
    FLOAT8E5M2FNUZ = "f8e5m2fnuz"
    FLOAT8E8M0 = "f8e8m0"
    FLOAT4E2M1 = "f4e2m1"

    @property
    def short(self) -> str:
        return self.value

    @property
    def bits(self) -> int:
        """Bits per element in packed storage."""
        return _BITS[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)

    @property
    def is_low_bit(self) -> bool:
        """True for the sub-byte quantized code types."""
        return self.bits < 8

    @property
    def is_narrow_float(self) -> bool:
        """True for the 8- and 4-bit floating-point formats (float8 variants, e8m0, float4)."""
        return self in _NARROW_FLOATS

    @property
    def storage(self) -> "DType":
        """The standard type a runtime without this type holds its elements in: the bits (uint8) of a narrow
        float, the bits (uint16) of a bfloat16, the value (int8 / uint8) of a sub-byte integer; itself otherwise."""
        return _STORAGE.get(self, self)

    @property
    def stored_as_bits(self) -> bool:
        """True when :attr:`storage` holds the element's bit pattern (not its value)."""
        return self in _NARROW_FLOATS or self == DType.BFLOAT16

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype that holds elements of this type in memory (unpacked for low-bit types)."""
        return cast("np.dtype", np.dtype(_NUMPY[self]))

    @property
    def onnx(self) -> int:
        """The ONNX ``TensorProto`` data type. Types ONNX lacks raise :class:`ValueError`."""
        if self not in _ONNX:
            raise ValueError(f"dtype {self.short} has no ONNX tensor type")
        return _ONNX[self]

    @classmethod
    def from_short(cls, name: str) -> "DType":
        try:
            return cls(name)
        except ValueError:
            allowed = ", ".join(d.value for d in cls)
            raise ValueError(f"unknown dtype {name!r}; allowed: {allowed}") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> "DType":
        dtype = np.dtype(dtype)
        for d, n in _NUMPY.items():
            if (d.bits >= 8 or d.is_narrow_float) and np.dtype(n) == dtype:
                return d
        for d, n in _ML_INTS.items():
            if np.dtype(n) == dtype:
                return d
        if dtype.kind in "US" or dtype == np.dtype(object):
            return DType.STRING
        raise ValueError(f"numpy dtype {dtype} has no edgec dtype")

    @classmethod
    def from_onnx(cls, elem_type: int) -> "DType":
        d = _FROM_ONNX.get(elem_type)
        if d is not None:
            return d
        name = (
            onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else elem_type
        )
        raise ValueError(f"ONNX element type {name} is not supported by edgec")

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"DType.{self.name}"


_BITS = {
    DType.FLOAT32: 32,
    DType.FLOAT16: 16,
    DType.BFLOAT16: 16,
    DType.FLOAT64: 64,
    DType.INT64: 64,
    DType.INT32: 32,
    DType.INT16: 16,
    DType.INT8: 8,
    DType.UINT8: 8,
    DType.UINT16: 16,
    DType.UINT32: 32,
    DType.UINT64: 64,
    DType.BOOL: 8,
    DType.STRING: 0,
    DType.INT4: 4,
    DType.UINT4: 4,
    DType.INT3: 3,
    DType.INT2: 2,
    DType.UINT2: 2,
    DType.NF4: 4,
    DType.FLOAT8E4M3FN: 8,
    DType.FLOAT8E4M3FNUZ: 8,
    DType.FLOAT8E5M2: 8,
    DType.FLOAT8E5M2FNUZ: 8,
    DType.FLOAT8E8M0: 8,
    DType.FLOAT4E2M1: 4,
}

_NARROW_FLOATS = frozenset(
    {
        DType.FLOAT8E4M3FN,
        DType.FLOAT8E4M3FNUZ,
        DType.FLOAT8E5M2,
        DType.FLOAT8E5M2FNUZ,
        DType.FLOAT8E8M0,
        DType.FLOAT4E2M1,
    }
)

_NUMPY = {
    DType.FLOAT32: np.float32,
    DType.FLOAT16: np.float16,
    DType.BFLOAT16: ml_dtypes.bfloat16,
    DType.FLOAT64: np.float64,
    DType.INT64: np.int64,
    DType.INT32: np.int32,
    DType.INT16: np.int16,
    DType.INT8: np.int8,
    DType.UINT8: np.uint8,
    DType.UINT16: np.uint16,
    DType.UINT32: np.uint32,
    DType.UINT64: np.uint64,
    DType.BOOL: np.bool_,
    DType.STRING: object,
    DType.INT4: np.int8,
    DType.UINT4: np.uint8,
    DType.INT3: np.int8,
    DType.INT2: np.int8,
    DType.UINT2: np.uint8,
    DType.NF4: np.uint8,
    DType.FLOAT8E4M3FN: ml_dtypes.float8_e4m3fn,
    DType.FLOAT8E4M3FNUZ: ml_dtypes.float8_e4m3fnuz,
    DType.FLOAT8E5M2: ml_dtypes.float8_e5m2,
    DType.FLOAT8E5M2FNUZ: ml_dtypes.float8_e5m2fnuz,
    DType.FLOAT8E8M0: ml_dtypes.float8_e8m0fnu,
    DType.FLOAT4E2M1: ml_dtypes.float4_e2m1fn,
}
# ml_dtypes' own sub-byte integer types (what onnx reads INT4 / INT2 tensors as); the IR holds their values unpacked
_ML_INTS = {
    DType.INT4: ml_dtypes.int4,
    DType.UINT4: ml_dtypes.uint4,
    DType.INT2: ml_dtypes.int2,
    DType.UINT2: ml_dtypes.uint2,
}
_STORAGE = {
    **{d: DType.UINT8 for d in _NARROW_FLOATS},
    DType.BFLOAT16: DType.UINT16,
    DType.INT4: DType.INT8,
    DType.UINT4: DType.UINT8,
    DType.INT2: DType.INT8,
    DType.UINT2: DType.UINT8,
}

_T = onnx.TensorProto
_ONNX = {
    DType.FLOAT32: _T.FLOAT,
    DType.FLOAT16: _T.FLOAT16,
    DType.BFLOAT16: _T.BFLOAT16,
    DType.FLOAT64: _T.DOUBLE,
    DType.INT64: _T.INT64,
    DType.INT32: _T.INT32,
    DType.INT16: _T.INT16,
    DType.INT8: _T.INT8,
    DType.UINT8: _T.UINT8,
    DType.UINT16: _T.UINT16,
    DType.UINT32: _T.UINT32,
    DType.UINT64: _T.UINT64,
    DType.BOOL: _T.BOOL,
    DType.STRING: _T.STRING,
    DType.INT4: _T.INT4,
    DType.UINT4: _T.UINT4,
    DType.INT2: _T.INT2,
    DType.UINT2: _T.UINT2,
    DType.FLOAT8E4M3FN: _T.FLOAT8E4M3FN,
    DType.FLOAT8E4M3FNUZ: _T.FLOAT8E4M3FNUZ,
    DType.FLOAT8E5M2: _T.FLOAT8E5M2,
    DType.FLOAT8E5M2FNUZ: _T.FLOAT8E5M2FNUZ,
    DType.FLOAT8E8M0: _T.FLOAT8E8M0,
    DType.FLOAT4E2M1: _T.FLOAT4E2M1,
}
_FROM_ONNX: dict[int, DType] = {o: d for d, o in reversed(_ONNX.items())}  # the first DType of each ONNX type


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Inclusive integer range of ``bits``-bit codes."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def code_dtype(bits: int, signed: bool) -> DType:
    """The IR dtype that stores ``bits``-bit codes."""
    table = {
        (8, True): DType.INT8,
        (8, False): DType.UINT8,
        (4, True): DType.INT4,
        (4, False): DType.UINT4,
        (3, True): DType.INT3,
        (2, True): DType.INT2,
        (2, False): DType.UINT2,
    }
    if (bits, signed) in table:
        return table[(bits, signed)]
    # 5-7 bit codes and unsigned 3-bit codes are held in the byte type of the same signedness.
    if 1 <= bits <= 8:
        return DType.INT8 if signed else DType.UINT8
    raise ValueError(f"bits must be between 1 and 8, got {bits}")


# Model metadata: JSON {graph input / output name: logical dtype short name} of the inputs and outputs a target
# receives and returns in their storage type (written by the legalize-dtypes pass).
STORAGE_KEY = "edgec.storage"


def storage_map(metadata: dict[str, str]) -> dict[str, DType]:
    """The graph inputs / outputs held in storage types, with their logical dtypes (see :data:`STORAGE_KEY`)."""
    import json

    return {k: DType(v) for k, v in json.loads(metadata.get(STORAGE_KEY) or "{}").items()}


def to_storage(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a runtime without its element type holds it (:attr:`DType.storage`): a narrow float's or
    bfloat16's bits, a sub-byte integer's value in a byte; any other array unchanged."""
    a = np.asarray(arr)
    try:
        d = DType.from_numpy(a.dtype)
    except ValueError:
        return a
    if d.stored_as_bits:
        return a.view(d.storage.numpy)
    return a.astype(d.storage.numpy) if d.storage is not d else a


def from_storage(arr: np.ndarray, dtype: DType) -> np.ndarray:
    """The inverse of :func:`to_storage`: the ``dtype`` elements (ml_dtypes arrays) ``arr`` holds."""
    a = np.asarray(arr)
    if dtype.storage is dtype:
        return a
    if dtype.stored_as_bits:
        return np.ascontiguousarray(a.astype(dtype.storage.numpy, copy=False)).view(dtype.numpy)
    return a.astype(_ML_INTS[dtype]) if dtype in _ML_INTS else a
