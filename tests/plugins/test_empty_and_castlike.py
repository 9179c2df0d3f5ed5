"""Cleanup on material real models carry: empty tensors that only add nothing (RotaryEmbedding over the whole
head, a zero-length state) are taken out of Concat / Split by eliminate-empty, and CastLike(constant, x) folds
once x's dtype is known (onnx's Attention body pads its mask with one). Each model is compiled for cpu and
compared with onnxruntime on the original file."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.errors import UsageError
from edgec.ir.passes import PassContext
from edgec.plugins.cleanup.eliminate_empty import EliminateEmpty
from edgec.plugins.cleanup.fold_constants import FoldConstants
from edgec.plugins.frontends.onnx import import_proto

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=18):
    m = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, list(inits)), opset_imports=[helper.make_opsetid("", opset)]
    )
    m.ir_version = 8
    return m


def _compile_and_compare(m, feeds, tmp_path):
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    res = edgec.compile(path, target="cpu", output=str(tmp_path / "out"), use_cache=False)
    got = edgec.compiler.parse_target("cpu").run_artifact(res.output_dir, feeds, list(feeds))
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    return res


def _split_concat(zero_first: bool):
    """x [2, 8] -> Split [8, 0] (or [0, 8]) -> Neg of the full part -> Concat back with the empty part."""
    sizes = [0, 8] if zero_first else [8, 0]
    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
        helper.make_node("Neg", ["b" if zero_first else "a"], ["n"]),
        helper.make_node("Concat", ["a", "n"] if zero_first else ["n", "b"], ["y"], axis=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [2, 8])],
        [helper.make_tensor_value_info("y", F, [2, 8])],
        [numpy_helper.from_array(np.array(sizes, np.int64), "sizes")],
    )


@pytest.mark.parametrize("zero_first", [False, True])
def test_empty_split_parts_leave_the_graph(zero_first, tmp_path):
    m = _split_concat(zero_first)
    ir_model = import_proto(m, None)
    assert EliminateEmpty().run(ir_model, PassContext())
    ops = [n.op_type for n in ir_model.graph]
    assert "Split" not in ops and ops.count("Slice") == 1, ops
    concat = next(n for n in ir_model.graph if n.op_type == "Concat")
    assert len(concat.inputs) == 1
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    _compile_and_compare(m, {"x": x}, tmp_path)


def test_rotary_embedding_over_the_whole_head(tmp_path):
    """opset 23 RotaryEmbedding with no rotary_embedding_dim: its body splits off an empty pass-through part."""
    b, h, s, d = 1, 2, 3, 8
    m = _model(
        [helper.make_node("RotaryEmbedding", ["x", "cos", "sin", "pos"], ["y"])],
        [
            helper.make_tensor_value_info("x", F, [b, h, s, d]),
            helper.make_tensor_value_info("cos", F, [10, d // 2]),
            helper.make_tensor_value_info("sin", F, [10, d // 2]),
        ],
        [helper.make_tensor_value_info("y", F, [b, h, s, d])],
        [numpy_helper.from_array(np.array([[0, 2, 5]], np.int64), "pos")],
        opset=23,
    )
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((b, h, s, d)).astype(np.float32),
        "cos": rng.standard_normal((10, d // 2)).astype(np.float32),
        "sin": rng.standard_normal((10, d // 2)).astype(np.float32),
    }
    _compile_and_compare(m, feeds, tmp_path)


def test_an_empty_graph_output_is_still_the_users_to_fix(tmp_path):
    """A Slice past the end leaves an output with no elements: reported, not compiled into nothing."""
    m = _model(
        [helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])],
        [helper.make_tensor_value_info("x", F, [4, 5])],
        [helper.make_tensor_value_info("y", F, [4, 0])],
        [numpy_helper.from_array(np.array([9], np.int64), n) for n in ("st", "en")]
        + [numpy_helper.from_array(np.array([1], np.int64), "ax")],
    )
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    with pytest.raises(UsageError, match="empty tensors"):
        edgec.compile(path, target="cpu", output=str(tmp_path / "out"), use_cache=False)


def test_castlike_of_a_constant_folds_to_the_other_inputs_dtype(tmp_path):
    """Pad's constant_value = CastLike(-inf, mask) where mask is computed at run time: folded to a f16 constant,
    so Pad's parameters are all constants."""
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("CastLike", ["ninf", "x16"], ["fill"]),
        helper.make_node("Pad", ["x16", "pads", "fill"], ["p"]),
        helper.make_node("Cast", ["p"], ["y"], to=F),
    ]
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [2, 5])],
        [
            numpy_helper.from_array(np.array([-np.inf], np.float32), "ninf"),
            numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads"),
        ],
    )
    ir_model = import_proto(m, None)
    FoldConstants().run(ir_model, PassContext())
    pad = next(n for n in ir_model.graph if n.op_type == "Pad")
    fill = pad.inputs[2]
    assert fill.is_const and fill.dtype.short == "f16" and np.isneginf(fill.numpy()).all()
    assert "CastLike" not in [n.op_type for n in ir_model.graph]
    _compile_and_compare(m, {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, tmp_path)
