"""The tensorrt target: an ONNX model in TensorRT's explicit-quantization form (int8 per-channel weights,
blocked int4 weights, per-tensor int8 activation Q/DQ, fp16 elsewhere), run on onnxruntime for --verify;
an engine is built only where TensorRT and a GPU exist."""

import os
import py_compile
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from edgec import ir
from edgec.plugins.quantize import methods
from edgec.targets.tensorrt import TensorRTTarget
from target_models import linear_model, lowering_zoo, quantize_rtn


def emit_and_run(m: ir.Model, out, target=None):
    target = target or TensorRTTarget(precision="fp32")
    assert target.check(m) == [], target.check(m)
    os.makedirs(out, exist_ok=True)
    art = target.emit(m, str(out), None)
    feeds = ir.random_inputs(m, seed=5)
    got = target.run_artifact(str(out), feeds, [v.name for v in m.graph.inputs])
    ref = ir.ReferenceExecutor(m).run(feeds)
    return art, got, [ref[o.name] for o in m.graph.outputs], onnx.load(os.path.join(out, "model.onnx"))


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def inits(proto):
    return {t.name: t for t in proto.graph.initializer}


def test_int8_linear_weights_are_per_channel_dq_feeding_matmul(tmp_path):
    w = np.random.default_rng(0).standard_normal((48, 64)).astype(np.float32)
    art, got, ref, proto = emit_and_run(linear_model(quantize_rtn(w, 8, True, None)), tmp_path)
    assert rel(got[0], ref[0]) <= 1e-6
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 1 and {a.name: a.i for a in dq[0].attribute} == {"axis": 1}
    codes = inits(proto)[dq[0].input[0]]
    assert codes.data_type == TensorProto.INT8 and list(codes.dims) == [64, 48]  # stored [K, out]
    consumer = next(n for n in proto.graph.node if dq[0].output[0] in n.input)
    assert consumer.op_type == "MatMul"  # no Transpose between the weights and the MatMul
    assert art.manifest["int8_weights"] == ["w"] and "--stronglyTyped" in art.manifest["trtexec"]


@pytest.mark.parametrize("bits, symmetric, group", [(4, True, 32), (4, False, 16), (3, True, 64), (4, True, None)])
def test_int4_weights_are_blocked_dq(bits, symmetric, group, tmp_path):
    w = np.random.default_rng(bits).standard_normal((32, 128)).astype(np.float32)
    art, got, ref, proto = emit_and_run(linear_model(quantize_rtn(w, bits, symmetric, group)), tmp_path)
    assert rel(got[0], ref[0]) <= 1e-6  # the blocked DequantizeLinear computes the IR's dequantization
    dq = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear")
    assert {a.name: a.i for a in dq.attribute} == {"axis": 0, "block_size": group or 128}
    t = inits(proto)
    assert t[dq.input[0]].data_type == (TensorProto.INT4 if symmetric else TensorProto.UINT4)
    assert list(numpy_helper.to_array(t[dq.input[1]]).shape) == [128 // (group or 128), 32]
    assert len(dq.input) == (2 if symmetric else 3)
    assert art.manifest["int4_weights"] == ["w"]
    assert os.path.getsize(tmp_path / "model.onnx.data") < 32 * 128 * 4 // 3  # sub-byte codes on disk


def test_fp16_model_keeps_fp32_io(tmp_path):
    m = lowering_zoo()
    art, got, ref, proto = emit_and_run(m, tmp_path, TensorRTTarget())
    floats = [t for t in proto.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and all(t.data_type == TensorProto.FLOAT16 for t in floats)
    assert all(i.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.INT64) for i in proto.graph.input)
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in proto.graph.output)
    for a, b in zip(got, ref):
        assert a.dtype == np.float32 and rel(a, b) <= 5e-3


