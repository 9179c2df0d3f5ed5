"""The openvino target: the saved IR runs on the OpenVINO CPU plugin and matches the reference executor;
quantized weights keep their low-precision type in the compiled runtime model; activation quantization
becomes FakeQuantize executed as int8."""

import os

import numpy as np
import pytest

from edgec import ir
from edgec.api import gguf as gg
from edgec.errors import UnsupportedError
from edgec.ir import QuantizedTensor
from edgec.plugins.quantize import methods

pytest.importorskip("openvino")

from edgec.targets.openvino import OpenVINOTarget, read_metadata, runtime_weight_precisions  # noqa: E402
from edgec.targets.openvino.builder import OV_NF4, pack_nibbles  # noqa: E402
from target_models import VECTOR_CASES, decode_model, linear_model, lowering_zoo, quantize_rtn, vector_tensor  # noqa: E402,E501


def emit_and_run(m: ir.Model, out, target=None):
    target = target or OpenVINOTarget()
    assert target.check(m) == []
    os.makedirs(out, exist_ok=True)
    art = target.emit(m, str(out), None)
    feeds = ir.random_inputs(m, seed=5)
    got = target.run_artifact(str(out), feeds, [v.name for v in m.graph.inputs])
    ref = ir.ReferenceExecutor(m).run(feeds)
    return art, got, [ref[o.name] for o in m.graph.outputs]


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.mark.parametrize(
    "bits, symmetric, group, storage",
    [
        (8, True, None, "i8"),
        (8, False, None, "u8"),
        (4, True, 32, "i4"),
        (4, False, 16, "u4"),
        (4, True, None, "i4"),
        (3, False, 32, "u4"),
        (2, True, 64, "i4"),
    ],
)
def test_quantized_linear_is_exact_and_stays_compressed(bits, symmetric, group, storage, tmp_path):
    w = np.random.default_rng(bits).standard_normal((48, 128)).astype(np.float32)
    m = linear_model(quantize_rtn(w, bits, symmetric, group))
    art, got, ref = emit_and_run(m, tmp_path)
    assert rel(got[0], ref[0]) <= 1e-6  # the decompression subgraph computes dequantize() exactly
    assert art.manifest["weight_encodings"]["w"].startswith(storage)
    precisions = runtime_weight_precisions(OpenVINOTarget().compile(str(tmp_path)))
    assert list(precisions.values()) == [storage], precisions  # the CPU plugin kept the weights compressed
    bin_bytes = os.path.getsize(tmp_path / "model.bin")
    code_bytes = 48 * 128 // (2 if storage[1] == "4" else 1)
    assert code_bytes <= bin_bytes < code_bytes + 48 * 128 * 4 // (group or 128) * 2 + 48 * 4 + 1024


def test_nf4_exact_by_default_and_native_on_request(tmp_path):
    w = np.random.default_rng(0).standard_normal((32, 128)).astype(np.float32)
    q = methods.nf4(w, 64, w.shape)
    m = linear_model(q)
    art, got, ref = emit_and_run(m, tmp_path / "exact")
    assert art.manifest["weight_encodings"]["w"] == "codebook[16] gather"
    assert rel(got[0], ref[0]) <= 1e-6
    art, got, ref = emit_and_run(m, tmp_path / "native", OpenVINOTarget(nf4="native"))
    assert art.manifest["weight_encodings"]["w"] == "nf4"
    assert rel(got[0], ref[0]) <= 1e-5  # OpenVINO's table: one level one float32 ulp off bitsandbytes'
    assert list(runtime_weight_precisions(OpenVINOTarget().compile(str(tmp_path / "native"))).values()) == ["nf4"]
    # With OpenVINO's own table the native type is exact and chosen by default.
    q_ov = QuantizedTensor(
        q.codes,
        4,
        "codebook",
        codebook=OV_NF4.copy(),
        scales=q.scales,
        axis=0,
        group_size=64,
        group_axis=1,
        method="nf4",
    )
    art, got, ref = emit_and_run(linear_model(q_ov), tmp_path / "ovtable")
    assert art.manifest["weight_encodings"]["w"] == "nf4" and rel(got[0], ref[0]) <= 1e-6


