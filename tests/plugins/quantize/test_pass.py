"""The quantize / quantize-activations / smoothquant passes on graphs: selection, roles, folding,
simulation, reports and errors."""

import numpy as np
import pytest

from edgec import ir
from edgec.calibration import CalibrationSet
from edgec.errors import UsageError
from edgec.host import host
from edgec.ir.passes import PassContext, PassError, PassManager, PipelineError, parse_pipeline

REG = host().passes.as_dict()


def transformer_block(seed=0, outliers=True):
    """embedding -> LayerNorm -> (q, k) Linears sharing the LN output -> Add -> Gelu -> head Linear."""
    rng = np.random.default_rng(seed)
    g = ir.Graph()
    ids = g.add_input("ids", ir.DType.INT64, (1, 8))
    emb = g.add_const("emb", rng.standard_normal((50, 32)).astype(np.float32))
    e = g.op("Gather", [ids, ids], name="embed")  # placeholder, fixed below
    g.remove(e)
    e = g.op("Gather", [emb, ids], {"axis": 0}, name="embed").output
    gamma = np.ones(32, np.float32)
    if outliers:
        gamma[[3, 17]] = 25.0
    ln = g.op(
        "LayerNormalization",
        [e, g.add_const("ln_g", gamma), g.add_const("ln_b", np.zeros(32, np.float32))],
        {"axis": -1, "epsilon": 1e-5},
        name="ln",
    ).output
    q = g.op(
        "Linear",
        [ln, g.add_const("wq", rng.standard_normal((32, 32)).astype(np.float32) * 0.2)],
        domain="edgec",
        name="q",
    ).output
    k = g.op(
        "Linear",
        [ln, g.add_const("wk", rng.standard_normal((32, 32)).astype(np.float32) * 0.2)],
        domain="edgec",
        name="k",
    ).output
    h = g.op("Gelu", [g.op("Add", [q, k], name="add").output], domain="edgec", name="gelu").output
    g.outputs.append(
        g.op(
            "Linear",
            [h, g.add_const("head", rng.standard_normal((50, 32)).astype(np.float32))],
            domain="edgec",
            name="lm_head",
        ).output
    )
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    calib = CalibrationSet([{"ids": rng.integers(0, 50, (1, 8))} for _ in range(6)], "test")
    return m, calib


def run(m, pipe, calib):
    m = ir.parse_model(ir.print_model(m))
    PassManager(parse_pipeline(pipe, REG)).run(m, PassContext(calibration=calib))
    return m


def test_roles_embedding_and_head_default_to_8_bit():
    m, calib = transformer_block()
    q = run(m, "quantize{bits=4,group=32}", calib)
    rep = q.reports["edgec.quantization"]
    assert rep["emb"]["role"] == "embedding" and rep["emb"]["bits"] == 8
    assert rep["head"]["role"] == "head" and rep["head"]["bits"] == 8
    assert rep["wq"]["bits"] == 4 and rep["wq"]["group_size"] == 32
    assert all(r["rel_output_error"] is not None for k, r in rep.items() if k != "emb")
    assert rep["wq"]["bytes_after"] < rep["wq"]["bytes_before"] / 4
    q2 = run(m, "quantize{bits=4,embedding_bits=0,head_bits=0,exclude=^wk$}", calib)
    rep2 = q2.reports["edgec.quantization"]
    assert set(rep2) == {"wq"}


def test_awq_folds_into_the_shared_layernorm_exactly():
    m, calib = transformer_block()
    from edgec.plugins.quantize.scaling import apply_input_scale

    f = ir.parse_model(ir.print_model(m))
    ln_out = f.graph.node("ln").output
    s = np.linspace(0.5, 3.0, 32).astype(np.float32)
    where = apply_input_scale(f, ln_out, [f.graph.node("q"), f.graph.node("k")], s)
    assert where == "ln"
    feeds = calib.samples[0]
    a = ir.ReferenceExecutor(m).run(feeds)["lm_head_out"]
    b = ir.ReferenceExecutor(f).run(feeds)["lm_head_out"]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    q = run(m, "quantize{bits=4,method=awq,head_bits=0,embedding_bits=0}", calib)
    assert not any(n.op_type == "Mul" for n in q.graph)  # folded, no explicit scale needed


