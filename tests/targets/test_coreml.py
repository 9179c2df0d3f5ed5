"""The coreml target: .mlpackage saved, re-loaded, every compressed weight decoded bit-exactly from the package,
and the saved program re-executed by edgec's MIL evaluator (no Core ML runtime exists on Linux; on macOS a
test runs MLModel.predict instead)."""

import os
import platform

import numpy as np
import pytest

pytest.importorskip("coremltools")

from edgec import ir  # noqa: E402
from edgec.compiler import fix_input_shapes, load_model  # noqa: E402
from edgec.verify import _top1  # noqa: E402
from edgec.errors import UnsupportedError  # noqa: E402
from edgec.host import host  # noqa: E402
from edgec.ir.passes import PassContext, PassManager, parse_pipeline  # noqa: E402
from edgec.plugins.cleanup import DEFAULT_CLEANUP  # noqa: E402
from edgec.targets.coreml import CoreMLTarget  # noqa: E402
from target_models import VECTOR_CASES, decode_model, vector_tensor  # noqa: E402

F16 = "scale_dtype=f16"


def _prepare(path_or_model, pipe):
    m = load_model(path_or_model) if isinstance(path_or_model, str) else path_or_model
    fix_input_shapes(m, {}, [])
    PassManager(parse_pipeline(DEFAULT_CLEANUP + ("," + pipe if pipe else ""), host().passes.as_dict())).run(
        m, PassContext()
    )
    return m


def _emit_and_run(m, tmp_path, deployment="ios18", precision="fp16"):
    t = CoreMLTarget(deployment=deployment, precision=precision)
    assert t.check(m) == []
    art = t.emit(m, str(tmp_path), PassContext())
    feeds = ir.random_inputs(m, seed=1)
    got = t.run_artifact(str(tmp_path), feeds)
    ref = ir.ReferenceExecutor(m).run(feeds)
    return art, got, [ref[o.name] for o in m.graph.outputs]


def _cos(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# pipeline, deployment, the encodings the three conv weights must get
WEIGHT_FORMATS = [
    ("", "ios18", "fp16"),
    (f"quantize{{bits=8,{F16}}}", "ios18", "int8"),
    (f"quantize{{bits=8,{F16}}}", "ios16", "int8"),
    (f"quantize{{bits=4,{F16}}}", "ios18", "int4"),
    (
        f"quantize{{bits=4,group=16,scheme=asymmetric,ops=Linear,head_bits=4,{F16}}},quantize{{bits=8,ops=Conv,{F16}}}",
        "ios18",
        "int8",
    ),
    (f"quantize{{method=codebook,bits=4,{F16}}}", "ios18", "palette4"),
    (f"quantize{{method=codebook,bits=4,{F16}}}", "ios16", "palette4"),
    ("quantize{method=codebook,bits=1,head_bits=0}", "ios17", "palette1"),
    (f"quantize{{method=codebook,bits=3,per_channel_codebook=true,{F16}}}", "ios18", "palette3"),
    (f"quantize{{method=codebook,bits=5,{F16}}}", "ios18", "palette5"),
    (f"quantize{{method=codebook,bits=7,{F16}}}", "macos15", "palette7"),
    ("prune{sparsity=0.5}", "ios18", "sparse"),
    ("prune{sparsity=0.5}", "ios16", "sparse"),
    (f"prune{{sparsity=0.5}},quantize{{bits=8,{F16}}}", "ios18", "sparse+int8"),
    (f"prune{{sparsity=0.5}},quantize{{bits=4,scheme=asymmetric,{F16}}}", "ios18", "sparse+int4"),
    (f"prune{{sparsity=0.5}},quantize{{method=codebook,bits=4,{F16}}}", "ios18", "sparse+palette4"),
    (
        f"prune{{pattern=2:4}},quantize{{method=codebook,bits=2,per_channel_codebook=true,{F16}}}",
        "ios18",
        "sparse+palette2",
    ),
]


@pytest.mark.parametrize("pipe, deployment, kind", WEIGHT_FORMATS)
def test_weight_formats_decode_exactly_and_run(pipe, deployment, kind, tiny_cnn_path, tmp_path):
    m = _prepare(tiny_cnn_path, pipe)
    art, got, ref = _emit_and_run(m, tmp_path, deployment)
    man = art.manifest
    assert man["deployment"] == deployment
    convs = [n.inputs[1].name for n in m.graph if n.op_type == "Conv"]
    if kind == "fp16":
        assert man["compressed_weights"] == {} and man["decoded_bit_exact"] == 0
    else:
        assert [man["compressed_weights"].get(c) for c in convs[1:]] == [kind] * 2, man["compressed_weights"]
        assert man["decoded_bit_exact"] == len(man["compressed_weights"]) > 0
    assert _cos(got[0], ref[0]) > 0.9999
    assert os.path.isdir(tmp_path / "model.mlpackage")


@pytest.mark.parametrize(
    "pipe, kind",
    [
        ("", None),
        (f"quantize{{bits=8,{F16}}}", "int8"),
        (f"quantize{{method=codebook,bits=4,{F16}}}", "palette4"),
        ("prune{sparsity=0.5}", "sparse"),
    ],
)
def test_fp32_precision_keeps_the_grid_and_computes_in_fp32(pipe, kind, tiny_cnn_path, tmp_path):
    """precision=fp32: every float op and float weight in fp32; a quantized grid is stored as in fp16 (decoded
    bit for bit) and widened, so the artifact follows the reference to fp32 rounding, not fp16's."""
    m = _prepare(tiny_cnn_path, pipe)
    art, got, ref = _emit_and_run(m, tmp_path, precision="fp32")
    man = art.manifest
    assert man["precision"] == "fp32"
    if kind is not None:
        assert kind in man["compressed_weights"].values() and man["decoded_bit_exact"] > 0
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-5)
    from edgec.targets.coreml.evaluate import load_program

    dtypes = {
        str(o.dtype)
        for op in load_program(str(tmp_path / "model.mlpackage")).functions["main"].operations
        for o in op.outputs
        if op.op_type not in ("const",) and not op.op_type.startswith("constexpr_")
    }
    assert not any("fp16" in d for d in dtypes), dtypes


