"""A malformed GGUF file is a BadInputError (exit 3) that names the file, the tensor or metadata key and what is
wrong with it; never a numpy or gguf-py message ("cannot reshape array of size ...", "index 0 is out of bounds",
"np.uint32(99) is not a valid GGMLQuantizationType", which is what leaked before the file walk in gguf_io)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from edgec.compiler import load_model  # noqa: E402
from edgec.errors import BadInputError  # noqa: E402
from edgec.api.llm import LLMConfig, expected_shape, weight_names  # noqa: E402

Q = gguf.GGMLQuantizationType
V = gguf.GGUFValueType
CFG = LLMConfig(
    arch="llama",
    vocab_size=64,
    hidden=256,
    intermediate=256,
    layers=1,
    heads=4,
    kv_heads=2,
    head_dim=64,
    context_length=64,
    name="t",
)
Q4K = "blk.0.attn_q.weight"  # stored as Q4_K: 256 rows of one 144-byte block
Q80 = "blk.0.ffn_up.weight"  # stored as Q8_0
RAW = re.compile(
    r"cannot reshape|out of bounds|is not a valid|np\.|invalid literal|division|struct\.error|"
    r"IndexError|KeyError|TypeError|ValueError|OverflowError|UnicodeDecodeError|Traceback",
    re.I,
)


def _q4k_blocks(rows: int, cols: int, rng) -> np.ndarray:
    """Q4_K bytes with sane scales (d = 2^-7, dmin = 0) and random 4-bit codes."""
    blocks = rng.integers(0, 256, (rows, cols // 256, 144), dtype=np.uint8)
    blocks[..., 0:2] = np.frombuffer(np.float16(2.0**-7).tobytes(), np.uint8)
    blocks[..., 2:4] = 0
    blocks[..., 4:16] = 0x11  # every sub-block scale 1, min 0
    return blocks.reshape(rows, -1)


def write(path, *, shapes=None, skip=(), kv=None, alignment=None) -> str:
    """A one-layer llama GGUF (no tokenizer: the frontend needs none) with one Q4_K and one Q8_0 tensor."""
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(CFG.layers)
    w.add_context_length(CFG.context_length)
    w.add_embedding_length(CFG.hidden)
    w.add_feed_forward_length(CFG.intermediate)
    w.add_head_count(CFG.heads)
    w.add_head_count_kv(CFG.kv_heads)
    w.add_layer_norm_rms_eps(CFG.rms_eps)
    w.add_vocab_size(CFG.vocab_size)
    w.add_name("t")
    if alignment:
        w.add_uint32("general.alignment", alignment)
    for k, (fn, v) in (kv or {}).items():
        getattr(w, fn)(k, v)
    for n in weight_names(CFG):
        if n in skip:
            continue
        shape = (shapes or {}).get(n, expected_shape(CFG, n))
        arr = (rng.standard_normal(shape) / 16).astype(np.float32)
        if n == Q4K:
            w.add_tensor(n, _q4k_blocks(*shape, rng), raw_dtype=Q.Q4_K)
        elif n == Q80:
            w.add_tensor(n, gguf.quants.quantize(arr, Q.Q8_0), raw_dtype=Q.Q8_0)
        else:
            w.add_tensor(n, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> str:
    return write(tmp_path_factory.mktemp("good") / "good.gguf")


def _layout(path):
    """Byte offsets inside the file: each tensor info's fields and data, each metadata value."""
    r = gguf.GGUFReader(path)
    tensors = {}
    for t in r.tensors:
        o = t.field.offset + 8 + len(t.name.encode())
        nd = int(t.field.parts[2][0])
        tensors[t.name] = {
            "ndims": o,
            "dims": o + 4,
            "type": o + 4 + 8 * nd,
            "offset": o + 8 + 8 * nd,
            "data": t.data_offset,
            "nbytes": t.n_bytes,
        }
    fields = {
        k: {"type": f.offset + 8 + len(k.encode()), "value": f.offset + 12 + len(k.encode())}
        for k, f in r.fields.items()
        if not k.startswith("GGUF.")
    }
    return tensors, fields


