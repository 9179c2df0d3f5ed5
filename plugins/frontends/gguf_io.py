"""Reading GGUF files (through gguf-py): configuration, metadata and tensors, with clear errors."""

from __future__ import annotations

import json
import math
import mmap
import os
import struct

import numpy as np

from ...api.llm import MAX_DIM, LLMConfig
from ...errors import BadInputError, UnsupportedError

# Keys describing the file itself or the architecture; the GGUF target writes these afresh.
_REGENERATED = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version")


def open_gguf(path: str):
    """A gguf-py reader over ``path``, after :func:`check_gguf` has walked the file: a malformed file is a
    BadInputError naming the metadata key or tensor at fault, never a numpy or gguf-py message."""
    import gguf

    check_gguf(path)
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as e:  # noqa: BLE001 - the walk above should have caught it; say so if not
        raise BadInputError(
            f"{path} is not a readable GGUF file: gguf-py cannot parse it ({type(e).__name__}: {e})"
        ) from None


# ------------------------------------------------------------------------------------------- the file walk
# GGUF value type ids -> struct format of a scalar (STRING = 8 and ARRAY = 9 are handled apart).
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_TYPE_NAME = {
    0: "uint8",
    1: "int8",
    2: "uint16",
    3: "int16",
    4: "uint32",
    5: "int32",
    6: "float32",
    7: "bool",
    8: "string",
    9: "array",
    10: "uint64",
    11: "int64",
    12: "float64",
}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
_VERSIONS = (2, 3)


class _Bad(Exception):
    """A problem found walking the file: the message names the key or tensor."""


