"""QuantizedTensor: the grid is explicit and dequantization is exact; invalid grids are reported."""

import numpy as np
import pytest

from edgec import ir
from edgec.ir import QuantizedTensor


def groupwise(bits=4, group=4, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(3, 8)).astype(np.int8)
    scales = rng.random((3, 8 // group)).astype(np.float32) + 0.1
    return QuantizedTensor(codes, bits, "symmetric", scales=scales, axis=0, group_size=group, group_axis=1)


def test_groupwise_dequantize_matches_definition():
    q = groupwise()
    assert q.validate() == []
    w = q.dequantize()
    expected = q.codes.astype(np.float32) * np.repeat(q.scales, 4, axis=1)
    np.testing.assert_array_equal(w, expected)


def test_asymmetric_and_codebook():
    codes = np.array([[0, 15], [7, 3]], np.uint8)
    q = QuantizedTensor(
        codes,
        4,
        "asymmetric",
        scales=np.array([[0.5], [2.0]], np.float32),
        zero_points=np.array([[8], [7]], np.uint8),
        axis=0,
    )
    assert q.validate() == []
    np.testing.assert_array_equal(q.dequantize(), [[-4.0, 3.5], [0.0, -8.0]])
    cb = QuantizedTensor(
        np.array([[0, 3], [1, 2]], np.uint8), 2, "codebook", codebook=np.array([-1.0, -0.25, 0.25, 1.0], np.float32)
    )
    assert cb.validate() == []
    np.testing.assert_array_equal(cb.dequantize(), [[-1.0, 1.0], [-0.25, 0.25]])


def test_per_channel_codebook():
    cb = np.array([[0.0, 1.0], [10.0, 20.0]], np.float32)
    q = QuantizedTensor(np.array([[1, 0], [0, 1]], np.uint8), 1, "codebook", codebook=cb, axis=0)
    assert q.validate() == []
    np.testing.assert_array_equal(q.dequantize(), [[1.0, 0.0], [10.0, 20.0]])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (dict(codes=np.full((3, 8), 9, np.int8)), "outside the 4-bit signed range"),
        (dict(group_size=3), "does not divide"),
        (dict(scales=np.ones((3, 3), np.float32)), "scales dim 1 has extent 3"),
        (dict(zero_points=np.zeros((3, 2), np.int8)), "must not carry zero_points"),
        (dict(scheme="ternary"), "scheme 'ternary'"),
        (dict(bits=9), "bits must be 1..8"),
    ],
)
def test_invalid_grids_are_reported(mutate, message):
    q = groupwise()
    fields = {
        f: getattr(q, f)
        for f in ("codes", "bits", "scheme", "scales", "zero_points", "axis", "group_size", "group_axis", "codebook")
    }
    fields.update(mutate)
    errs = QuantizedTensor(**fields).validate()
    assert any(message in e for e in errs), errs


def test_quantized_constant_in_graph_is_verified():
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (2, 8))
    bad = groupwise()
    bad = QuantizedTensor(
        np.full((3, 8), 100, np.int8), 4, "symmetric", scales=bad.scales, axis=0, group_size=4, group_axis=1
    )
    w = g.add_const("w", bad)
    g.outputs.append(g.op("Linear", [x, w], domain="edgec").output)
    with pytest.raises(ir.VerificationError, match="quantized constant 'w'"):
        ir.verify(ir.Model(g, {"": 17, "edgec": 1}))


def test_sparsity_pattern_checked():
    data = np.array([[1, 0, 0, 2], [0, 3, 4, 0]], np.float32)
    assert ir.Sparsity(n=2, m=4).validate(data) == []
    assert "break the 1:4 pattern" in ir.Sparsity(n=1, m=4).validate(data)[0]


def test_tensor_is_read_only_view():
    a = np.arange(4, dtype=np.float32)
    t = ir.Tensor(a)
    with pytest.raises(ValueError):
        t.numpy()[0] = 5
    a[0] = 7  # the caller's array stays writable
    assert t.nbytes == 16 and ir.Tensor(np.zeros(5, np.int8), ir.DType.INT4).nbytes == 3
