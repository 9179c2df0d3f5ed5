"""prune-channels: structured pruning physically shrinks producers and consumers and keeps the graph valid."""

import numpy as np
import pytest

from edgec import ir
from edgec.host import host
from edgec.ir.passes import PassContext, parse_pipeline
from edgec.plugins.prune.prune_channels import find_groups


def _run(pipe, m, calib=None):
    for p in parse_pipeline(pipe, host().passes.as_dict()):
        p.run(m, PassContext(calibration=calib))


def _cnn(zero_channels=()):
    """conv(3->16) -> relu -> conv(16->8) -> clip(0,6) -> conv(8->4, 1x1) -> add(residual-free) output; the
    listed channels of the first conv are all-zero (weights and bias)."""
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (2, 3, 10, 10))
    w0 = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    b0 = rng.standard_normal(16).astype(np.float32)
    w0[list(zero_channels)] = 0
    b0[list(zero_channels)] = 0
    h = g.op(
        "Conv", [x, g.add_const("w0", w0), g.add_const("b0", b0)], {"kernel_shape": [3, 3], "pads": [1] * 4}, name="c0"
    ).output
    h = g.op("Relu", [h], name="r0").output
    h = g.op(
        "Conv",
        [h, g.add_const("w1", rng.standard_normal((8, 16, 3, 3)).astype(np.float32))],
        {"kernel_shape": [3, 3], "pads": [1] * 4},
        name="c1",
    ).output
    h = g.op(
        "Clip", [h, g.add_const("lo", np.array(0, np.float32)), g.add_const("hi", np.array(6, np.float32))], name="clip"
    ).output
    h = g.op(
        "Conv",
        [h, g.add_const("w2", rng.standard_normal((4, 8, 1, 1)).astype(np.float32))],
        {"kernel_shape": [1, 1]},
        name="c2",
    ).output
    g.outputs.append(h)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    return m


def _mlp():
    rng = np.random.default_rng(1)
    g = ir.Graph()
    h = g.add_input("x", ir.DType.FLOAT32, (2, 5, 16))
    up = rng.standard_normal((64, 16)).astype(np.float32)
    up[::2] = 0  # half the neurons are dead
    h = g.op(
        "Linear", [h, g.add_const("up", up), g.add_const("ub", np.zeros(64, np.float32))], domain="edgec", name="up"
    ).output
    h = g.op("Gelu", [h], domain="edgec", name="gelu").output
    h = g.op(
        "Linear",
        [h, g.add_const("down", rng.standard_normal((16, 64)).astype(np.float32))],
        domain="edgec",
        name="down",
    ).output
    g.outputs.append(h)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def test_groups_follow_zero_preserving_chains_only():
    m = _cnn()
    gs = {g.producer.name: [c.name for c in g.consumers] for g in find_groups(m)}
    assert gs == {"c0": ["c1"], "c1": ["c2"]}  # c2 feeds the graph output: not a group


def test_removing_all_zero_channels_keeps_outputs_and_shrinks_tensors():
    zero = (1, 4, 6, 9)
    m = _cnn(zero)
    feeds = ir.random_inputs(m, seed=0)
    before = ir.ReferenceExecutor(m).run(feeds)[m.graph.outputs[0].name]
    _run("prune-channels{sparsity=0.25,include=^c0$}", m)
    ir.verify(m, check_shapes=True)
    c0, c1 = m.graph.node("c0"), m.graph.node("c1")
    assert c0.inputs[1].shape == (12, 3, 3, 3) and c0.inputs[2].shape == (12,)
    assert c1.inputs[1].shape == (8, 12, 3, 3) and c0.outputs[0].static_shape == (2, 12, 10, 10)
    after = ir.ReferenceExecutor(m).run(feeds)[m.graph.outputs[0].name]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_mlp_neurons_and_multiple():
    m = _mlp()
    feeds = ir.random_inputs(m, seed=0)
    before = ir.ReferenceExecutor(m).run(feeds)[m.graph.outputs[0].name]
    _run("prune-channels{sparsity=0.5,multiple=8}", m)
    assert m.graph.node("up").inputs[1].shape == (32, 16) and m.graph.node("down").inputs[1].shape == (16, 32)
    after = ir.ReferenceExecutor(m).run(feeds)[m.graph.outputs[0].name]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)  # the dead half went


def test_real_pruning_compiles_and_verifies(tmp_path):
    """Pruning live channels changes the outputs (an approximation) but the model stays a valid, compilable
    graph: the cpu target builds and runs it."""
    from edgec.compiler import compile as compile_model

    m = _cnn()
    _run("prune-channels{sparsity=0.5,score=magnitude}", m)
    assert m.graph.node("c0").inputs[1].shape[0] == 8 and m.graph.node("c1").inputs[1].shape[0] == 4
    r = compile_model(m, "cpu", "", str(tmp_path / "a"), verify=True)
    assert r.manifest["verification"]["passed"]


def test_wanda_score_needs_calibration():
    from edgec.errors import UsageError

    with pytest.raises(UsageError, match="--calib"):
        _run("prune-channels{score=wanda}", _cnn())


def test_wanda_score_ranks_by_activation():
    """With score=wanda a channel whose activations are silent on the calibration data goes first, even
    though its weights are large."""
    from edgec.calibration import CalibrationSet

    m = _mlp()
    up = np.asarray(m.graph.node("up").inputs[1].const.numpy()).copy()
    up[1] = 0
    up[1, 0] = 100.0  # large weight on input feature 0 ...
    m.graph.node("up").replace_input_with(1, m.graph.add_const("up2", up))
    samples = [
        {
            "x": np.random.default_rng(s).standard_normal((2, 5, 16)).astype(np.float32)
            * np.r_[0, np.ones(15)].astype(np.float32)
        }
        for s in range(4)
    ]  # ... which is always zero in the data
    _run("prune-channels{sparsity=0.53,score=wanda}", m, CalibrationSet(samples, "test"))
    kept = np.asarray(m.graph.node("up").inputs[1].const.numpy())
    assert kept.shape[0] == 30 and not np.any(np.abs(kept) == 100.0)
