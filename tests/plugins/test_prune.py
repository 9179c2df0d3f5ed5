"""prune: magnitude pruning (unstructured, layer or global scope; N:M), and quantize keeping the zeros."""

import numpy as np
import pytest

from edgec.compiler import fix_input_shapes, load_model
from edgec.errors import UsageError
from edgec.host import host
from edgec.ir import QuantizedTensor
from edgec.ir.passes import PassContext, PassError, PassManager, PipelineError, parse_pipeline
from edgec.plugins.cleanup import DEFAULT_CLEANUP
from edgec.plugins.prune.prune import magnitude_mask, nm_mask


def _run(path, pipe):
    m = load_model(path)
    fix_input_shapes(m, {}, [])
    PassManager(parse_pipeline(DEFAULT_CLEANUP + "," + pipe, host().passes.as_dict())).run(m, PassContext())
    return m


def _sparse_weights(m):
    out = {}
    for v in m.graph.initializers.values():
        if v.sparsity is not None:
            out[v.name] = (v, v.const.dequantize() if isinstance(v.const, QuantizedTensor) else v.const.numpy())
    return out


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_keeps_exactly_n_of_every_m(n, m):
    w = np.random.default_rng(0).standard_normal((16, 32, 3, 3)).astype(np.float32)
    keep = nm_mask(w, n, m)
    blocks = np.moveaxis(keep, 1, -1).reshape(-1, m)
    assert (blocks.sum(1) == n).all()
    # and the kept ones are the largest of their block
    a = np.moveaxis(np.abs(w), 1, -1).reshape(-1, m)
    assert (np.where(blocks, a, np.inf).min(1) >= np.where(blocks, -np.inf, a).max(1)).all()


def test_magnitude_mask_prunes_the_smallest():
    w = np.arange(1, 101, dtype=np.float32).reshape(10, 10) * np.where(np.arange(100) % 2, 1, -1).reshape(10, 10)
    keep = magnitude_mask(w, 0.3)
    assert keep.sum() == 70 and (np.abs(w[~keep]) <= 30).all()


def test_pass_layer_scope_nm_and_global(tiny_cnn_path):
    ws = _sparse_weights(_run(tiny_cnn_path, "prune{sparsity=0.5}"))
    assert ws and all(
        abs(float(np.mean(w == 0)) - 0.5) < 0.01 and v.sparsity.ratio == pytest.approx(np.mean(w == 0))
        for v, w in ws.values()
    )
    ws = _sparse_weights(_run(tiny_cnn_path, "prune{pattern=2:4}"))
    assert ws and all(v.sparsity.validate(w) == [] and (v.sparsity.n, v.sparsity.m) == (2, 4) for v, w in ws.values())
    ws = _sparse_weights(_run(tiny_cnn_path, "prune{sparsity=0.6,scope=global}"))
    total = sum(w.size for _, w in ws.values())
    zeros = sum(int((w == 0).sum()) for _, w in ws.values())
    assert zeros / total == pytest.approx(0.6, abs=0.01)
    assert len({round(v.sparsity.ratio, 2) for v, _ in ws.values()}) > 1  # one threshold, different ratios


@pytest.mark.parametrize(
    "quant",
    [
        "quantize{bits=8}",
        "quantize{bits=4,scheme=asymmetric,group=16}",
        "quantize{method=codebook,bits=3}",
        "quantize{method=codebook,bits=2,group=16}",
        "quantize{method=codebook,bits=4,per_channel_codebook=true}",
        "quantize{method=gptq,bits=4}",
    ],
)
def test_quantize_keeps_pruned_zeros(quant, tiny_cnn_path):
    pre = {
        k.replace("_pruned", ""): w for k, (_, w) in _sparse_weights(_run(tiny_cnn_path, "prune{sparsity=0.5}")).items()
    }
    m = load_model(tiny_cnn_path)
    fix_input_shapes(m, {}, [])
    ctx = PassContext()
    if "gptq" in quant:  # gptq needs calibration data
        from edgec.calibration import load_calibration

        ctx = PassContext(calibration=load_calibration("random", m, seed=0))
    PassManager(parse_pipeline(DEFAULT_CLEANUP + ",prune{sparsity=0.5}," + quant, host().passes.as_dict())).run(m, ctx)
    ws = _sparse_weights(m)
    assert len(ws) == len(pre) > 0
    for name, (v, w) in ws.items():
        assert isinstance(v.const, QuantizedTensor)
        base = name.replace("_pruned_q", "")
        assert (w[pre[base] == 0] == 0).all(), name
        assert v.sparsity.ratio >= 0.5 - 1e-6


def test_bad_options_are_refused():
    passes = host().passes.as_dict()
    with pytest.raises((UsageError, PipelineError), match="N:M"):
        parse_pipeline("prune{pattern=2-4}", passes)
    with pytest.raises((UsageError, PipelineError), match="0 < N < M"):
        parse_pipeline("prune{pattern=4:4}", passes)
    with pytest.raises((UsageError, PipelineError), match="sparsity"):
        parse_pipeline("prune{sparsity=1.5}", passes)
    with pytest.raises((UsageError, PipelineError), match="bits=1"):
        parse_pipeline("quantize{bits=1}", passes)


