"""Old ONNX opsets (7-12) are upgraded inside the ONNX frontend with onnx.version_converter: the upgraded model
computes what onnxruntime computes on the original file, weights are never handed to the converter, the
manifest says so, and a node the converter cannot take is named in the error."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.compiler import parse_target
from edgec.errors import UnsupportedError
from edgec.ir import executor
from edgec.plugins.frontends.onnx import UPGRADED_FROM, OnnxFrontend

F = TensorProto.FLOAT


def _save(path, nodes, inputs, outputs, inits=(), opset=9, ir_version=4, extra_opsets=()):
    g = helper.make_graph(nodes, "old", inputs, outputs, list(inits))
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    )
    m.ir_version = ir_version
    onnx.save(m, str(path))
    return str(path)


def _ort(path, feeds):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def _same_as_onnxruntime(path, feeds, rtol=1e-5, atol=1e-6):
    model = OnnxFrontend().load(path)
    got = executor.run(model, feeds)
    for o, want in zip(model.graph.outputs, _ort(path, feeds)):
        np.testing.assert_allclose(got[o.name], want, rtol=rtol, atol=atol)
    return model


def _cnn(path, opset):
    rng = np.random.default_rng(opset)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((10, 8 * 4 * 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["g"], transB=1),
        helper.make_node("Softmax", ["g"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(a, n)
        for n, a in (
            ("w", w),
            ("fc", fc),
            ("fcb", rng.standard_normal(10).astype(np.float32)),
            ("s", rng.uniform(0.5, 1.5, 8).astype(np.float32)),
            ("b", rng.standard_normal(8).astype(np.float32)),
            ("m", rng.standard_normal(8).astype(np.float32)),
            ("v", rng.uniform(0.5, 1.5, 8).astype(np.float32)),
        )
    ]
    return _save(
        path,
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", F, [1, 10])],
        inits,
        opset=opset,
    )


@pytest.mark.parametrize("opset", [7, 9, 11, 12])
def test_old_cnn_upgraded_and_exact(tmp_path, opset):
    path = _cnn(tmp_path / f"cnn{opset}.onnx", opset)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    model = _same_as_onnxruntime(path, {"x": x})
    assert model.opset == 13 and model.metadata[UPGRADED_FROM] == str(opset)


def test_compile_notes_the_upgrade_and_verifies(tmp_path):
    path = _cnn(tmp_path / "cnn9.onnx", 9)
    res = edgec.compile(path, target="cpu", output=str(tmp_path / "out"), verify=True, use_cache=False)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["verification"]["passed"] and res is not None
    assert any("upgraded from ai.onnx opset 9 to 13" in n for n in man["notes"])


def test_semantics_that_changed_between_opsets(tmp_path):
    """Softmax's 2-D coercion (before 13), Upsample (opset 7/9: asymmetric, floor), Resize 10, Slice / Pad /
    Clip attributes that became inputs, ReduceSum / Squeeze / Unsqueeze axes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    vi = [helper.make_tensor_value_info("x", F, [2, 3, 4, 5])]
    cases = {
        "softmax_axis1": (7, [helper.make_node("Softmax", ["x"], ["y"], axis=1)]),
        "upsample7_nearest": (7, [helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 3.0])]),
        "upsample7_linear": (
            7,
            [helper.make_node("Upsample", ["x"], ["y"], mode="linear", scales=[1.0, 1.0, 2.0, 2.0])],
        ),
        "slice_pad_clip": (
            9,
            [
                helper.make_node("Slice", ["x"], ["s"], starts=[1, 0], ends=[4, 4], axes=[2, 3]),
                helper.make_node("Pad", ["s"], ["p"], pads=[0, 0, 1, 0, 0, 0, 0, 2], value=0.5),
                helper.make_node("Clip", ["p"], ["y"], min=-0.5, max=0.7),
            ],
        ),
        "reduce_squeeze": (
            11,
            [
                helper.make_node("ReduceSum", ["x"], ["r"], axes=[1], keepdims=1),
                helper.make_node("Squeeze", ["r"], ["q"], axes=[1]),
                helper.make_node("Unsqueeze", ["q"], ["y"], axes=[0]),
            ],
        ),
    }
    for name, (opset, nodes) in cases.items():
        path = _save(tmp_path / f"{name}.onnx", nodes, vi, [helper.make_empty_tensor_value_info("y")], opset=opset)
        _same_as_onnxruntime(path, {"x": x})