@pytest.mark.parametrize("per_channel, group", [(False, 0), (True, 0), (True, 32)])
def test_codebooks_decode_exactly(per_channel, group, tmp_path):
    w = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    q = methods.codebook(w, 3, per_channel, group)
    art, got, ref = emit_and_run(linear_model(q), tmp_path)
    assert art.manifest["weight_encodings"]["w"] == "codebook[8] gather"
    assert rel(got[0], ref[0]) <= 1e-6


@pytest.mark.parametrize("case", VECTOR_CASES)
def test_vector_codebooks_decode_bit_exactly(case, tmp_path):
    """vq weights: indices Gather'ed from the codebooks on the CPU plugin give the IR's weight bit for bit."""
    q = vector_tensor(**case)
    m, feeds = decode_model(q)
    t = OpenVINOTarget()
    assert t.check(m) == []
    art = t.emit(m, str(tmp_path), None)
    assert art.manifest["weight_encodings"]["w"].startswith(f"vector codebook[{q.codebook.shape[2]}x{q.vector_dim}]")
    got = t.run_artifact(str(tmp_path), feeds, ["x"])[0]
    assert np.array_equal(got, q.dequantize().T)


@pytest.mark.parametrize("tname", ["Q4_K", "Q5_1", "Q8_0"])
def test_gguf_grids_carry_over(tname, tmp_path):
    """Affine (scale + offset) and symmetric GGUF block grids from the quantize pass run unchanged."""
    w = np.random.default_rng(2).standard_normal((32, 256)).astype(np.float32)
    q = gg.quantize_matrix(w, gg.TYPES[tname])
    art, got, ref = emit_and_run(linear_model(q), tmp_path)
    assert rel(got[0], ref[0]) <= 1e-6


def test_f16_weights_halve_the_file(tmp_path):
    m = lowering_zoo()
    emit_and_run(m, tmp_path / "f32")
    art, got, ref = emit_and_run(m, tmp_path / "f16", OpenVINOTarget(weights="f16"))
    assert "f16" in art.manifest["weight_encodings"].values()
    assert os.path.getsize(tmp_path / "f16" / "model.bin") < 0.6 * os.path.getsize(tmp_path / "f32" / "model.bin")
    for a, b in zip(got, ref):
        assert rel(a, b) <= 2e-3


def test_every_lowering_matches_reference(tmp_path):
    _, got, ref = emit_and_run(lowering_zoo(), tmp_path)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_packing_puts_the_first_code_in_the_low_nibble():
    assert pack_nibbles(np.array([1, 2, 15, 0, 7], np.uint8)).tolist() == [0x21, 0x0F, 0x07]
    assert pack_nibbles(np.array([-8, -1], np.int8)).tolist() == [0xF8]


def test_static_int8_runs_as_int8_and_verifies(tiny_cnn_path, tmp_path):
    from edgec.compiler import compile as compile_model

    r = compile_model(
        tiny_cnn_path,
        "openvino",
        "quantize{bits=8},quantize-activations",
        str(tmp_path / "a"),
        calib="random",
        verify=True,
    )
    v = r.manifest["verification"]
    assert v["passed"] and v["ran"] and v["criterion"] == "activation-quant", v["summary"]
    assert r.manifest["target"]["fake_quantize_nodes"] > 0
    compiled = OpenVINOTarget().compile(str(tmp_path / "a"))
    convs = [
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    ]
    assert convs and all(p in ("i8", "u8") for p in convs), convs  # real int8 convolutions


def test_compile_verify_float_and_int4(tiny_cnn_path, tmp_path):
    from edgec.compiler import compile as compile_model

    for pipe, name in (("", "fp"), ("quantize{bits=4,group=16,ops=Linear}", "q4")):
        r = compile_model(tiny_cnn_path, "openvino", pipe, str(tmp_path / name), verify=True)
        v = r.manifest["verification"]
        assert v["passed"] and v["ran"], v["summary"]
        assert max(o["vs_reference_max_rel_err"] for o in v["outputs"]) <= 1e-5
        assert set(os.listdir(tmp_path / name)) >= {"model.xml", "model.bin", "manifest.json"}
    assert "edgec.llm" not in read_metadata(str(tmp_path / "fp"))