def _prune_linear(w, xs, opts):
    """Prune a one-Linear model's weight with ``prune{opts,head=true}`` calibrated on ``xs``; returns the pruned
    weight value and the layer's relative output error on ``xs``."""
    from edgec import ir
    from edgec.calibration import CalibrationSet

    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, xs[0].shape)
    g.outputs.append(g.op("Linear", [x, g.add_const("w", w)], domain="edgec", name="fc").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    PassManager(parse_pipeline(f"prune{{{opts},head=true}}", host().passes.as_dict())).run(
        m, PassContext(calibration=CalibrationSet([{"x": a} for a in xs], "test"))
    )
    v = m.graph.nodes[0].inputs[1]
    wp = v.numpy()
    err = np.sqrt(
        sum(float(np.sum((a @ (wp - w).T) ** 2)) for a in xs) / sum(float(np.sum((a @ w.T) ** 2)) for a in xs)
    )
    return v, err


def test_wanda_prunes_per_row_by_input_energy_and_beats_magnitude():
    """Inputs whose channels differ 20x in norm: Wanda keeps the weights that read the loud channels, each
    row exactly at the target sparsity, and the layer's output error is well below magnitude pruning's."""
    rng = np.random.default_rng(0)
    k = 64
    w = rng.standard_normal((16, k)).astype(np.float32)
    gain = np.where(np.arange(k) % 4 == 0, 20.0, 1.0).astype(np.float32)
    xs = [(rng.standard_normal((8, k)) * gain).astype(np.float32) for _ in range(8)]
    out = {}
    for method in ("magnitude", "wanda"):
        v, out[method] = _prune_linear(w, xs, f"method={method},sparsity=0.5")
        wp = v.numpy()
        assert ((wp == 0).sum(1) == k // 2).all() if method == "wanda" else (wp == 0).sum() == w.size // 2
    assert out["wanda"] < 0.7 * out["magnitude"], out


def test_wanda_needs_calibration(tiny_cnn_path):
    with pytest.raises((UsageError, PassError), match="--calib"):
        _run(tiny_cnn_path, "prune{method=wanda}")
    with pytest.raises((UsageError, PipelineError), match="scope=global"):
        parse_pipeline("prune{method=wanda,scope=global}", host().passes.as_dict())


@pytest.mark.parametrize("pattern", ["", "2:4"])
def test_sparsegpt_beats_wanda_and_magnitude_on_correlated_inputs(pattern):
    """Correlated inputs (a low-rank mix plus noise): SparseGPT's weight update recovers most of what the pruned
    weights contributed, so its output error is well below Wanda's and magnitude pruning's at the same mask
    budget; every row keeps exactly its share (or exactly N per M)."""
    rng = np.random.default_rng(0)
    k, n = 64, 32
    w = rng.standard_normal((n, k)).astype(np.float32)
    mix = rng.standard_normal((8, k)).astype(np.float32)
    xs = [
        (rng.standard_normal((16, 8)) @ mix + 0.1 * rng.standard_normal((16, k))).astype(np.float32) for _ in range(8)
    ]
    opts = f"pattern={pattern}" if pattern else "sparsity=0.5"
    out = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        v, out[method] = _prune_linear(w, xs, f"method={method},{opts}")
        wp = v.numpy()
        if pattern:
            assert v.sparsity.validate(wp) == [] and (wp.reshape(n, -1, 4) != 0).sum(-1).max() == 2
        elif method != "magnitude":
            assert ((wp == 0).sum(1) == k // 2).all()
    assert out["sparsegpt"] < 0.6 * min(out["wanda"], out["magnitude"]), out


def test_sparsegpt_joint_quantization_beats_prune_then_quantize():
    """prune{method=sparsegpt,bits=3}: the kept weights are rounded inside the same sweep, so later columns
    compensate pruning and rounding together. The result is a 3-bit QuantizedTensor whose zeros are code 0,
    at the target sparsity, with a lower layer output error than SparseGPT followed by round-to-nearest."""
    from edgec import ir
    from edgec.calibration import CalibrationSet

    rng = np.random.default_rng(3)
    k = 128
    w = rng.standard_normal((32, k)).astype(np.float32)
    mix = rng.standard_normal((k, k)).astype(np.float32) / np.sqrt(k)
    xs = [
        (rng.standard_normal((16, k)) @ mix + rng.standard_normal((16, k)) * 0.3).astype(np.float32) for _ in range(8)
    ]
    joint, err_joint = _prune_linear(w, xs, "method=sparsegpt,sparsity=0.5,bits=3")
    q = joint.const
    assert isinstance(q, ir.QuantizedTensor) and q.bits == 3 and q.method == "sparsegpt"
    assert np.all(np.abs(q.codes) <= 3) and ((q.codes == 0).sum(1) >= k // 2).all()
    assert joint.sparsity is not None and joint.sparsity.ratio >= 0.5

    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, xs[0].shape)
    g.outputs.append(g.op("Linear", [x, g.add_const("w", w)], domain="edgec", name="fc").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    PassManager(
        parse_pipeline(
            "prune{method=sparsegpt,sparsity=0.5,head=true},quantize{bits=3,head_bits=3}", host().passes.as_dict()
        )
    ).run(m, PassContext(calibration=CalibrationSet([{"x": a} for a in xs], "test")))
    wp = m.graph.nodes[0].inputs[1].numpy()
    err_seq = np.sqrt(
        sum(float(np.sum((a @ (wp - w).T) ** 2)) for a in xs) / sum(float(np.sum((a @ w.T) ** 2)) for a in xs)
    )
    assert err_joint < 0.9 * err_seq, (err_joint, err_seq)


def test_joint_bits_need_sparsegpt():
    with pytest.raises(UsageError, match="method=sparsegpt"):
        parse_pipeline("prune{bits=4}", host().passes.as_dict())