def test_smoothquant_preserves_float_outputs_and_flattens_activations():
    m, calib = transformer_block()
    s = run(m, "smoothquant{alpha=0.5}", calib)
    feeds = calib.samples[1]
    np.testing.assert_allclose(
        ir.ReferenceExecutor(s).run(feeds)["lm_head_out"],
        ir.ReferenceExecutor(m).run(feeds)["lm_head_out"],
        rtol=1e-4,
        atol=1e-4,
    )
    ln_before = ir.ReferenceExecutor(m, capture=["ln_out"]).run(feeds)["ln_out"]
    ln_after = ir.ReferenceExecutor(s, capture=["ln_out"]).run(feeds)["ln_out"]
    ratio = lambda a: np.abs(a).max(axis=(0, 1)).max() / np.median(np.abs(a).max(axis=(0, 1)))  # noqa: E731
    assert ratio(ln_after) < ratio(ln_before) / 2


@pytest.mark.parametrize("observer", ["minmax", "percentile", "entropy", "mse"])
def test_activation_observers_and_exact_simulation(observer):
    m, calib = transformer_block()
    q = run(m, f"quantize{{bits=8}},quantize-activations{{observer={observer}}}", calib)
    ann = {v.name: v.quant for v in q.graph.values() if v.quant is not None}
    assert "ln_out" in ann and ann["ln_out"].observer == observer
    # Residual add inputs are quantized too.
    assert {"q_out", "k_out"} <= set(ann)
    feeds = calib.samples[0]
    res = ir.ReferenceExecutor(q, capture=["ln_out"]).run(feeds)
    s = ann["ln_out"].scale
    np.testing.assert_array_equal(res["ln_out"] / s, np.round(res["ln_out"] / s))  # values on the int8 grid
    assert np.abs(res["ln_out"] / s).max() <= 128
    if observer != "minmax":
        mm = run(m, "quantize{bits=8},quantize-activations{observer=minmax}", calib)
        assert ann["ln_out"].scale <= [v.quant.scale for v in mm.graph.values() if v.name == "ln_out"][0] + 1e-12


def test_entropy_threshold_clips_a_long_tail():
    from edgec.plugins.quantize.quantize_activations import kl_threshold

    x = np.abs(np.random.default_rng(0).standard_normal(200000))
    x[:5] = 60.0  # a few huge outliers
    hist, edges = np.histogram(x, bins=2048, range=(0, 60.0))
    assert kl_threshold(hist, edges[1]) < 15.0


@pytest.mark.parametrize(
    "pipe, message",
    [
        ("quantize{bits=9}", "bits=9 is not allowed; allowed: 1..8"),
        ("quantize{bits=1}", "bits=1 is a 2-entry palette: use method=codebook"),
        ("quantize{method=magic}", "method='magic' is not allowed"),
        ("quantize{group=100}", "group=100 is not allowed"),
        ("quantize{group=32,granularity=tensor}", "conflicts with granularity=tensor"),
        ("quantize{ops=Linear:Softmax}", "allowed: Linear, Conv"),
        ("quantize-activations{observer=entropy,scheme=asymmetric}", "observer=entropy is symmetric"),
        ("smoothquant{alpha=2}", "alpha=2.0 is not allowed"),
        ("quantize{gguf=Q4_K,scale_dtype=f16}", "scale_dtype= does not apply with gguf="),
    ],
)
def test_bad_options_are_clear(pipe, message):
    with pytest.raises((PipelineError, UsageError)) as e:
        parse_pipeline(pipe, REG)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "pipe",
    [
        "quantize{method=gptq}",
        "quantize{method=awq}",
        "quantize-activations",
        "smoothquant",
        "quantize{method=mse,objective=output}",
    ],
)
def test_calibrated_passes_demand_calibration(pipe):
    m, _ = transformer_block()
    with pytest.raises(PassError, match="needs calibration data: pass --calib"):
        PassManager(parse_pipeline(pipe, REG)).run(ir.parse_model(ir.print_model(m)), PassContext())