def test_unsupported_ops_are_named_before_lowering():
    # Det: neither lowered natively nor converted by OpenVINO's ONNX frontend (Einsum, once refused here, now goes
    # through the frontend: Capabilities.fallback_ops)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (3, 3))
    g.outputs.append(g.op("Det", [x], name="det").output)
    problems = OpenVINOTarget().check(ir.Model(g, {"": 17, "edgec": 1}))
    assert any("'det': operator Det" in p for p in problems)


def test_fallback_op_is_spliced_and_a_failed_conversion_is_named(tmp_path):
    """An op without a native lowering goes through OpenVINO's ONNX frontend, spliced between native ops; a node
    the frontend cannot convert is an UnsupportedError naming the node and op."""
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (2, 3, 4))
    e = g.op("Einsum", [g.op("Relu", [x]).output, x], {"equation": "bij,bkj->bik"}, name="ein").output
    g.outputs.append(g.op("Neg", [e]).output)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    _, got, ref = emit_and_run(m, tmp_path / "ok")
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (2, 3))
    g.outputs.append(g.op("Einsum", [x], {"equation": "not an equation"}, name="bad").output)
    with pytest.raises(UnsupportedError, match=r"node 'bad' \(Einsum\): OpenVINO's ONNX frontend cannot convert it"):
        OpenVINOTarget().emit(ir.Model(g, {"": 17}), str(tmp_path), None)


def test_float16_scales_are_stored_as_float16(tmp_path):
    """Scales that are float16 values (quantize{scale_dtype=f16}) are stored in half the bytes, exactly."""
    from edgec.host import host
    from edgec.ir.passes import PassContext, PassManager, parse_pipeline

    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    sizes = {}
    for sd in ("f32", "f16"):
        g = ir.Graph()
        x = g.add_input("x", ir.DType.FLOAT32, (2, 256))
        g.outputs.append(g.op("Linear", [x, g.add_const("w", w)], domain="edgec", name="fc").output)
        m = ir.Model(g, {"": 17, "edgec": 1})
        ir.infer_shapes(m)
        PassManager(
            parse_pipeline(f"quantize{{bits=4,group=32,head_bits=4,scale_dtype={sd}}}", host().passes.as_dict())
        ).run(m, PassContext())
        art, got, ref = emit_and_run(m, tmp_path / sd)
        assert np.array_equal(got[0], ref[0]) if sd == "f16" else rel(got[0], ref[0]) <= 1e-6
        sizes[sd] = os.path.getsize(tmp_path / sd / "model.bin")
        # With scale_dtype=f16 every (code * scale) is a float16 value, so the weights are decompressed in
        # float16 (OpenVINO's fast path) and still equal the IR's; float32 scales keep float32 arithmetic.
        want = "i4 group-wise f16" if sd == "f16" else "i4 group-wise"
        assert list(art.manifest["weight_encodings"].values()) == [want]
        prec = runtime_weight_precisions(OpenVINOTarget().compile(str(tmp_path / sd)))
        assert list(prec.values()) == ["i4"], prec
    assert sizes["f32"] - sizes["f16"] == 64 * 8 * 2  # 512 scales, 2 bytes saved each


def test_f16_decompression_is_opt_in_and_labelled(tmp_path):
    """decompression=f16 trades exactness for NNCF-style speed: the encoding says the weights are rounded."""
    w = np.random.default_rng(3).standard_normal((64, 128)).astype(np.float32)
    m = linear_model(quantize_rtn(w, 8, False, None))
    art, got, ref = emit_and_run(m, tmp_path / "exact")
    assert art.manifest["weight_encodings"]["w"] == "u8" and rel(got[0], ref[0]) <= 1e-6
    art, got, ref = emit_and_run(m, tmp_path / "f16", OpenVINOTarget(decompression="f16"))
    assert art.manifest["weight_encodings"]["w"] == "u8 f16 (rounded)"
    assert 0 < rel(got[0], ref[0]) <= 2e-3


def test_dilated_average_pool_is_a_clear_error(tmp_path):
    from edgec.errors import UnsupportedError

    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 2, 8, 8))
    g.outputs.append(g.op("AveragePool", [x], {"kernel_shape": [2, 2], "dilations": [2, 2]}, name="pool").output)
    m = ir.Model(g, {"": 19, "edgec": 1})
    ir.infer_shapes(m)
    with pytest.raises(UnsupportedError, match="'pool': dilated AveragePool is not supported"):
        OpenVINOTarget().emit(m, str(tmp_path), None)