def test_upsample_opset9_scales_input(tmp_path):
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 4)).astype(np.float32)
    for mode in ("nearest", "linear"):
        path = _save(
            tmp_path / f"up9_{mode}.onnx",
            [helper.make_node("Upsample", ["x", "sc"], ["y"], mode=mode)],
            [helper.make_tensor_value_info("x", F, [1, 2, 3, 4])],
            [helper.make_empty_tensor_value_info("y")],
            [numpy_helper.from_array(np.array([1, 1, 2, 1.5], np.float32), "sc")],
            opset=9,
        )
        _same_as_onnxruntime(path, {"x": x})


def test_large_weights_never_reach_the_converter(tmp_path, monkeypatch):
    from edgec.plugins.frontends import onnx as fe

    seen = []
    real = fe._convert

    def spy(m, target):
        seen.append(max((t.ByteSize() for t in m.graph.initializer), default=0))
        return real(m, target)

    monkeypatch.setattr(fe, "_convert", spy)
    path = _cnn(tmp_path / "cnn10.onnx", 10)
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    _same_as_onnxruntime(path, {"x": x})
    assert seen and max(seen) < 1100  # the 5 KB Gemm weight went as a declaration only


def test_conversion_failure_names_node_and_op(tmp_path):
    # Gemm without C is invalid at opset 9 (C became optional in 11): the converter would fail without a name
    path = _save(
        tmp_path / "bad9.onnx",
        [helper.make_node("Relu", ["x"], ["r"], name="first"), helper.make_node("Gemm", ["r", "w"], ["y"], name="fc")],
        [helper.make_tensor_value_info("x", F, [1, 4])],
        [helper.make_tensor_value_info("y", F, [1, 2])],
        [numpy_helper.from_array(np.ones((4, 2), np.float32), "w")],
        opset=9,
    )
    with pytest.raises(UnsupportedError) as e:
        OnnxFrontend().load(path)
    msg = str(e.value)
    assert "opset 9 cannot be upgraded to 13" in msg and "node fc (Gemm, opset 9)" in msg, msg
    assert len(e.value.problems) == 1


def test_other_domains_imported_only_their_unsupported_ops_refused(tmp_path):
    x = np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)
    vi = [helper.make_tensor_value_info("x", F, [2, 3])]
    # importing ai.onnx.ml without using it is fine, at an old opset too
    path = _save(
        tmp_path / "ml_import.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        vi,
        [helper.make_tensor_value_info("y", F, [2, 3])],
        opset=9,
        extra_opsets=[("ai.onnx.ml", 1)],
    )
    _same_as_onnxruntime(path, {"x": x})
    # ai.onnx.ml nodes are imported; decompose writes the preprocessing ones in ai.onnx ops, and the target's
    # check names the others
    path = _save(
        tmp_path / "ml_node.onnx",
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Normalizer", ["r"], ["y"], name="norm", domain="ai.onnx.ml", norm="L2"),
        ],
        vi,
        [helper.make_tensor_value_info("y", F, [2, 3])],
        opset=13,
        ir_version=8,
        extra_opsets=[("ai.onnx.ml", 1)],
    )
    res = edgec.compile(path, target="cpu", output=str(tmp_path / "norm"), use_cache=False)
    got = parse_target("cpu").run_artifact(res.output_dir, {"x": x}, ["x"])[0]
    np.testing.assert_allclose(got, _ort(path, {"x": x})[0], rtol=1e-5, atol=1e-6)
    path = _save(
        tmp_path / "ml_max.onnx",
        [helper.make_node("Normalizer", ["x"], ["y"], name="norm", domain="ai.onnx.ml", norm="MAX")],
        vi,
        [helper.make_tensor_value_info("y", F, [2, 3])],
        opset=13,
        ir_version=8,
        extra_opsets=[("ai.onnx.ml", 1)],
    )
    with pytest.raises(UnsupportedError, match=r"node 'norm': operator ai.onnx.ml::Normalizer \(opset 1\)"):
        edgec.compile(path, target="cpu", output=str(tmp_path / "max"), use_cache=False)
    # a model of ai.onnx.ml alone (no default-domain import) is a valid model
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("Binarizer", ["x"], ["y"], name="bin", domain="ai.onnx.ml", threshold=0.5)],
            "g",
            vi,
            [helper.make_tensor_value_info("y", F, [2, 3])],
        ),
        opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)],
    )
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "ml_only.onnx"))
    res = edgec.compile(str(tmp_path / "ml_only.onnx"), target="cpu", output=str(tmp_path / "bin"), use_cache=False)
    got = parse_target("cpu").run_artifact(res.output_dir, {"x": x}, ["x"])[0]
    np.testing.assert_array_equal(got, (x > 0.5).astype(np.float32))
