"""The coreml target (work in progress): .mlpackage saved, re-loaded, every compressed weight decoded
bit-exactly from the package (no Core ML runtime exists on Linux)."""

import os

import pytest

pytest.importorskip("coremltools")

from edgec.compiler import fix_input_shapes, load_model  # noqa: E402
from edgec.host import host  # noqa: E402
from edgec.ir.passes import PassContext, PassManager, parse_pipeline  # noqa: E402
from edgec.plugins.cleanup import DEFAULT_CLEANUP  # noqa: E402
from edgec.targets.coreml import CoreMLTarget  # noqa: E402


@pytest.mark.parametrize("pipe, n", [("", 0), ("quantize{bits=8,scale_dtype=f16}", 4),
                                     ("quantize{bits=4,group=16,ops=Linear,head_bits=4,scale_dtype=f16},"
                                      "quantize{bits=8,ops=Conv,scale_dtype=f16}", 4)])
def test_package_weights_decode_exactly(pipe, n, tiny_cnn_path, tmp_path):
    m = load_model(tiny_cnn_path)
    fix_input_shapes(m, {}, [])
    PassManager(parse_pipeline(DEFAULT_CLEANUP + ("," + pipe if pipe else ""), host().passes.as_dict())).run(
        m, PassContext())
    t = CoreMLTarget()
    assert t.check(m) == []
    art = t.emit(m, str(tmp_path), PassContext())
    assert art.manifest["decoded_bit_exact"] == n == len(art.manifest["compressed_weights"])
    assert os.path.isdir(tmp_path / "model.mlpackage")


def test_float32_scales_are_refused_with_the_fix(tiny_cnn_path, tmp_path):
    from edgec.errors import UnsupportedError
    m = load_model(tiny_cnn_path)
    fix_input_shapes(m, {}, [])
    PassManager(parse_pipeline(DEFAULT_CLEANUP + ",quantize{bits=8}", host().passes.as_dict())).run(m, PassContext())
    with pytest.raises(UnsupportedError, match="scale_dtype=f16"):
        CoreMLTarget().emit(m, str(tmp_path), PassContext())


def _one_op_model(op, attrs, w_shape=None, x_shape=(1, 4, 9, 9), bias=True):
    import numpy as np

    from edgec import ir
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, x_shape)
    ins = [x]
    if w_shape:
        ins.append(g.add_const("w", rng.standard_normal(w_shape).astype(np.float32)))
        if bias:
            ins.append(g.add_const("b", rng.standard_normal(w_shape[0]).astype(np.float32)))
    g.outputs.append(g.op(op, ins, attrs, name="op").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


@pytest.mark.parametrize("op, attrs, w_shape", [
    ("Conv", {"kernel_shape": [3, 3], "pads": [1, 0, 2, 1], "strides": [2, 1]}, (6, 4, 3, 3)),
    ("Conv", {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2], "dilations": [2, 2], "group": 4}, (8, 1, 3, 3)),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}, None),
    ("AveragePool", {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [0, 1, 0, 1]}, None),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, None),
    ("GlobalAveragePool", {}, None),
    ("HardSwish", {}, None),
])
def test_evaluator_ops_match_onnxruntime(op, attrs, w_shape, tmp_path):
    """Each MIL op the evaluator implements, against the reference executor (onnxruntime), at fp16."""
    import numpy as np

    from edgec import ir
    m = _one_op_model(op, attrs, w_shape)
    t = CoreMLTarget()
    t.emit(m, str(tmp_path), PassContext())
    feeds = ir.random_inputs(m, seed=1)
    got = t.run_artifact(str(tmp_path), feeds)[0]
    ref = ir.ReferenceExecutor(m).run(feeds)[m.graph.outputs[0].name]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 2e-3 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3-small"])
def test_example_cnns_verify_through_the_evaluator(name, tmp_path):
    import warnings

    torch = pytest.importorskip("torch")
    import architectures

    from edgec.compiler import compile as compile_model
    mod, ex, names = architectures.build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, ex, str(tmp_path / "m.onnx"), dynamo=False, opset_version=17, input_names=names,
                          output_names=["out"])
    r = compile_model(str(tmp_path / "m.onnx"), "coreml", "quantize{bits=8,scale_dtype=f16}", str(tmp_path / "a"),
                      verify=True)
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"], v["summary"]
    assert r.manifest["target"]["decoded_bit_exact"] == len(r.manifest["target"]["compressed_weights"]) > 0