def test_fp32_lowering_zoo_matches_reference(tmp_path):
    _, got, ref, _ = emit_and_run(lowering_zoo(), tmp_path)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_static_int8_places_qdq_at_fusion_points(tiny_cnn_path, tmp_path):
    from edgec.compiler import compile as compile_model

    r = compile_model(
        tiny_cnn_path,
        "tensorrt",
        "quantize{bits=8},quantize-activations",
        str(tmp_path / "a"),
        calib="random",
        verify=True,
    )
    assert r.manifest["verification"]["passed"], r.manifest["verification"]["summary"]
    assert r.manifest["target"]["qdq_activations"] > 0
    proto = onnx.load(str(tmp_path / "a" / "model.onnx"))
    by_out = {o: n for n in proto.graph.node for o in n.output}
    t = inits(proto)
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear":
            zp = numpy_helper.to_array(t[n.input[2]])
            assert zp.dtype == np.int8 and zp.ndim == 0 and int(zp) == 0  # signed, zero point 0, per tensor
    # every Conv / MatMul reads Q/DQ'd activations and DQ'd int8 weights
    for n in proto.graph.node:
        if n.op_type in ("Conv", "MatMul"):
            x, w = by_out[n.input[0]], by_out[n.input[1]]
            assert x.op_type == "DequantizeLinear" and by_out[x.input[0]].op_type == "QuantizeLinear", n.name
            assert w.op_type == "DequantizeLinear" and t[w.input[0]].data_type == TensorProto.INT8, n.name


def test_sparse_weights_are_flagged_and_build_script_is_valid(tmp_path):
    w = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    w.reshape(-1, 4)[:, :2] = 0.0  # 2 of every 4 along K are zero
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (2, 32))
    wv = g.add_const("w", w)
    wv.sparsity = ir.Sparsity(n=2, m=4, axis=1)
    g.outputs.append(g.op("Linear", [x, wv], domain="edgec", name="fc").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    art, got, ref, _ = emit_and_run(m, tmp_path)
    assert art.manifest["sparse_2_4_weights"] == ["w"] and "--sparsity=enable" in art.manifest["trtexec"]
    script = (tmp_path / "build_engine.py").read_text()
    assert "SPARSE = ['w']" in script and "STRONGLY_TYPED" in script
    py_compile.compile(str(tmp_path / "build_engine.py"), doraise=True)


def test_unencodable_quantization_is_refused():
    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 64))
    y = g.op("Linear", [x, g.add_const("a", quantize_rtn(w, 8, False, None))], domain="edgec", name="fc1").output
    y2 = g.op("Linear", [x, g.add_const("b", methods.nf4(w, 64, w.shape))], domain="edgec", name="fc2").output
    y.quant = ir.ActivationQuant(scale=0.1, zero_point=3, bits=8, signed=False)
    g.outputs += [y, y2]
    problems = TensorRTTarget().check(ir.Model(g, {"": 17, "edgec": 1}))
    text = "\n".join(problems)
    assert "'a': TensorRT int8 weights are symmetric" in text
    assert "'b': codebook grids have no TensorRT encoding" in text
    assert len(problems) == 3  # one line per problem: no generic duplicate beside the specific reason
    assert "signed int8 activations with zero point 0" in text


def _gpu() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed (it needs an NVIDIA GPU machine)"
    if not shutil.which("nvidia-smi") or subprocess.run(["nvidia-smi"], capture_output=True).returncode:
        return "no NVIDIA GPU on this machine"
    return None


def test_engine_builds_where_tensorrt_and_a_gpu_exist(tiny_cnn_path, tmp_path):
    why = _gpu()
    if why:
        print(f"skipping the TensorRT engine build: {why}")
        pytest.skip(why)
    from edgec.compiler import compile as compile_model

    compile_model(
        tiny_cnn_path, "tensorrt", "quantize{bits=8},quantize-activations", str(tmp_path / "a"), calib="random"
    )
    r = subprocess.run([sys.executable, str(tmp_path / "a" / "build_engine.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(tmp_path / "a" / "model.plan") > 0
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("engine built; running it needs a CUDA build of torch for device buffers")
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        (tmp_path / "a" / "model.plan").read_bytes()
    )
    ctx = engine.create_execution_context()
    feeds = {"image": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    bufs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = tuple(ctx.get_tensor_shape(name))
        t = torch.from_numpy(feeds[name]).cuda() if name in feeds else torch.empty(shape, device="cuda")
        bufs[name] = t
        ctx.set_tensor_address(name, t.data_ptr())
    assert ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    out = [bufs[n].cpu().numpy() for n in bufs if n not in feeds][0]
    ref = TensorRTTarget().run_artifact(str(tmp_path / "a"), feeds)
    assert np.isfinite(out).all()
    cos = float((out.ravel() @ ref[0].ravel()) / (np.linalg.norm(out) * np.linalg.norm(ref[0])))
    assert cos >= 0.99, cos  # the engine computes what onnxruntime computes on the QDQ model


def test_opset_below_21_is_refused_before_emission():
    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    problems = TensorRTTarget(opset=17).check(linear_model(quantize_rtn(w, 4, True, 32)))
    assert any("opset=17" in p and "needs opset 21" in p for p in problems)