def test_conv_layers_quantize_with_gptq_via_im2col():
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 4, 8, 8))
    c = g.op(
        "Conv",
        [x, g.add_const("w", rng.standard_normal((8, 4, 3, 3)).astype(np.float32))],
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]},
        name="conv",
    ).output
    g.outputs.append(g.op("Relu", [c], name="relu").output)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    calib = CalibrationSet([{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(4)], "t")
    # im2col rows must reproduce the convolution exactly.
    from edgec.api.layers import Layer, layer_rows

    rows = layer_rows(Layer(m.graph.node("conv"), m.graph.initializers["w"], "body"), calib.samples[0]["x"])
    conv = ir.ReferenceExecutor(m, capture=["conv_out"]).run(calib.samples[0])["conv_out"]
    via = (rows @ m.graph.initializers["w"].numpy().reshape(8, -1).T).reshape(4, 4, 8).transpose(2, 0, 1)
    np.testing.assert_allclose(via, conv[0], rtol=1e-4, atol=1e-5)
    q = run(m, "quantize{bits=4,method=gptq}", calib)
    rep = q.reports["edgec.quantization"]["w"]
    assert rep["method"] == "gptq" and rep["rel_output_error"] < 0.2


@pytest.mark.parametrize("method", ["rtn", "mse", "gptq", "awq"])
def test_f16_scales_are_float16_values_and_the_grid_stays_exact(method):
    """scale_dtype=f16 rounds each scale to float16 *before* the codes are chosen: every scale is a float16
    value, dequantize() lies on that grid, and the error stays close to float32 scales."""
    m, calib = transformer_block()
    errs = {}
    for sd in ("f32", "f16"):
        q = run(m, f"quantize{{bits=4,group=32,method={method},scale_dtype={sd}}}", calib)
        qt = q.graph.initializers[next(n for n in q.graph.initializers if n.startswith("wq"))].const
        s = np.asarray(qt.scales, np.float32)
        assert qt.validate() == []
        if sd == "f16":
            np.testing.assert_array_equal(s.astype(np.float16).astype(np.float32), s)
            deq = qt.dequantize().reshape(32, 1, 32)
            codes = np.asarray(qt.codes, np.float32).reshape(32, 1, 32)
            np.testing.assert_array_equal(deq, codes * s.reshape(32, 1, 1))
        rep = q.reports["edgec.quantization"]
        errs[sd] = rep[next(k for k in rep if k.startswith("wq"))]["sqnr_db"]  # awq renames it wq_scaled
    assert abs(errs["f16"] - errs["f32"]) < 0.5, errs


@pytest.mark.parametrize("mask_value", [-np.inf, float(np.finfo(np.float32).min)])
def test_an_additive_attention_mask_stays_float(mask_value):
    """A value whose calibrated range reaches float32's extremes (transformers' additive attention mask, -inf or
    float32's lowest where a token is masked) is left in float with a warning naming it; the scores it is added
    to are quantized as usual (before: the pass stopped on an infinite scale)."""
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 4, 8))
    mask = g.add_input("mask", ir.DType.FLOAT32, (1, 4, 8))
    s = g.op("Linear", [x, g.add_const("w", rng.standard_normal((8, 8)).astype(np.float32))], domain="edgec").output
    g.outputs.append(g.op("Add", [s, mask], name="masked").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    samples = [
        {
            "x": rng.standard_normal((1, 4, 8)).astype(np.float32),
            "mask": np.where(rng.random((1, 4, 8)) < 0.3, mask_value, 0).astype(np.float32),
        }
        for _ in range(4)
    ]
    with pytest.warns(UserWarning, match=r"1 value\(s\) left in float.*mask"):
        q = run(m, "quantize-activations", CalibrationSet(samples, "test"))
    vals = {v.name: v for v in q.graph.values()}
    assert vals["mask"].quant is None
    assert vals[s.name].quant is not None and np.isfinite(vals[s.name].quant.scale)
