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
    q = QuantizedTensor(rng.integers(-8, 8, (16, 8)).astype(np.int8), 4, "symmetric",
                        scales=rng.random((16, 1)).astype(np.float32), axis=0)
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


@pytest.mark.parametrize("op, attrs", [("RMSNorm", {"epsilon": 1e-6}), ("Gelu", {"approximate": "tanh"}),
                                       ("Gelu", {})])
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
        ref = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6) * np.linspace(0.5, 2, 8)
    elif attrs.get("approximate") == "tanh":
        ref = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    else:
        from scipy.special import erf
        ref = 0.5 * x64 * (1 + erf(x64 / math.sqrt(2)))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
