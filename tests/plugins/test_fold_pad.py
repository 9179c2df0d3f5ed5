"""fold-pad on an exported model's TensorFlow-style padding: a constant zero Pad before a strided Conv is folded
into the Conv's pads by the default cleanup, and the compiled artifact computes what onnxruntime computes on the
original file (cpu: TVM's runtime; openvino: its CPU plugin). A Pad that is not a zero padding of the spatial axes
stays."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.host import host
from edgec.ir.passes import PassContext, PassManager, parse_pipeline
from edgec.plugins.cleanup import DEFAULT_CLEANUP
from edgec.plugins.frontends.onnx import import_proto


def _model(pads, mode="constant") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    p = numpy_helper.from_array(np.array(pads, np.int64), "pads")
    g = helper.make_graph(
        [
            helper.make_node("Pad", ["x", "pads"], ["p"], mode=mode),
            helper.make_node("Conv", ["p", "w", "b"], ["c"], strides=[2, 2], pads=[1, 0, 0, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, b, p],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _cleaned(m: onnx.ModelProto):
    model = import_proto(m, None)
    PassManager(parse_pipeline(DEFAULT_CLEANUP, host().passes.as_dict())).run(model, PassContext())
    return model


def test_tf_style_padding_is_folded_and_runs_as_onnxruntime_computes(tmp_path):
    m = _model([0, 0, 0, 1, 0, 0, 1, 0])  # TensorFlow "same" for a stride-2 3x3 on 9x9: one row / column at the end
    convs = [n for n in _cleaned(m).graph if n.op_type == "Conv"]
    assert [n.op_type for n in _cleaned(m).graph if n.op_type == "Pad"] == []
    assert [list(n.attr("pads")) for n in convs] == [[1, 1, 1, 1]]  # own [1, 0, 0, 1] + the Pad's [0, 1, 1, 0]
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    x = np.random.default_rng(1).standard_normal((1, 4, 9, 9)).astype(np.float32)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for target in ("cpu", "openvino"):
        if target == "openvino":
            pytest.importorskip("openvino")
        out = str(tmp_path / target)
        edgec.compile(path, target=target, output=out, use_cache=False)
        got = edgec.compiler.parse_target(target).run_artifact(out, {"x": x}, ["x"])[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "pads, mode",
    [
        ([0, 0, 0, 1, 0, 0, 1, 0], "reflect"),
        ([0, 1, 0, 0, 0, 0, 0, 0], "constant"),
        ([0, 0, -1, 0, 0, 0, 0, 0], "constant"),
    ],
)
def test_a_pad_conv_cannot_absorb_stays(pads, mode):
    """Reflect padding, a padded channel axis and a negative (cropping) pad are not a conv's zero padding."""
    m = _model(pads, mode)
    if pads[1]:  # a padded channel changes the conv's input channels: give the weight one more
        w = numpy_helper.to_array(m.graph.initializer[0])
        m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.concatenate([w, w[:, :1]], 1), "w"))
    assert [n.op_type for n in _cleaned(m).graph if n.op_type == "Pad"] == ["Pad"]