def test_fp32_precision_keeps_values_beyond_fp16(tmp_path):
    """Softmax of values near 1e4 (fp16's spacing there is 8): fp16 compute cannot tell them apart, fp32 can;
    the default stays fp16, whose --verify policy says so."""
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    m = ir.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = {"x": np.array([[0, 1, 2, 3], [10000, 10001, 10002, 10003]], np.float32)}
    want = np.exp(x["x"] - x["x"].max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    res = {}
    for prec in ("fp16", "fp32"):
        t = CoreMLTarget(precision=prec)
        t.emit(m, str(tmp_path / prec), PassContext())
        res[prec] = t.run_artifact(str(tmp_path / prec), x)[0]
    np.testing.assert_allclose(res["fp32"], want, rtol=1e-5)
    assert not np.allclose(res["fp16"][1], want[1], rtol=1e-2)  # fp16 rounds 10001 to 10000
    assert CoreMLTarget().verify_policy() is not None and CoreMLTarget(precision="fp32").verify_policy() is None


_BITWISE_NP = {"BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or, "BitwiseXor": np.bitwise_xor}


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"])
@pytest.mark.parametrize("np_dtype", [np.int32, np.int8, np.uint8, np.int16, np.uint16])
def test_bitwise_ops_are_exact_at_the_extremes(op, np_dtype, tmp_path):
    """MIL has no bitwise ops: the lowering splits int32 into bits by floor_div / mod (an arithmetic shift for
    negatives), with the sign bit as its own term; NOT is -1 - x. Checked on every extreme of each type (the
    sign bit, -1, MIN, MAX, 0) against numpy, broadcast against a lower-rank operand."""
    from onnx import helper

    info = np.iinfo(np_dtype)
    vals = np.array(
        [
            info.min,
            info.min + 1,
            -1 if info.min else 3,
            0,
            1,
            2,
            0x55,
            0x2A,
            info.max - 1,
            info.max,
            -0x56 if info.min else 0xAA,
            7,
        ],
        np.int64,
    )
    x = np.add.outer(np.zeros(3, np.int64), vals).astype(np_dtype)
    x[1] = np.roll(x[1], 3)
    x[2] = np.roll(x[2], 7)
    y = np.roll(vals, 5).astype(np_dtype)
    et = helper.np_dtype_to_tensor_dtype(np.dtype(np_dtype))
    ins = ["x"] if op == "BitwiseNot" else ["x", "y"]
    g = helper.make_graph(
        [helper.make_node(op, ins, ["z"])],
        "g",
        [helper.make_tensor_value_info("x", et, list(x.shape))]
        + ([helper.make_tensor_value_info("y", et, list(y.shape))] if op != "BitwiseNot" else []),
        [helper.make_tensor_value_info("z", et, list(x.shape))],
    )
    m = ir.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    t = CoreMLTarget()
    t.emit(m, str(tmp_path), PassContext())
    got = t.run_artifact(str(tmp_path), {"x": x, "y": y} if op != "BitwiseNot" else {"x": x})[0]
    want = np.invert(x) if op == "BitwiseNot" else _BITWISE_NP[op](x, y)
    assert got.dtype == want.dtype and np.array_equal(got, want), (x, y, got, want)


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_quantize_linear_rounds_half_to_even_and_saturates(precision, tmp_path):
    """QuantizeLinear divides and rounds in fp32 in either precision (ties to even, as ONNX), adds the zero
    point per channel and saturates to the output type's range."""
    from onnx import TensorProto, helper, numpy_helper

    x = np.array(
        [
            [-300.0, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 126.5, 300.0],
            [-130.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        ],
        np.float32,
    )
    scale = numpy_helper.from_array(np.array([1.0, 0.5], np.float32), "s")
    zp = numpy_helper.from_array(np.array([0, -3], np.int8), "zp")
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"], axis=0)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 10])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [2, 10])],
        [scale, zp],
    )
    m = ir.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]))
    t = CoreMLTarget(precision=precision)
    t.emit(m, str(tmp_path), PassContext())
    got = t.run_artifact(str(tmp_path), {"x": x})[0]
    want = np.clip(np.round(x / np.array([[1.0], [0.5]], np.float32)) + np.array([[0], [-3]]), -128, 127)
    assert got.dtype == np.int8 and np.array_equal(got, want.astype(np.int8)), got


