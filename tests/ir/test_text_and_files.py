"""Text printer/parser round-trip, file save/load with memory-mapped weights, and malformed input."""

import os

import numpy as np
import pytest

from edgec import ir
from edgec.ir import DType, Graph, Model, QuantizedTensor


def rich_model() -> Model:
    """Uses every printable feature: quantized and large constants, attributes of each kind, a tensor
    attribute, multiple outputs, omitted optional inputs, odd names, symbolic dims, annotations."""
    rng = np.random.default_rng(1)
    g = Graph("rich")
    x = g.add_input("x", DType.FLOAT32, ("batch", 8))
    big = g.add_const("big", rng.standard_normal((64, 8)).astype(np.float32))
    q = g.add_const(
        "w/q:0",
        QuantizedTensor(
            rng.integers(0, 16, (4, 8)).astype(np.uint8),
            4,
            "asymmetric",
            scales=rng.random((4, 2)).astype(np.float32),
            zero_points=np.full((4, 2), 8, np.uint8),
            axis=0,
            group_size=4,
            group_axis=1,
            method="mse",
        ),
    )
    ids = g.add_const("ids", np.array([1, 2], np.int64))
    big.sparsity = ir.Sparsity(ratio=0.0)
    h = g.op("Linear", [x, q], domain="edgec", name="fc").output
    h.quant = ir.ActivationQuant(scale=0.05, zero_point=0, bits=8, signed=True, observer="minmax")
    s = g.op("Split", [h], {"axis": 1, "num_outputs": 2}, name="split", num_outputs=2)
    c = g.op("Clip", [s.outputs[0], None, None], name="clip").output
    cos = g.op(
        "ConstantOfShape",
        [g.add_const("shp", np.array([2], np.int64))],
        {"value": ir.Tensor(np.array([1.5], np.float32))},
        name="cos",
    ).output
    lrelu = g.op(
        "LeakyRelu", [c], {"alpha": 0.25, "names": ["a", "b"], "floats": [1.0, 2.5], "ints": [1, 2]}, name="lrelu"
    ).output
    gat = g.op("Gather", [big, ids], {"axis": 0}, name="gather").output
    g.outputs += [lrelu, s.outputs[1], gat, cos]
    return Model(g, {"": 18, "edgec": 1}, {"author": "tests"})


def test_round_trip_is_exact():
    m = rich_model()
    text = ir.print_model(m)
    m2 = ir.parse_model(text)
    assert ir.print_model(m2) == text
    ir.verify(m2)
    q1, q2 = m.graph.initializers["w/q:0"].const, m2.graph.initializers["w/q:0"].const
    np.testing.assert_array_equal(q1.dequantize(), q2.dequantize())
    assert m2.graph.node("lrelu").attributes["alpha"] == 0.25
    assert m2.graph.inputs[0].shape == ("batch", 8)


def test_float_values_round_trip_bit_exactly():
    g = Graph()
    vals = np.array([np.float32(1) / 3, np.float32(1e-30), -0.0, np.float32(3.4e38)], np.float32)
    g.outputs.append(g.add_const("c", vals))
    m2 = ir.parse_model(ir.print_model(Model(g)))
    assert m2.graph.initializers["c"].numpy().tobytes() == vals.tobytes()


def test_elided_text_is_readable_but_refuses_to_parse():
    text = ir.print_model(rich_model(), elide=True)
    assert '"elided"' in text
    with pytest.raises(ir.ParseError, match="elided"):
        ir.parse_model(text)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("nonsense", "header"),
        ('edgec-ir 1\ngraph "g" {\n  %y : f32[2] = Relu(%nope) {} @"r"\n}', "used before it is defined"),
        ('edgec-ir 1\ngraph "g" {\n  input %x : f99[2]\n}', "unknown dtype"),
        ('edgec-ir 1\ngraph "g" {\n  input %x : f32[2] trailing\n}', "unexpected text"),
    ],
)
def test_parse_errors_name_the_line(bad, message):
    with pytest.raises(ir.ParseError, match=message) as e:
        ir.parse_model(bad)
    assert "line" in str(e.value)


def test_save_load_memory_maps_weights(tmp_path):
    m = rich_model()
    p = tmp_path / "m.edgec"
    ir.save(m, str(p))
    m2 = ir.load(str(p))
    assert ir.print_model(m2) == ir.print_model(m)
    big = m2.graph.initializers["big"].const.numpy()
    assert isinstance(big.base, np.memmap) or isinstance(big, np.memmap)
    q = m2.graph.initializers["w/q:0"].const
    assert isinstance(q.codes.base, np.memmap) or isinstance(q.codes, np.memmap)
    assert not big.flags.writeable


def _mapped_rss_kb(path: str) -> int:
    """Resident kB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
            inside = line.rstrip().endswith(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


def test_removed_weights_of_a_mapped_model_leave_memory(tmp_path):
    """Passes that quantize layer by layer remove each float weight once replaced: a memory-mapped weight's
    pages are dropped then (and read back from the file, unchanged, if used again)."""
    g = Graph("g")
    x = g.add_input("x", DType.FLOAT32, (1, 1024))
    w = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    g.outputs.append(g.op("MatMul", [x, g.add_const("w", w)], name="mm").output)
    p = str(tmp_path / "m.edgec")
    ir.save(Model(g), p)
    m2 = ir.load(p)
    arr = m2.graph.initializers["w"].const.numpy()
    assert float(np.asarray(arr, np.float64).sum()) == float(w.astype(np.float64).sum())  # touch every page
    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("no /proc/self/smaps to read resident pages from")
    before = _mapped_rss_kb(p)
    assert before >= 4000  # the 4 MiB weight is resident
    for u in list(m2.graph.initializers["w"].uses):
        u.node.replace_input_with(u.index, m2.graph.add_const("w2", np.zeros_like(w)))
    m2.graph.remove_const("w")
    assert _mapped_rss_kb(p) < before - 4000
    np.testing.assert_array_equal(arr, w)  # still readable, same values


def test_load_rejects_truncated_and_foreign_files(tmp_path):
    m = rich_model()
    p = tmp_path / "m.edgec"
    ir.save(m, str(p))
    data = p.read_bytes()
    (tmp_path / "cut.edgec").write_bytes(data[:-100])
    with pytest.raises(ir.FormatError, match="truncated"):
        ir.load(str(tmp_path / "cut.edgec"))
    (tmp_path / "foreign.edgec").write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(ir.FormatError, match="bad magic"):
        ir.load(str(tmp_path / "foreign.edgec"))


def test_save_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "m.edgec"
    p.write_bytes(b"previous")

    class Boom(Exception):
        pass

    def explode(*a, **k):
        raise Boom()

    monkeypatch.setattr(ir.serde, "print_model", explode)
    with pytest.raises(Boom):
        ir.save(rich_model(), str(p))
    assert p.read_bytes() == b"previous"
    assert [f.name for f in tmp_path.iterdir()] == ["m.edgec"]