class _Walker:
    """Walks a GGUF file's header (key/value metadata, tensor infos) and checks every tensor's data against its
    type and shape, with the rules llama.cpp's loader applies (gguf.cpp): known value and tensor types, at most
    4 dimensions, whole quantization blocks, tensors stored back to back in the order listed (each padded to
    the alignment), every byte inside the file."""

    def __init__(self, buf, size: int):
        self.buf, self.size, self.order = buf, size, "<"

    def need(self, off: int, n: int, what: str) -> None:
        if off + n > self.size:
            raise _Bad(f"{what} is cut off: it needs bytes {off}..{off + n}, the file ends at {self.size}")

    def unpack(self, fmt: str, off: int, what: str):
        n = struct.calcsize("<" + fmt)
        self.need(off, n, what)
        return struct.unpack_from(self.order + fmt, self.buf, off)[0], off + n

    def string(self, off: int, what: str) -> tuple[str, int]:
        n, off = self.unpack("Q", off, what + " (its length)")
        if n > self.size - off:
            raise _Bad(f"{what}: a string of {n} bytes at byte {off} runs past the end of the file ({self.size} bytes)")
        raw = bytes(self.buf[off : off + n])
        try:
            return raw.decode("utf-8"), off + n
        except UnicodeDecodeError:
            raise _Bad(f"{what}: {raw[:40]!r} is not valid UTF-8") from None

    def value(self, off: int, vtype: int, what: str) -> tuple[object, int]:
        """Check one metadata value; returns (the value for scalars and strings, else None; the next offset)."""
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype], off, f"{what} ({_TYPE_NAME[vtype]})")
        if vtype == _STRING:
            return self.string(off, what)
        if vtype == _ARRAY:
            etype, off = self.unpack("I", off, what + " (its element type)")
            if etype not in _TYPE_NAME or etype == _ARRAY:
                raise _Bad(
                    f"{what}: an array of unknown element type id {etype}"
                    if etype != _ARRAY
                    else f"{what}: an array of arrays, which GGUF readers do not support"
                )
            count, off = self.unpack("Q", off, what + " (its length)")
            if etype in _SCALAR:
                n = count * struct.calcsize("<" + _SCALAR[etype])
                if n > self.size - off:
                    raise _Bad(
                        f"{what}: an array of {count} {_TYPE_NAME[etype]} ({n} bytes) at byte {off} runs past "
                        f"the end of the file ({self.size} bytes)"
                    )
                return None, off + n
            if count * 8 > self.size - off:  # every string takes at least its 8-byte length
                raise _Bad(
                    f"{what}: an array of {count} strings at byte {off} runs past the end of the file "
                    f"({self.size} bytes)"
                )
            for i in range(count):
                _, off = self.string(off, f"{what}[{i}]")
            return None, off
        raise _Bad(f"{what}: unknown value type id {vtype}")

    def walk(self) -> None:
        import gguf

        if self.size < 4 or bytes(self.buf[:4]) != b"GGUF":
            raise _Bad(f"it does not start with the GGUF magic (first bytes {bytes(self.buf[:4])!r})")
        version, _ = self.unpack("I", 4, "the GGUF version")
        if version & 0xFFFF == 0:  # written on a machine of the other byte order (as gguf-py reads it)
            self.order = ">"
            version, _ = self.unpack("I", 4, "the GGUF version")
        if version not in _VERSIONS:
            raise _Bad(f"GGUF version {version} is not supported (versions {', '.join(map(str, _VERSIONS))})")
        n_tensors, off = self.unpack("Q", 8, "the tensor count")
        n_kv, off = self.unpack("Q", off, "the metadata count")
        if n_kv * 13 > self.size - off:  # a key/value pair takes at least 8 + 4 + 1 bytes
            raise _Bad(f"the header declares {n_kv} metadata entries; the {self.size}-byte file cannot hold them")
        if n_tensors * 24 > self.size - off:  # a tensor info takes at least 8 + 4 + 4 + 8 bytes
            raise _Bad(f"the header declares {n_tensors} tensors; the {self.size}-byte file cannot hold them")
        keys: dict[str, tuple[int, object]] = {}
        for i in range(n_kv):
            key, off = self.string(off, f"the key of metadata entry {i}")
            if key in keys:
                raise _Bad(f"metadata {key!r} appears twice")
            vtype, off = self.unpack("I", off, f"metadata {key!r} (its type)")
            val, off = self.value(off, vtype, f"metadata {key!r}")
            keys[key] = (vtype, val)
        alignment = 32  # GGUF_DEFAULT_ALIGNMENT
        if "general.alignment" in keys:
            vtype, val = keys["general.alignment"]
            if vtype != 4 or not isinstance(val, int) or not val or val & (val - 1):  # type 4: uint32, an int
                shown = f"{_TYPE_NAME.get(vtype, vtype)} {val!r}" if val is not None else _TYPE_NAME.get(vtype, vtype)
                raise _Bad(f"metadata 'general.alignment' must be a uint32 power of two, it is {shown}")
            alignment = val
        infos = []
        names: set[str] = set()
        for i in range(n_tensors):
            name, off = self.string(off, f"the name of tensor {i}")
            what = f"tensor {name!r}"
            if name in names:
                raise _Bad(f"{what} appears twice")
            names.add(name)
            n_dims, off = self.unpack("I", off, what + " (its dimension count)")
            if n_dims > _MAX_DIMS:
                raise _Bad(f"{what}: {n_dims} dimensions (GGUF tensors have at most {_MAX_DIMS})")
            dims = []
            for _ in range(n_dims):
                d, off = self.unpack("Q", off, what + " (its shape)")
                dims.append(d)
            type_id, off = self.unpack("I", off, what + " (its type)")
            try:
                qtype = gguf.GGMLQuantizationType(type_id)
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise _Bad(f"{what}: unknown tensor type id {type_id}") from None
            shape = list(reversed(dims))  # numpy order, as edgec shows shapes everywhere
            if dims and dims[0] % block:
                raise _Bad(
                    f"{what}: type {qtype.name} stores blocks of {block} values; the row length {dims[0]} "
                    f"(shape {shape}) is not a multiple of {block}"
                )
            n_elems = math.prod(dims)
            if n_elems.bit_length() > 62:  # GGUF sizes are int64 in every reader
                raise _Bad(f"{what}: shape {shape} has more elements than any file can hold")
            offset, off = self.unpack("Q", off, what + " (its data offset)")
            infos.append((name, qtype, shape, n_elems // block * type_size, offset))
        data_start = -(-off // alignment) * alignment
        expected, prev = 0, None
        for name, qtype, shape, nbytes, offset in infos:
            if data_start + offset > self.size:
                raise _Bad(
                    f"tensor {name!r}: its data offset {offset} points past the end of the file ({self.size} bytes)"
                )
            if offset != expected:
                if prev is None:
                    raise _Bad(f"tensor {name!r} is the first tensor but starts at data offset {offset}, not 0")
                pname, ptype, pshape, pbytes = prev
                raise _Bad(
                    f"tensor {name!r} starts at data offset {offset}, but the tensors before it fill "
                    f"{expected} bytes (the last, {pname!r}: type {ptype.name}, shape {pshape}, {pbytes} "
                    "bytes + padding): a shape, type or offset does not match the stored data"
                )
            start = data_start + offset
            if start + nbytes > self.size:
                raise _Bad(
                    f"tensor {name!r}: type {qtype.name} with shape {shape} needs {nbytes} bytes, the file "
                    f"holds {max(0, self.size - start)} (it ends at byte {self.size})"
                )
            expected = offset + -(-nbytes // alignment) * alignment
            prev = (name, qtype, shape, nbytes)


def check_gguf(path: str) -> None:
    """Walk the whole GGUF structure of ``path`` (no tensor data is read): BadInputError naming the metadata
    key or tensor and what is wrong with it, for the first problem found."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise BadInputError(f"{path} is not a readable GGUF file: it is empty")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                _Walker(buf, size).walk()
    except _Bad as e:
        raise BadInputError(f"{path} is not a readable GGUF file: {e}") from None
    except OSError as e:
        raise BadInputError(f"cannot read {path}: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------------- metadata
_INT_TYPES = frozenset({0, 1, 2, 3, 4, 5, 10, 11})
_FLOAT_TYPES = frozenset({6, 12})
_REQUIRED = object()


def _describe(f) -> str:
    """What a field holds, for messages: ``a string ('x')``, ``an array of 3 uint32``, ``a float32 (1.5)``."""
    t = int(f.types[0])
    if t == _ARRAY:
        sub = _TYPE_NAME.get(int(f.types[1]), "?") if len(f.types) > 1 else "values"
        return f"an array of {len(f.data)} {sub}"
    try:
        v = f.contents()
    except Exception:  # noqa: BLE001
        v = "?"
    name = _TYPE_NAME.get(t, str(t))
    return f"{'an' if name[0] in 'ai' else 'a'} {name} ({v!r})"


def field_value(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception as e:  # noqa: BLE001
        raise BadInputError(f"GGUF metadata {key!r} is unreadable: {e}") from None


def _typed(reader, path: str, key: str, kind: str, default=_REQUIRED):
    """Metadata ``key`` as an int, float or str; a missing required key or a value of another type is a
    BadInputError naming the key, the type found and the value."""
    f = reader.fields.get(key)
    if f is None:
        if default is _REQUIRED:
            raise BadInputError(f"{path}: required metadata {key} is missing")
        return default
    t = int(f.types[0])
    ok = {"int": _INT_TYPES, "float": _INT_TYPES | _FLOAT_TYPES, "str": {_STRING}}[kind]
    if t not in ok:
        want = {"int": "an integer", "float": "a number", "str": "a string"}[kind]
        raise BadInputError(f"{path}: metadata {key!r} must be {want}, it is {_describe(f)}")
    v = field_value(reader, key)
    return {"int": int, "float": float, "str": str}[kind](v)


def _dim(reader, path: str, key: str, default=_REQUIRED) -> int:
    """A model dimension: a positive integer no real model exceeds (a corrupt header must not make edgec
    allocate terabytes)."""
    v = _typed(reader, path, key, "int", default)
    if v <= 0:
        raise BadInputError(f"{path}: metadata {key!r} = {v} must be positive")
    if v > MAX_DIM:
        raise BadInputError(f"{path}: metadata {key!r} = {v} is beyond any real model (limit {MAX_DIM})")
    return v


def config_from_gguf(reader, path: str) -> LLMConfig:
    """The decoder configuration a GGUF file's metadata states (malformed values are a BadInputError naming the
    key)."""
    try:
        cfg = _config_from_gguf(reader, path)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:  # a case the typed reads missed
        raise BadInputError(f"{path}: malformed model metadata: {type(e).__name__}: {e}") from None
    cfg.check()
    return cfg


def _config_from_gguf(reader, path: str) -> LLMConfig:
    arch = _typed(reader, path, "general.architecture", "str", None)
    if arch is None:
        raise BadInputError(f"{path} has no general.architecture metadata; it is not a model GGUF file")
    if arch not in ("llama", "qwen2"):
        raise UnsupportedError(f"{path}: GGUF architecture {arch!r} is not supported (supported: llama, qwen2)")
    a = arch + "."
    hidden, heads = _dim(reader, path, a + "embedding_length"), _dim(reader, path, a + "attention.head_count")
    kv = _dim(reader, path, a + "attention.head_count_kv", heads)
    head_dim = _dim(reader, path, a + "attention.key_length", hidden // heads)
    rope_dim = _dim(reader, path, a + "rope.dimension_count", head_dim)
    problems = []
    if rope_dim != head_dim:
        problems.append(f"partial rotary embeddings (rope.dimension_count {rope_dim} < head dim {head_dim})")
    scaling = _typed(reader, path, a + "rope.scaling.type", "str", "none")
    if scaling != "none":
        problems.append(f"rope scaling {scaling!r}")
    if problems:
        raise UnsupportedError(f"{path}: not supported yet: " + "; ".join(problems))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None and int(tokens.types[0]) != _ARRAY:
        raise BadInputError(
            f"{path}: metadata 'tokenizer.ggml.tokens' must be an array of strings, it is {_describe(tokens)}"
        )
    vocab = _dim(reader, path, a + "vocab_size", len(tokens.data) if tokens is not None else _REQUIRED)
    floats = {}
    for key, default in (("rope.freq_base", 10000.0), ("attention.layer_norm_rms_epsilon", 1e-5)):
        v = _typed(reader, path, a + key, "float", default)
        if not (math.isfinite(v) and v > 0):
            raise BadInputError(f"{path}: metadata {a + key!r} = {v} must be a positive finite number")
        floats[key] = v
    special = {}
    for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        v = _typed(reader, path, key, "int", None)
        if v is not None and not 0 <= v < vocab:
            raise BadInputError(f"{path}: metadata {key!r} = {v} is not a token id (the vocabulary has {vocab})")
        special[key] = v
    names = {t.name for t in reader.tensors}
    return LLMConfig(
        arch=arch,
        vocab_size=vocab,
        hidden=hidden,
        intermediate=_dim(reader, path, a + "feed_forward_length"),
        layers=_dim(reader, path, a + "block_count"),
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        rope_theta=floats["rope.freq_base"],
        rms_eps=floats["attention.layer_norm_rms_epsilon"],
        context_length=_dim(reader, path, a + "context_length", 2048),
        tied_embeddings="output.weight" not in names,
        qkv_bias="blk.0.attn_q.bias" in names,
        bos_token_id=special["tokenizer.ggml.bos_token_id"],
        eos_token_id=special["tokenizer.ggml.eos_token_id"],
        name=_typed(reader, path, "general.name", "str", os.path.splitext(os.path.basename(path))[0]),
    )


def kv_metadata(reader) -> list[list]:
    """Every key/value pair except those the writer regenerates: ``[key, type, value, element type]``."""
    out = []
    for key, f in reader.fields.items():
        if key.startswith(_REGENERATED):
            continue
        try:
            vtype = f.types[0].name
            sub = f.types[1].name if len(f.types) > 1 else None
            val = f.contents()
        except Exception as e:  # noqa: BLE001 - gguf-py decodes lazily: bad UTF-8, short arrays, ...
            raise BadInputError(f"GGUF metadata {key!r} is unreadable: {type(e).__name__}: {e}") from None
        if isinstance(val, np.generic):
            val = val.item()
        out.append([key, vtype, val, sub])
    return out


def dump_kv(kv: list[list]) -> str:
    return json.dumps(kv, ensure_ascii=False)


def read_tensor(t, path: str = "") -> np.ndarray:
    """A GGUF tensor as float32 in numpy order ``[ne1, ne0]`` (any type gguf-py can dequantize)."""
    import gguf

    where = f"{path}: " if path else ""
    shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
    try:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError:
        raise UnsupportedError(
            f"{where}tensor {t.name!r}: gguf-py cannot dequantize type {t.tensor_type.name}"
        ) from None
    except Exception as e:  # noqa: BLE001 - check_gguf validated the layout; anything left is gguf-py's
        raise BadInputError(
            f"{where}tensor {t.name!r} (type {t.tensor_type.name}, shape {list(shape)}) cannot be "
            f"decoded: {type(e).__name__}: {e}"
        ) from None
    arr = np.asarray(arr, np.float32)
    if arr.size != math.prod(shape):
        raise BadInputError(
            f"{where}tensor {t.name!r}: type {t.tensor_type.name} decodes to {arr.size} values, its "
            f"shape {list(shape)} needs {math.prod(shape)}"
        )
    return arr.reshape(shape)