@pytest.mark.parametrize(
    "pipe, bits_per_weight",
    [
        ("", 16),
        (f"quantize{{bits=8,head_bits=8,{F16}}}", 8),
        (f"quantize{{bits=4,group=32,head_bits=4,{F16}}}", 4 + 16 / 32),  # + one fp16 scale per 32 weights
        ("quantize{method=codebook,bits=3,head_bits=0}", 3),
        ("quantize{method=codebook,bits=2,head_bits=0}", 2),
        ("prune{sparsity=0.75,head=true}", 16 * 0.25 + 1),  # the non-zeros in fp16 + a 1-bit mask
    ],
)
def test_sub_byte_and_sparse_storage_is_real(pipe, bits_per_weight, tmp_path):
    """The package's weight file holds the bits it claims: a 512x512 Linear stored at b bits per weight
    takes b/8 bytes each (plus LUTs, alignment and headers: under 10% and 4 KiB)."""
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 512))
    y = g.op(
        "Linear", [x, g.add_const("w", rng.standard_normal((512, 512)).astype(np.float32))], domain="edgec", name="fc"
    ).output
    g.outputs.append(g.op("Relu", [y], name="act").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    m = _prepare(m, pipe)
    CoreMLTarget().emit(m, str(tmp_path), PassContext())
    blob = tmp_path / "model.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    size = blob.stat().st_size
    ideal = 512 * 512 * bits_per_weight / 8
    assert ideal <= size <= ideal * 1.1 + 4096, (size, ideal)


@pytest.mark.parametrize("case", [c for c in VECTOR_CASES if c.get("codebook_bits", 16) != 32])
def test_vector_palettes_decode_bit_exactly(case, tmp_path):
    """vq weights become ``constexpr_lut_to_dense`` with a vector axis (one LUT per column group); coremltools'
    own decoder gives the IR's weight bit for bit (float16 codebooks: exact), and the evaluator runs it."""
    from edgec.targets.coreml import check_package
    from edgec.targets.coreml.evaluate import constexpr_value, load_program

    q = vector_tensor(**case)
    m, feeds = decode_model(q)
    t = CoreMLTarget()
    assert t.check(m) == []
    art = t.emit(m, str(tmp_path), PassContext())
    assert art.manifest["compressed_weights"]["w"] == f"vector{q.vector_dim}d-palette{q.bits}"
    prog = load_program(str(tmp_path / "model.mlpackage"))
    op = next(o for o in prog.functions["main"].operations if o.op_type == "constexpr_lut_to_dense")
    assert op.vector_axis.val == 1 and op.lut.shape[-1] == q.vector_dim
    assert np.array_equal(np.asarray(constexpr_value(op)), q.dequantize().astype(np.float16))
    assert check_package(str(tmp_path / "model.mlpackage"), m, {"w": op.name}) == 1
    want = q.dequantize().T.astype(np.float16).astype(np.float32)
    assert np.array_equal(t.run_artifact(str(tmp_path), feeds)[0], want)


def test_vector_palettes_need_ios18_and_at_most_8_index_bits():
    m, _ = decode_model(vector_tensor())
    assert any("vector palettes need the iOS18 opset" in p for p in CoreMLTarget(deployment="ios17").check(m))
    m, _ = decode_model(vector_tensor(shape=(64, 128), bits=10, group=64))
    assert any("10-bit indices) cannot be encoded by this target" in p for p in CoreMLTarget().check(m))


def test_old_opsets_refuse_what_they_cannot_store_before_emitting(tiny_cnn_path, tmp_path):
    m = _prepare(tiny_cnn_path, f"quantize{{bits=4,group=16,{F16}}}")
    problems = CoreMLTarget(deployment="ios16").check(m)
    assert problems and all("iOS18 opset" in p and "deployment=ios18" in p for p in problems)
    m = _prepare(tiny_cnn_path, f"quantize{{method=codebook,bits=4,per_channel_codebook=true,{F16}}}")
    assert any("per-channel" in p for p in CoreMLTarget(deployment="ios17").check(m))
    assert CoreMLTarget(deployment="ios18").check(m) == []


def test_float32_scales_are_refused_with_the_fix(tiny_cnn_path, tmp_path):
    m = _prepare(tiny_cnn_path, "quantize{bits=8}")
    with pytest.raises(UnsupportedError, match=r"scale_dtype=f16.*precision=fp32"):
        CoreMLTarget().emit(m, str(tmp_path), PassContext())
    # fp32 compute stores the scales in fp32: the grid decodes to the IR's weight bit for bit
    art = CoreMLTarget(precision="fp32").emit(m, str(tmp_path / "fp32"), PassContext())
    assert art.manifest["decoded_bit_exact"] == len(art.manifest["compressed_weights"]) > 0


def test_fp32_codebooks_decode_bit_exactly_in_fp32(tmp_path):
    """A vq codebook that fp16 cannot hold (codebook_bits=32) is stored as is under precision=fp32."""
    from edgec.targets.coreml.evaluate import constexpr_value, load_program

    case = next(c for c in VECTOR_CASES if c.get("codebook_bits", 16) == 32)
    q = vector_tensor(**case)
    m, feeds = decode_model(q)
    CoreMLTarget(precision="fp32").emit(m, str(tmp_path), PassContext())
    prog = load_program(str(tmp_path / "model.mlpackage"))
    op = next(o for o in prog.functions["main"].operations if o.op_type == "constexpr_lut_to_dense")
    assert np.array_equal(np.asarray(constexpr_value(op)), q.dequantize().astype(np.float32))


def _one_op_model(op, attrs, w_shape=None, x_shape=(1, 4, 9, 9), bias=True, domain="", extra=()):
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, x_shape)
    ins = [x]
    if w_shape:
        ins.append(g.add_const("w", rng.standard_normal(w_shape).astype(np.float32)))
        if bias:
            ins.append(g.add_const("b", rng.standard_normal(w_shape[0]).astype(np.float32)))
    for k, a in enumerate(extra):
        ins.append(g.add_const(f"c{k}", a) if a is not None else None)
    g.outputs.append(g.op(op, ins, attrs, name="op", domain=domain).output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def _attention_model(mask: bool, scale: float):
    rng = np.random.default_rng(0)
    g = ir.Graph()
    q = g.add_input("q", ir.DType.FLOAT32, (1, 2, 6, 8))
    k = g.add_input("k", ir.DType.FLOAT32, (1, 2, 6, 8))
    v = g.add_input("v", ir.DType.FLOAT32, (1, 2, 6, 8))
    ins = [q, k, v]
    if mask:
        causal = np.triu(np.full((6, 6), np.finfo(np.float32).min, np.float32), 1)
        ins.append(g.add_const("mask", causal))
    g.outputs.append(g.op("Attention", ins, {"scale": scale}, domain="edgec", name="attn").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    del rng
    return m


I64 = lambda *v: np.array(v, np.int64)  # noqa: E731
OPS = [
    ("Conv", {"kernel_shape": [3, 3], "pads": [1, 0, 2, 1], "strides": [2, 1]}, (6, 4, 3, 3), {}),
    ("Conv", {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2], "dilations": [2, 2], "group": 4}, (8, 1, 3, 3), {}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}, None, {}),
    ("AveragePool", {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [0, 1, 0, 1]}, None, {}),
    (
        "AveragePool",
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        None,
        {},
    ),
    ("GlobalAveragePool", {}, None, {}),
    ("HardSwish", {}, None, {}),
    ("Softmax", {"axis": -1}, None, {}),
    (
        "LayerNormalization",
        {"axis": -1, "epsilon": 1e-5},
        None,
        {"extra": (np.linspace(0.5, 1.5, 9).astype(np.float32), np.linspace(-1, 1, 9).astype(np.float32))},
    ),
    ("RMSNorm", {"epsilon": 1e-6}, None, {"domain": "edgec", "extra": (np.linspace(0.5, 1.5, 9).astype(np.float32),)}),
    ("Gelu", {}, None, {"domain": "edgec"}),
    ("Gelu", {"approximate": "tanh"}, None, {"domain": "edgec"}),
    ("Transpose", {"perm": [0, 2, 3, 1]}, None, {}),
    ("Slice", {}, None, {"extra": (I64(1, -7), I64(4, 100), I64(1, 3), I64(1, 2))}),
    ("Expand", {}, None, {"x_shape": (1, 4, 1, 9), "extra": (I64(2, 1, 5, 9),)}),
    ("Reshape", {}, None, {"extra": (I64(1, 36, 9),)}),
    ("Resize", {"mode": "nearest"}, None, {"extra": (None, np.array([1, 1, 2, 2], np.float32))}),
    (
        "Resize",
        {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
        None,
        {"extra": (None, np.array([1, 1, 2, 1.5], np.float32))},
    ),
    (
        "Resize",
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        None,
        {"extra": (None, np.array([1, 1, 2, 2], np.float32))},
    ),
    (
        "MaxPool",
        {"kernel_shape": [2, 2, 2], "strides": [2, 1, 2], "pads": [1, 0, 0, 0, 1, 1]},
        None,
        {"x_shape": (1, 2, 5, 6, 7)},
    ),
    ("AveragePool", {"kernel_shape": [3, 2, 2], "pads": [1, 1, 0, 1, 0, 1]}, None, {"x_shape": (1, 2, 5, 6, 7)}),
    ("LpPool", {"kernel_shape": [3, 3], "p": 3, "pads": [1, 1, 1, 1], "strides": [2, 2]}, None, {}),
    ("LpPool", {"kernel_shape": [2, 2, 2], "p": 1}, None, {"x_shape": (1, 2, 4, 5, 6)}),
    ("Pad", {"mode": "wrap"}, None, {"extra": (I64(0, 0, 2, 1, 0, 0, 1, 3),)}),
]


@pytest.mark.parametrize("op, attrs, w_shape, kw", OPS, ids=[f"{o[0]}{i}" for i, o in enumerate(OPS)])
@pytest.mark.parametrize("deployment", ["ios18", "ios16"])
def test_evaluator_ops_match_onnxruntime(op, attrs, w_shape, kw, deployment, tmp_path):
    """Each MIL op edgec emits, through the evaluator, against the reference executor (onnxruntime), at fp16."""
    m = _one_op_model(op, attrs, w_shape, **kw)
    _, got, ref = _emit_and_run(m, tmp_path, deployment)
    assert got[0].shape == ref[0].shape
    assert np.abs(got[0] - ref[0]).max() <= 4e-3 * max(1.0, np.abs(ref[0]).max())


@pytest.mark.parametrize("deployment", ["ios18", "ios16"])
@pytest.mark.parametrize("mask, scale", [(True, 0.35), (False, 1 / np.sqrt(8))])
def test_attention_matches_onnxruntime(mask, scale, deployment, tmp_path):
    """iOS18: scaled_dot_product_attention (scale folded into q when it is not 1/sqrt(d)); older opsets:
    matmul + softmax + matmul."""
    _, got, ref = _emit_and_run(_attention_model(mask, scale), tmp_path, deployment)
    assert np.abs(got[0] - ref[0]).max() <= 4e-3 * max(1.0, np.abs(ref[0]).max())


def test_lowering_zoo_matches_onnxruntime(tmp_path):
    """Gather, Concat, Slice, Where, Greater, pools, norms and attention in one graph, two inputs (one int)."""
    from target_models import lowering_zoo

    _, got, ref = _emit_and_run(lowering_zoo(), tmp_path)
    for g, r in zip(got, ref):
        assert np.abs(g - r).max() <= 4e-3 * max(1.0, np.abs(r).max())


def _export(name, tmp_path):
    pytest.importorskip("torch")
    from target_models import export_example

    return export_example(name, tmp_path / "m.onnx")


@pytest.mark.parametrize(
    "name, pipe, deployment",
    [
        ("resnet18", f"quantize{{bits=8,{F16}}}", "ios18"),
        ("mobilenetv3-small", f"quantize{{method=codebook,bits=6,{F16}}}", "ios16"),
        ("bert", f"quantize{{bits=4,group=32,{F16}}}", "ios18"),
        ("bert", f"quantize{{bits=8,{F16}}}", "ios16"),
        ("bert", f"prune{{sparsity=0.5}},quantize{{method=codebook,bits=4,group=32,{F16}}}", "macos15"),
    ],
)
@pytest.mark.slow
def test_example_models_verify_through_the_evaluator(name, pipe, deployment, tmp_path):
    from edgec.compiler import compile as compile_model

    r = compile_model(
        _export(name, tmp_path), f"coreml{{deployment={deployment}}}", pipe, str(tmp_path / "a"), verify=True
    )
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"], v["summary"]
    t = r.manifest["target"]
    assert t["decoded_bit_exact"] == len(t["compressed_weights"]) > 0
    assert "no Core ML runtime off macOS" in t["verification_runtime"] or platform.system() == "Darwin"


@pytest.fixture(scope="module")
def tiny_llama():
    import dataclasses
    import importlib.util

    from edgec.plugins.frontends.decoder import build_decoder

    spec = importlib.util.spec_from_file_location(
        "llm_fixtures", os.path.join(os.path.dirname(__file__), "..", "llm", "conftest.py")
    )
    llm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(llm)
    cfg = dataclasses.replace(llm.TINY, vocab_size=512)
    return lambda: build_decoder(cfg, llm.random_weights(cfg), {})


@pytest.mark.parametrize(
    "pipe, deployment",
    [
        ("", "ios18"),
        (f"quantize{{bits=4,group=32,{F16}}}", "ios18"),
        (f"quantize{{bits=8,{F16}}}", "ios17"),
        (f"prune{{sparsity=0.5}},quantize{{method=codebook,bits=4,group=32,{F16}}}", "ios18"),
        (f"quantize{{method=nf4,group=32,embedding_bits=8,head_bits=8,{F16}}}", "ios18"),
    ],
)
def test_llama_decoder_fixed_context(tiny_llama, pipe, deployment, tmp_path):
    """A llama-family decoder (RoPE, GQA, RMSNorm, SwiGLU), stateless with a fixed 32-token context."""
    m = tiny_llama()
    fix_input_shapes(m, {"input_ids": (1, 32)}, [])
    m = _prepare(m, pipe)
    art, got, ref = _emit_and_run(m, tmp_path, deployment)
    assert got[0].shape == ref[0].shape == (1, 32, 512)
    assert _cos(got[0], ref[0]) > 0.9999
    agree, rows = _top1(got[0], ref[0])
    assert agree >= 0.95 and rows >= 16
    assert art.manifest["decoded_bit_exact"] == len(art.manifest["compressed_weights"])


@pytest.mark.skipif(
    platform.system() != "Darwin",
    reason="Core ML runs only on macOS (MLModel.predict); "
    "elsewhere the saved program is checked by edgec's MIL evaluator",
)
def test_mlmodel_predict_on_macos(tiny_cnn_path, tmp_path):
    from edgec.targets.coreml import predict

    m = _prepare(tiny_cnn_path, f"quantize{{bits=4,group=16,ops=Linear,head_bits=4,{F16}}}")
    CoreMLTarget().emit(m, str(tmp_path), PassContext())
    feeds = ir.random_inputs(m, seed=1)
    got = predict(str(tmp_path / "model.mlpackage"), feeds)
    ref = ir.ReferenceExecutor(m).run(feeds)[m.graph.outputs[0].name]
    assert _cos(got[0], ref) > 0.999


def test_package_metadata_and_io_names(tiny_cnn_path, tmp_path):
    import coremltools as ct

    m = _prepare(tiny_cnn_path, "")
    CoreMLTarget().emit(m, str(tmp_path), PassContext())
    spec = ct.models.MLModel(str(tmp_path / "model.mlpackage"), skip_model_load=True).get_spec()
    assert [i.name for i in spec.description.input] == [v.name for v in m.graph.inputs]
    assert spec.description.metadata.userDefined["edgec.deployment"] == "ios18"
