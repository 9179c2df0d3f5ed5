"""Reading GGUF files (through gguf-py): configuration, metadata and tensors, with clear errors."""

from __future__ import annotations

import json
import os

import numpy as np

from ...errors import BadInputError, UnsupportedError
from .decoder import LLMConfig

GGUF_KV_KEY = "edgec.gguf.kv"  # model.metadata key: the source file's key/value metadata, for write-back
# Keys describing the file itself or the architecture; the GGUF target writes these afresh.
_REGENERATED = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version")


def open_gguf(path: str):
    import gguf
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as e:  # noqa: BLE001 - gguf-py raises ValueError, struct/numpy errors, ...
        size = os.path.getsize(path) if os.path.exists(path) else 0
        raise BadInputError(f"{path} is not a readable GGUF file ({size} bytes): {type(e).__name__}: {e}") from None


def field_value(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception as e:  # noqa: BLE001
        raise BadInputError(f"GGUF metadata {key!r} is unreadable: {e}") from None


def config_from_gguf(reader, path: str) -> LLMConfig:
    """The decoder configuration a GGUF file's metadata states (malformed values are a BadInputError)."""
    try:
        cfg = _config_from_gguf(reader, path)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
        raise BadInputError(f"{path}: malformed model metadata: {type(e).__name__}: {e}") from None
    cfg.check()
    return cfg


def _config_from_gguf(reader, path: str) -> LLMConfig:
    arch = field_value(reader, "general.architecture")
    if arch is None:
        raise BadInputError(f"{path} has no general.architecture metadata; it is not a model GGUF file")
    if arch not in ("llama", "qwen2"):
        raise UnsupportedError(f"{path}: GGUF architecture {arch!r} is not supported (supported: llama, qwen2)")

    def req(key: str):
        v = field_value(reader, f"{arch}.{key}")
        if v is None:
            raise BadInputError(f"{path}: required metadata {arch}.{key} is missing")
        return v

    hidden, heads = int(req("embedding_length")), int(req("attention.head_count"))
    kv = field_value(reader, f"{arch}.attention.head_count_kv", heads)
    head_dim = int(field_value(reader, f"{arch}.attention.key_length", hidden // heads))
    rope_dim = int(field_value(reader, f"{arch}.rope.dimension_count", head_dim))
    problems = []
    if rope_dim != head_dim:
        problems.append(f"partial rotary embeddings (rope.dimension_count {rope_dim} < head dim {head_dim})")
    scaling = field_value(reader, f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", None):
        problems.append(f"rope scaling {scaling!r}")
    if problems:
        raise UnsupportedError(f"{path}: not supported yet: " + "; ".join(problems))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(field_value(reader, f"{arch}.vocab_size", len(tokens.data) if tokens is not None else 0))
    names = {t.name for t in reader.tensors}
    return LLMConfig(
        arch=arch, vocab_size=vocab, hidden=hidden, intermediate=int(req("feed_forward_length")),
        layers=int(req("block_count")), heads=heads, kv_heads=int(kv), head_dim=head_dim,
        rope_theta=float(field_value(reader, f"{arch}.rope.freq_base", 10000.0)),
        rms_eps=float(field_value(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        context_length=int(field_value(reader, f"{arch}.context_length", 2048)),
        tied_embeddings="output.weight" not in names, qkv_bias="blk.0.attn_q.bias" in names,
        bos_token_id=field_value(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=field_value(reader, "tokenizer.ggml.eos_token_id"),
        name=str(field_value(reader, "general.name", os.path.splitext(os.path.basename(path))[0])))


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


def read_tensor(t) -> np.ndarray:
    """A GGUF tensor as float32 in numpy order ``[ne1, ne0]`` (any type gguf-py can dequantize)."""
    import gguf
    shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
    try:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError:
        raise UnsupportedError(f"tensor {t.name}: gguf-py cannot dequantize type {t.tensor_type.name}") from None
    except Exception as e:  # noqa: BLE001
        raise BadInputError(f"tensor {t.name} ({t.tensor_type.name}) is unreadable: {e}") from None
    arr = np.asarray(arr, np.float32)
    if arr.size != int(np.prod(shape)):
        raise BadInputError(f"tensor {t.name}: {arr.size} values for shape {list(shape)}")
    return arr.reshape(shape)
