"""fold-qdq: pre-quantized ONNX (Q/DQ) models become QuantizedTensor weights and ActivationQuant annotations, with
the same bits as the Q/DQ graph on the reference executor and onnxruntime; what it cannot fold stays as ops."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.build import load_model
from edgec.host import host
from edgec.ir import QuantizedTensor, ReferenceExecutor
from edgec.ir.passes import PassContext, PassManager, parse_pipeline
from edgec.plugins.cleanup import DEFAULT_CLEANUP
from edgec.plugins.cleanup.fold_qdq import REPORT_KEY

RNG = np.random.default_rng(0)


def _init(name, a, dtype=None):
    if dtype is not None:  # int4 / uint4: onnx packs them from the values
        return helper.make_tensor(name, dtype, a.shape, a.flatten().tolist())
    return numpy_helper.from_array(a, name)


def _qdq_model(opset=21):
    """x -> Q/DQ (uint8) -> MatMul(DQ(int8 per-channel [16, 24])) + DQ(int32 bias) -> Relu -> Q/DQ (int8, zp 0)
    -> MatMul(DQ(Q(float W)) per tensor, fake quant [24, 32]) -> Q/DQ -> Gemm(transB, DQ(int4 blocked [8, 32],
    block 16 along K)) -> y."""
    w1 = RNG.integers(-128, 128, (16, 24)).astype(np.int8)
    s1 = (RNG.random(24) * 0.01 + 0.001).astype(np.float32)
    b1 = RNG.integers(-500, 500, 24).astype(np.int32)
    w2 = (RNG.standard_normal((24, 32)) * 0.2).astype(np.float32)
    w3 = RNG.integers(-8, 8, (8, 32)).astype(np.int8)
    s3 = (RNG.random((8, 2)) * 0.05 + 0.01).astype(np.float32)
    inits = [
        _init("w1", w1),
        _init("s1", s1),
        _init("b1", b1),
        _init("bs", np.float32(0.02 * 0.005) * np.ones(24, np.float32)),
        _init("w2", w2),
        _init("s2", np.array(0.01, np.float32)),
        _init("z2", np.array(0, np.int8)),
        _init("w3", w3, TensorProto.INT4),
        _init("s3", s3),
        _init("sa", np.array(0.02, np.float32)),
        _init("za", np.array(128, np.uint8)),
        _init("sb", np.array(0.03, np.float32)),
        _init("zb", np.array(0, np.int8)),
        _init("sc", np.array(0.05, np.float32)),
        _init("zc", np.array(3, np.uint8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sa", "za"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w1", "s1"], ["w1d"], axis=1),
        helper.make_node("DequantizeLinear", ["b1", "bs"], ["b1d"], axis=0),
        helper.make_node("MatMul", ["xd", "w1d"], ["m1"]),
        helper.make_node("Add", ["m1", "b1d"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("QuantizeLinear", ["r1", "sb", "zb"], ["r1q"]),
        helper.make_node("DequantizeLinear", ["r1q", "sb", "zb"], ["r1d"]),
        helper.make_node("QuantizeLinear", ["w2", "s2", "z2"], ["w2q"]),
        helper.make_node("DequantizeLinear", ["w2q", "s2", "z2"], ["w2d"]),
        helper.make_node("MatMul", ["r1d", "w2d"], ["m2"]),
        helper.make_node("QuantizeLinear", ["m2", "sc", "zc"], ["m2q"]),
        helper.make_node("DequantizeLinear", ["m2q", "sc", "zc"], ["m2d"]),
        helper.make_node("DequantizeLinear", ["w3", "s3"], ["w3d"], axis=1, block_size=16),
        helper.make_node("Gemm", ["m2d", "w3d"], ["y"], transB=1),
    ]
    m = _model(nodes, inits, 16, opset)
    onnx.checker.check_model(m, full_check=True)
    return m, {"w1": w1, "s1": s1, "w2": w2, "w3": w3, "s3": s3}


def _model(nodes, inits, k: int, opset: int = 21):
    """x [4, k] -> ... -> y [4, 8], float32."""
    g = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _cleanup(m, pipeline=DEFAULT_CLEANUP):
    h = host()
    PassManager(parse_pipeline(pipeline, h.passes.as_dict())).run(m, PassContext(passes=h.passes.as_dict()))
    return m


def test_weights_and_activations_fold_exactly(tmp_path):
    proto, raw = _qdq_model()
    path = str(tmp_path / "qdq.onnx")
    onnx.save(proto, path)
    x = {"x": (RNG.standard_normal((4, 16)) * 2).astype(np.float32)}
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, x)[0]
    before = ReferenceExecutor(load_model(path)).run(x)["y"]

    m = _cleanup(load_model(path))
    ops = [n.qualified_op for n in m.graph]
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops, ops
    assert ops.count("edgec::Linear") == 3
    lins = [n for n in m.graph if n.qualified_op == "edgec::Linear"]
    q1, q2, q3 = (n.inputs[1].const for n in lins)
    assert all(isinstance(q, QuantizedTensor) for q in (q1, q2, q3))
    # [out, in] on the same grid: the file's codes and scales, transposed where the MatMul's layout was [in, out]
    assert q1.scheme == "symmetric" and q1.bits == 8 and q1.axis == 0
    assert np.array_equal(q1.codes, raw["w1"].T) and np.array_equal(q1.scales.reshape(-1), raw["s1"])
    assert q2.axis is None and q2.bits == 8  # fake quant of a float weight: codes as QuantizeLinear computes them
    assert np.array_equal(q2.codes, np.clip(np.rint(raw["w2"] / np.float32(0.01)), -128, 127).astype(np.int8).T)
    assert (q3.bits, q3.group_size, q3.group_axis, q3.axis) == (4, 16, 1, 0)
    assert np.array_equal(q3.codes, raw["w3"]) and np.array_equal(q3.scales, raw["s3"])
    quant = {v.name: v.quant for v in m.graph.values() if v.quant is not None}
    assert sorted((q.bits, q.signed, q.zero_point) for q in quant.values()) == [
        (8, False, 3),
        (8, False, 128),
        (8, True, 0),
    ]
    rep = m.reports[REPORT_KEY]
    assert (rep["weights"], rep["biases"], rep["activations"], rep["left"]) == (3, 1, 3, [])

    after = ReferenceExecutor(m).run(x)["y"]
    assert np.array_equal(after, before)
    np.testing.assert_allclose(after, want, rtol=1e-5, atol=1e-5)

    # a target that carries the weights' grids but not int8 activations refuses the annotations by name, with the
    # way out; float-activations drops them (the weights keep their codes) and the refusal goes
    from edgec.targets.coreml import CoreMLTarget

    assert any(
        "carry int8 activation quantization" in p and "-p float-activations" in p for p in CoreMLTarget().check(m)
    )
    _cleanup(m, "float-activations")
    assert not [v for v in m.graph.values() if v.quant is not None]
    assert not any("activation" in p for p in CoreMLTarget().check(m))
    assert np.array_equal(next(n for n in m.graph if n.qualified_op == "edgec::Linear").inputs[1].const.codes, q1.codes)


def test_what_it_cannot_fold_stays_as_ops_and_is_reported(tmp_path):
    """An activation read both quantized and as float keeps its Q/DQ (annotating it would change the float
    reader); a block that does not divide its axis keeps its DequantizeLinear. Same outputs either way."""
    w = RNG.integers(-8, 8, (8, 24)).astype(np.int8)
    inits = [
        _init("w", w, TensorProto.INT4),
        _init("s", (RNG.random((8, 2)) * 0.05 + 0.01).astype(np.float32)),
        _init("sa", np.array(0.02, np.float32)),
        _init("za", np.array(0, np.int8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sa", "za"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "s"], ["wd"], axis=1, block_size=16),  # 24 is not 2 blocks
        helper.make_node("Gemm", ["xd", "wd"], ["g"], transB=1),
        helper.make_node("ReduceSum", ["x"], ["r"], keepdims=1),  # x read as float too
        helper.make_node("Add", ["g", "r"], ["y"]),
    ]
    path = str(tmp_path / "left.onnx")
    onnx.save(_model(nodes, inits, 24), path)
    x = {"x": RNG.standard_normal((4, 24)).astype(np.float32)}
    before = ReferenceExecutor(load_model(path)).run(x)["y"]
    m = _cleanup(load_model(path), "fold-qdq")
    left = m.reports[REPORT_KEY]["left"]
    assert any("block_size 16 along axis 1" in s for s in left), left
    assert any("also read without this quantization" in s for s in left), left
    assert [n.op_type for n in m.graph].count("DequantizeLinear") == 2
    assert np.array_equal(ReferenceExecutor(m).run(x)["y"], before)


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_onnxruntime_quantizer_output_folds_to_its_codes(tiny_cnn_path, tmp_path, weight_type):
    """onnxruntime's own static quantizer (QDQ format, per channel): every weight becomes a QuantizedTensor whose
    codes are the file's, every activation an annotation; the folded model matches onnxruntime on the file."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src = onnx.load(tiny_cnn_path)
    name = src.graph.input[0].name
    shape = [d.dim_value or 1 for d in src.graph.input[0].type.tensor_type.shape.dim]
    data = [{name: RNG.standard_normal(shape).astype(np.float32)} for _ in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(data)

        def get_next(self):
            return next(self.it, None)

    out = str(tmp_path / "qdq.onnx")
    quantize_static(
        tiny_cnn_path,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=getattr(QuantType, weight_type),
        activation_type=QuantType.QUInt8,
    )
    qdq = onnx.load(out)
    codes = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer if i.data_type in (2, 3)}
    assert codes, "the quantizer wrote no integer weights"
    m = _cleanup(load_model(out))
    ops = [n.op_type for n in m.graph]
    assert "DequantizeLinear" not in ops and "QuantizeLinear" not in ops, ops
    qts = [v.const for v in m.graph.values() if isinstance(v.const, QuantizedTensor)]
    assert len(qts) == len([c for c in codes.values() if c.ndim > 1])
    for q in qts:  # each weight's codes are one of the file's (shifted by 128 where signed codes had a zero point)
        assert any(
            c.shape == q.codes.shape
            and np.array_equal(
                c.astype(np.int32) + (128 if q.scheme == "asymmetric" and c.dtype == np.int8 else 0),
                q.codes.astype(np.int32),
            )
            for c in codes.values()
        )
    if weight_type == "QInt8":  # onnxruntime's default uint8 activations: TensorRT says what it takes, and how
        from edgec.targets.tensorrt import TensorRTTarget

        problems = TensorRTTarget().check(m)
        assert any("zero point 0" in p and "activation_type=QInt8" in p for p in problems), problems
    x = data[0]
    want = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = next(iter(ReferenceExecutor(m).run(x).values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
