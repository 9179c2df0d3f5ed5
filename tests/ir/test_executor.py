"""The reference executor: exact numerics, dequantized weights, captured intermediates."""

import numpy as np
import pytest

from edgec import ir
from edgec.ir import QuantizedTensor


def test_linear_matches_numpy(mlp):
    feeds = ir.random_inputs(mlp, seed=3)
    out = ir.ReferenceExecutor(mlp, capture=["relu_out"]).run(feeds)
    x = feeds["x"]
    w1, b1, w2 = (mlp.graph.initializers[k].numpy() for k in ("w1", "b1", "w2"))
    h = np.maximum(x @ w1.T + b1, 0)
    np.testing.assert_allclose(out["relu_out"], h, rtol=1e-6)
    np.testing.assert_allclose(out["fc2_out"], h @ w2.T, rtol=1e-5, atol=1e-6)


def test_quantized_weights_run_as_their_exact_dequantized_values(mlp):
    w = mlp.graph.initializers["w1"]
    rng = np.random.default_rng(0)
    q = QuantizedTensor(
        rng.integers(-8, 8, (16, 8)).astype(np.int8),
        4,
        "symmetric",
        scales=rng.random((16, 1)).astype(np.float32),
        axis=0,
    )
    qv = mlp.graph.add_const("w1q", q)
    mlp.graph.node("fc1").replace_input_with(1, qv)
    mlp.graph.remove_const(w.name)
    ir.verify(mlp)
    feeds = ir.random_inputs(mlp)
    got = ir.ReferenceExecutor(mlp, capture=["fc1_out"]).run(feeds)["fc1_out"]
    expect = feeds["x"] @ q.dequantize().T + mlp.graph.initializers["b1"].numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)


def test_hooks_and_missing_inputs(mlp):
    seen = []
    ir.ReferenceExecutor(mlp, capture=["fc1_out"]).run(ir.random_inputs(mlp), hooks={"fc1_out": seen.append})
    assert seen and seen[0].shape == (2, 16)
    with pytest.raises(ir.ExecutionError, match="missing inputs"):
        ir.ReferenceExecutor(mlp).run({})


def test_random_inputs_are_seeded_and_nonzero(mlp):
    a, b = ir.random_inputs(mlp, seed=1), ir.random_inputs(mlp, seed=1)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert np.abs(a["x"]).min() > 0


@pytest.mark.parametrize("op, attrs", [("RMSNorm", {"epsilon": 1e-6}), ("Gelu", {"approximate": "tanh"}), ("Gelu", {})])
def test_edgec_op_semantics(op, attrs):
    import math

    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (3, 8))
    ins = [x] + ([g.add_const("w", np.linspace(0.5, 2, 8).astype(np.float32))] if op == "RMSNorm" else [])
    g.outputs.append(g.op(op, ins, attrs, domain="edgec", name="op").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    xs = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    got = ir.ReferenceExecutor(m).run({"x": xs})["op_out"].astype(np.float64)
    x64 = xs.astype(np.float64)
    if op == "RMSNorm":
        ref = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6) * np.linspace(0.5, 2, 8)
    elif attrs.get("approximate") == "tanh":
        ref = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    else:
        from scipy.special import erf

        ref = 0.5 * x64 * (1 + erf(x64 / math.sqrt(2)))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme, group", [("symmetric", None), ("asymmetric", 4), ("symmetric", 4)])
def test_keep_quantized_and_capture_only_are_bit_identical(scheme, group):
    """Integer codes dequantized inside the graph compute exactly dequantize()'s numbers, and a capture
    through the ancestor subgraph returns exactly what the full model computes."""
    rng = np.random.default_rng(3)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 2, 6, 6))
    signed = scheme == "symmetric"
    lo, hi = (-8, 8) if signed else (0, 16)
    shape4, shape2 = (3, 2, 3, 3), (5, 12)
    conv_w = QuantizedTensor(
        rng.integers(lo, hi, shape4).astype(np.int8 if signed else np.uint8),
        4,
        scheme,
        scales=rng.random((3, 1, 1, 1)).astype(np.float32) + 0.1,
        zero_points=None if signed else np.full((3, 1, 1, 1), 8, np.uint8),
        axis=0,
    )
    lin_scales = rng.random((5, 12 // (group or 12))).astype(np.float32) + 0.1
    lin_w = QuantizedTensor(
        rng.integers(lo, hi, shape2).astype(np.int8 if signed else np.uint8),
        4,
        scheme,
        scales=lin_scales,
        axis=0,
        group_size=group,
        group_axis=1 if group else None,
        zero_points=None if signed else np.full(lin_scales.shape, 7, np.uint8),
    )
    c = g.op("Conv", [x, g.add_const("cw", conv_w)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, name="conv").output
    r = g.op("Reshape", [c, g.add_const("shp", np.array([9, 12], np.int64))], name="flat").output
    g.outputs.append(g.op("Linear", [r, g.add_const("lw", lin_w)], domain="edgec", name="fc").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    ir.verify(m)
    feeds = {"x": rng.standard_normal((1, 2, 6, 6)).astype(np.float32)}
    full = ir.ReferenceExecutor(m, capture=["conv_out"]).run(feeds)
    kept = ir.ReferenceExecutor(m, keep_quantized=True).run(feeds)
    np.testing.assert_array_equal(kept["fc_out"], full["fc_out"])
    part = ir.ReferenceExecutor(m, capture=["conv_out"], capture_only=True, keep_quantized=True).run(feeds)
    assert set(part) == {"conv_out"}
    np.testing.assert_array_equal(part["conv_out"], full["conv_out"])
    proto = ir.to_onnx(m, keep_quantized=True, only_outputs=["conv_out"])
    assert [n.op_type for n in proto.graph.node].count("Conv") == 1 and "MatMul" not in str(proto.graph.node)
    assert any(t.data_type in (2, 3) for t in proto.graph.initializer)  # uint8/int8 codes, not floats
