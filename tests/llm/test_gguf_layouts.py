"""The IR's storage-layout registry: the GGUF block sizes live in the grids module (edgec.api.gguf), which
registers them when imported; every path that makes GGUF-layout tensors imports it first."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgec.api.gguf import TYPES, quantize_matrix
from edgec.ir import DType, Graph, Model, QuantizedTensor
from edgec.ir.tensor import layout_block, register_layout
from edgec.targets.gguf.encode import encode


def _fresh(code: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter (nothing imported yet), run outside the repository."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(__file__), timeout=300
    )


def test_every_gguf_type_is_registered_with_llama_cpp_block_sizes():
    import gguf

    for t in TYPES.values():
        want = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.name]]
        assert (t.block, t.block_bytes) == want, t.name
        assert layout_block(t.layout) == want, t.name


@pytest.mark.parametrize("name", sorted(TYPES))
def test_nbytes_is_what_the_gguf_target_writes(name):
    t = TYPES[name]
    q = quantize_matrix(np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32), t)
    assert q.layout == t.layout
    data, tname = encode(q)
    assert tname == name and q.nbytes == data.nbytes == 4 * 512 // t.block * t.block_bytes


def test_an_unregistered_layout_is_named_when_sized():
    q = QuantizedTensor(
        codes=np.zeros((2, 32), np.int8),
        bits=4,
        scheme="symmetric",
        scales=np.ones((2, 1), np.float32),
        axis=0,
        layout="acme.Q9",
    )
    with pytest.raises(ValueError, match=r"storage layout 'acme\.Q9' is not registered"):
        _ = q.nbytes
    register_layout("gguf.Q4_K", 256, 144)  # the same numbers again: harmless
    with pytest.raises(ValueError, match=r"'gguf\.Q4_K' is registered as 256 weights in 144 bytes"):
        register_layout("gguf.Q4_K", 256, 145)


def test_the_ir_alone_knows_no_gguf_layout():
    r = _fresh("import edgec.ir.tensor as t, sys; sys.exit(1 if t._LAYOUT_BLOCKS else 0)")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("module", ["edgec.plugins.quantize", "edgec.targets.gguf"])
def test_paths_that_make_gguf_tensors_register_the_layouts(module):
    """quantize{gguf=...} fits GGUF grids (mixed-precision through it); the gguf target encodes them."""
    r = _fresh(f"import {module}, edgec.ir.tensor as t; print(t.layout_block('gguf.Q4_K'))")
    assert r.returncode == 0 and r.stdout.strip() == "(256, 144)", r.stderr


def test_a_saved_gguf_model_is_sized_in_a_fresh_process(tmp_path):
    """An .edgec file of GGUF-layout weights, read back through the CLI (the edgec-ir frontend)."""
    from edgec.ir.serde import save

    g = Graph("lin")
    x = g.add_input("x", DType.FLOAT32, (1, 256))
    q = quantize_matrix(np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32), TYPES["Q4_K"])
    y = g.op("Linear", [x, g.add_const("w", q)], None, domain="edgec", name="lin").output
    g.rename(y, "y")
    g.outputs.append(y)
    path = str(tmp_path / "m.edgec")
    save(Model(g, opset_imports={"": 18, "edgec": 1}), path)
    r = _fresh(f"from edgec.cli import main; main(['inspect', {path!r}, '--json'])")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["weights_bytes"] == q.nbytes == 8 * 144