def _patched(good, tmp_path, name, edits=(), cut=None) -> str:
    data = bytearray(open(good, "rb").read())
    for off, fmt, val in edits:
        struct.pack_into(fmt, data, off, val)
    if cut is not None:
        del data[cut:]
    p = tmp_path / f"{name}.gguf"
    p.write_bytes(bytes(data))
    return str(p)


def _cases(good, tmp_path):
    T, F = _layout(good)
    emb = "llama.embedding_length"
    return {
        # tensor data cut short inside a quantized tensor
        "truncated-q4k": (
            _patched(good, tmp_path, "trunc", cut=T[Q4K]["data"] + 1000),
            [repr(Q4K), "type Q4_K", "shape [256, 256]", "needs 36864 bytes", "the file holds 1000"],
        ),
        "truncated-last": (
            _patched(good, tmp_path, "trunc2", cut=os.path.getsize(good) - 10),
            ["'output.weight'", "type F32", "needs 65536 bytes", "the file holds 65526"],
        ),
        "type-id-unknown": (
            _patched(good, tmp_path, "type99", [(T["blk.0.attn_k.weight"]["type"], "<I", 99)]),
            ["'blk.0.attn_k.weight'", "unknown tensor type id 99"],
        ),
        # a valid type id that does not match the stored bytes (F32 -> F16): the next tensor's offset gives it away
        "type-id-wrong": (
            _patched(good, tmp_path, "f16", [(T["blk.0.attn_k.weight"]["type"], "<I", int(Q.F16))]),
            ["'blk.0.attn_k.weight'", "type F16", "does not match the stored data"],
        ),
        "type-block": (
            _patched(
                good,
                tmp_path,
                "block",
                [
                    (T["blk.0.attn_norm.weight"]["type"], "<I", int(Q.Q8_0)),
                    (T["blk.0.attn_norm.weight"]["dims"], "<Q", 100),
                ],
            ),
            ["'blk.0.attn_norm.weight'", "type Q8_0", "blocks of 32", "100"],
        ),
        # a shape that does not match its bytes
        "shape-vs-bytes": (
            _patched(good, tmp_path, "dims", [(T["blk.0.attn_k.weight"]["dims"] + 8, "<Q", 64)]),
            ["'blk.0.attn_k.weight'", "shape [64, 256]", "does not match the stored data"],
        ),
        "shape-huge": (
            _patched(good, tmp_path, "huge", [(T["blk.0.attn_k.weight"]["dims"], "<Q", 1 << 62)]),
            ["'blk.0.attn_k.weight'", "more elements than any file can hold"],
        ),
        "too-many-dims": (
            _patched(good, tmp_path, "ndims", [(T["output_norm.weight"]["ndims"], "<I", 1 << 30)]),
            ["'output_norm.weight'", "1073741824 dimensions"],
        ),
        "offset-past-end": (
            _patched(good, tmp_path, "offs", [(T["output.weight"]["offset"], "<Q", 1 << 40)]),
            ["'output.weight'", "data offset 1099511627776", "past the end"],
        ),
        "tensor-count": (_patched(good, tmp_path, "tcount", [(8, "<Q", 1 << 40)]), ["declares 1099511627776 tensors"]),
        # malformed metadata
        "value-type-unknown": (
            _patched(good, tmp_path, "vtype", [(F[emb]["type"], "<I", 77)]),
            [repr(emb), "unknown value type id 77"],
        ),
        "string-too-long": (
            _patched(good, tmp_path, "slen", [(F["general.name"]["value"], "<Q", 1 << 50)]),
            ["'general.name'", f"string of {1 << 50} bytes", "runs past the end"],
        ),
        "not-utf8": (
            _patched(good, tmp_path, "utf8", [(F["general.name"]["value"] + 8, "<B", 0xFF)]),
            ["'general.name'", "not valid UTF-8"],
        ),
        "int-stored-as-float": (
            _patched(good, tmp_path, "float", [(F[emb]["type"], "<I", int(V.FLOAT32))]),
            [repr(emb), "must be an integer", "float32"],
        ),
        "zero-heads": (
            _patched(good, tmp_path, "heads", [(F["llama.attention.head_count"]["value"], "<I", 0)]),
            ["'llama.attention.head_count'", "= 0 must be positive"],
        ),
    }


