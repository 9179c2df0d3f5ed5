"""Save and load models: one ``.edgec`` file, weights memory-mapped on load.

Layout: ``b"EDGECIR1"``, a little-endian u64 header length, the header (the model's text form in which
every tensor is a ``{"offset", "nbytes"}`` reference into the data section), zero padding to a 64-byte
boundary, then the tensor bytes, each 64-byte aligned. Loading maps the file once and copies no weights.
"""

from __future__ import annotations

import os
import struct
import tempfile
from typing import Any

import numpy as np

from .core import Model
from .dtypes import DType
from .text import parse_model, print_model

MAGIC = b"EDGECIR1"
ALIGN = 64


class FormatError(Exception):
    """The file is not a readable edgec model file (deliberately not a ValueError, so the text parser
    does not re-label data-section errors as syntax errors)."""


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def save(model: Model, path: str) -> None:
    """Write ``model`` to ``path`` atomically (a partial file is never left behind)."""
    blobs: list[tuple[int, np.ndarray]] = []
    end = 0

    def sink(arr: np.ndarray, dtype: DType) -> dict[str, Any]:
        nonlocal end
        arr = np.ascontiguousarray(arr)
        off = _align(end)
        blobs.append((off, arr))
        end = off + arr.nbytes
        return {"dtype": dtype.short, "shape": list(arr.shape), "offset": off, "nbytes": arr.nbytes}

    header = print_model(model, sink=sink).encode()
    start = _align(16 + len(header))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".edgec-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + struct.pack("<Q", len(header)) + header)
            for off, arr in blobs:
                f.seek(start + off)
                f.write(arr.tobytes())
            f.truncate(start + _align(end))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def copy(model: Model) -> Model:
    """An independent copy of ``model`` (through a temporary file: ``copy.deepcopy`` recurses as deep as the
    graph is long). Its weights are read-only maps of the unlinked file."""
    with tempfile.TemporaryDirectory(prefix="edgec-copy-") as d:
        save(model, os.path.join(d, "m"))
        return load(os.path.join(d, "m"))


def load(path: str) -> Model:
    """Load a model saved by :func:`save`; weights are read-only memory maps of the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 16 or head[:8] != MAGIC:
            raise FormatError(f"{path} is not an edgec model file (bad magic)")
        (hlen,) = struct.unpack("<Q", head[8:])
        if hlen > size - 16:
            raise FormatError(f"{path} is truncated: its header claims {hlen} bytes, the file has {size}")
        text = f.read(hlen).decode("utf-8", errors="strict")
    start = _align(16 + hlen)
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > start else np.zeros(0, np.uint8)

    def source(r: dict[str, Any]) -> np.ndarray:
        dt = DType.from_short(r["dtype"])
        lo, n = start + int(r["offset"]), int(r["nbytes"])
        expect = int(np.prod(r["shape"], dtype=np.int64)) * dt.numpy.itemsize
        if n != expect:
            raise FormatError(f"{path}: a tensor of shape {r['shape']} ({dt.short}) claims {n} bytes, needs {expect}")
        if lo + n > size:
            raise FormatError(f"{path} is truncated: a tensor extends to byte {lo + n} of {size}")
        return mm[lo : lo + n].view(dt.numpy).reshape(r["shape"])

    return parse_model(text, source=source)
