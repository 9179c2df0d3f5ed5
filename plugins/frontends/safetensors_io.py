"""Reading safetensors files without trusting them.

The format is an 8-byte little-endian header length, a JSON header (``name -> {dtype, shape, data_offsets}``
plus optional ``__metadata__``) and the raw tensor bytes. edgec parses the header itself and checks it all
before any tensor is read: known dtypes, whole non-negative dims, offsets inside the file, each tensor's
byte count equal to its shape's, no two tensors overlapping. The declared sizes are then checked against
the per-tensor limit and the memory budget (:mod:`edgec.ir.budget`), so a header that declares 40 GB in a
sparse file is a clear error, not a MemoryError or a panic in a Rust library. Float32 tensors are
memory-mapped (their pages are read on use, never copied); float16 and bfloat16 ones are widened to float32
one tensor at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import struct

import numpy as np

from ...errors import BadInputError

MAX_HEADER_BYTES = 100 << 20  # the format's own reference implementation caps the header at 100 MB

_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    dtype: str  # safetensors' name: F32, BF16, ...
    shape: tuple[int, ...]
    start: int  # absolute file offsets of the tensor's bytes
    end: int

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=object))


def _np_dtype(name: str) -> np.dtype:
    if name == "BF16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(_DTYPES[name])


def read_header(path: str) -> dict[str, Entry]:
    """Every tensor of a safetensors file, checked against the file (BadInputError naming what is wrong)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the import
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BadInputError(f"{path} is not a readable safetensors file: it is not a regular file")
            size = st.st_size
            head = f.read(8)
            if len(head) < 8:
                raise BadInputError(
                    f"{path} is not a readable safetensors file: it is shorter than its 8-byte header length"
                )
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, MAX_HEADER_BYTES):
                raise BadInputError(
                    f"{path} is not a readable safetensors file: the header declares {n} bytes but "
                    f"the file holds {size - 8} after the length (limit {MAX_HEADER_BYTES})"
                )
            raw = f.read(n)
    except OSError as e:
        raise BadInputError(f"{path} is not a readable safetensors file: cannot read it ({e.strerror})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadInputError(
            f"{path} is not a readable safetensors file: the header is not valid UTF-8 JSON ({e})"
        ) from None
    if not isinstance(header, dict):
        raise BadInputError(
            f"{path} is not a readable safetensors file: the header is a JSON {type(header).__name__}, not an object"
        )
    base = 8 + n
    entries: dict[str, Entry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"{path} is not a readable safetensors file: tensor {name!r}"
        if not isinstance(info, dict):
            raise BadInputError(f"{where}: its header entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _DTYPES:
            raise BadInputError(f"{where}: dtype {dtype!r} is not one edgec reads ({', '.join(_DTYPES)})")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadInputError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise BadInputError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
        lo, hi = offsets
        need = int(np.prod(shape, dtype=object)) * _np_dtype(dtype).itemsize
        if not 0 <= lo <= hi or base + hi > size:
            raise BadInputError(
                f"{where}: its bytes [{lo}, {hi}) lie outside the file's {size - base} data bytes (a truncated file?)"
            )
        if hi - lo != need:
            raise BadInputError(f"{where}: spans {hi - lo} bytes, but {dtype} of shape {shape} needs {need}")
        entries[name] = Entry(name, dtype, tuple(shape), base + lo, base + hi)
    spans = sorted((e.start, e.end, e.name) for e in entries.values() if e.end > e.start)
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise BadInputError(
                f"{path} is not a readable safetensors file: tensors {an!r} and {bn!r} overlap in the file"
            )
    return entries


def check_sizes(files: dict[str, dict[str, Entry]], keep=lambda name: True) -> None:
    """Refuse, before reading, weights whose float32 copies exceed the per-tensor limit or, together, the
    memory budget."""
    from ...ir.budget import over_budget
    from ...ir.limits import max_tensor_bytes

    limit = max_tensor_bytes()
    total = 0
    for path, entries in files.items():
        for e in entries.values():
            if not keep(e.name):
                continue
            f32 = e.elements * 4
            if f32 > limit:
                raise BadInputError(
                    f"{path}: tensor {e.name!r} of shape {list(e.shape)} is {f32 / 2**30:.3g} GiB as "
                    f"float32, beyond the {limit / 2**30:.3g} GiB one tensor may take "
                    "(EDGEC_MAX_TENSOR_BYTES raises the limit)"
                )
            total += f32
    msg = over_budget("importing the model's weights as float32", {"weights": total})
    if msg:
        raise BadInputError(msg)


def load(path: str, e: Entry) -> np.ndarray:
    """The tensor as float32: a read-only memory map for F32, one widened copy otherwise."""
    if e.elements == 0:
        return np.zeros(e.shape, np.float32)
    dt = _np_dtype(e.dtype)
    mm = np.memmap(path, dtype=np.uint8, mode="r", offset=e.start, shape=(e.end - e.start,))
    arr = mm.view(dt.newbyteorder("<") if dt.itemsize > 1 and dt.kind in "fiu" and dt.name != "bfloat16" else dt)
    arr = arr.reshape(e.shape)
    if arr.dtype == np.float32:
        return arr
    return arr.astype(np.float32)


def load_raw(path: str, e: Entry) -> np.ndarray:
    """The tensor in its own dtype (a copy): a quantized checkpoint's packed integer words."""
    dt = _np_dtype(e.dtype)
    if e.elements == 0:
        return np.zeros(e.shape, dt)
    mm = np.memmap(path, dtype=np.uint8, mode="r", offset=e.start, shape=(e.end - e.start,))
    arr = mm.view(dt.newbyteorder("<") if dt.itemsize > 1 and dt.kind in "fiu" and dt.name != "bfloat16" else dt)
    return np.array(arr.reshape(e.shape), dtype=dt.newbyteorder("="))