def _check(msg: str, path: str, wants: list[str]):
    assert path in msg, msg
    for w in wants:
        assert w in msg, f"{w!r} not in: {msg}"
    assert not RAW.search(msg), f"a raw library message leaks: {msg}"


CASE_NAMES = [
    "truncated-q4k",
    "truncated-last",
    "type-id-unknown",
    "type-id-wrong",
    "type-block",
    "shape-vs-bytes",
    "shape-huge",
    "too-many-dims",
    "offset-past-end",
    "tensor-count",
    "value-type-unknown",
    "string-too-long",
    "not-utf8",
    "int-stored-as-float",
    "zero-heads",
]


def test_the_good_file_loads(good):
    m = load_model(good)
    assert m.graph.outputs and Q4K in m.graph.initializers


@pytest.mark.parametrize("case", CASE_NAMES)
def test_load_model_names_the_field(case, good, tmp_path):
    path, wants = _cases(good, tmp_path)[case]
    with pytest.raises(BadInputError) as ei:
        load_model(path)
    _check(str(ei.value), path, wants)


@pytest.mark.parametrize(
    "case,kw,wants",
    [
        (
            "rows-vs-metadata",
            {"shapes": {"blk.0.attn_k.weight": (100, 256)}},
            ["'blk.0.attn_k.weight'", "shape [100, 256]", "the metadata implies [128, 256]"],
        ),
        ("missing-tensor", {"skip": ("blk.0.ffn_gate.weight",)}, ["'blk.0.ffn_gate.weight' is missing"]),
        ("bad-alignment", {"alignment": 24}, ["'general.alignment'", "power of two", "24"]),
        (
            "bos-out-of-range",
            {"kv": {"tokenizer.ggml.bos_token_id": ("add_uint32", 1000)}},
            ["'tokenizer.ggml.bos_token_id'", "1000", "vocabulary has 64"],
        ),
        (
            "string-for-number",
            {"kv": {"llama.rope.freq_base": ("add_string", "big")}},
            ["'llama.rope.freq_base'", "must be a number", "a string ('big')"],
        ),
    ],
)
def test_consistent_files_that_contradict_their_metadata(case, kw, wants, tmp_path):
    path = str(tmp_path / f"{case}.gguf")
    if case == "bad-alignment":  # gguf-py will not write a bad alignment: write 32, then patch the value
        write(path, alignment=32)
        _, F = _layout(path)
        path = _patched(path, tmp_path, "align24", [(F["general.alignment"]["value"], "<I", 24)])
    else:
        write(path, **kw)
    with pytest.raises(BadInputError) as ei:
        load_model(path)
    _check(str(ei.value), path, wants)


@pytest.mark.parametrize(
    "case", ["truncated-q4k", "type-id-unknown", "shape-vs-bytes", "value-type-unknown", "int-stored-as-float"]
)
def test_cli_exit_3_names_the_field_without_traceback(case, good, tmp_path):
    path, wants = _cases(good, tmp_path)[case]
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "edgec.cli", "compile", path, "--target", "gguf", "-o", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGEC_CACHE_DIR": str(tmp_path / "c")},
    )
    assert r.returncode == 3, r.stdout + r.stderr
    _check(r.stderr, path, wants)
    assert not out.exists()
