"""Control flow that is static at compile time (If / Loop / Scan / SequenceMap, sequences, optionals) is rewritten
into plain tensor ops (edgec.ir.onnx_static): the compiled cpu artifact computes what onnxruntime computes on the
original model, and what is not static is refused with the node, its op and the reason."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.compiler import parse_target
from edgec.errors import UnsupportedError
from edgec.ir import executor
from edgec.ir.onnx_io import UnsupportedModelError
from edgec.ir.onnx_static import MAX_UNROLLED_NODES, eliminate_control_flow
from edgec.plugins.cleanup.decompose import Decompose
from edgec.plugins.frontends.onnx import import_proto

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
RNG = np.random.default_rng(0)


def _vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def _const(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    m = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, list(inits)), opset_imports=[helper.make_opsetid("", opset)]
    )
    m.ir_version = 8 if opset >= 13 else 6
    return m


def _ort(m, feeds):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _compiled_matches(tmp_path, m, feed_sets, name="m"):
    """Compile ``m`` for cpu and run the artifact on each feed set: the same numbers as onnxruntime on ``m``."""
    p = tmp_path / f"{name}.onnx"
    onnx.save(m, str(p))
    res = edgec.compile(str(p), target="cpu", output=str(tmp_path / f"{name}_out"), use_cache=False)
    tgt = parse_target("cpu")
    names = [vi.name for vi in m.graph.input]
    for feeds in feed_sets:
        got = tgt.run_artifact(res.output_dir, feeds, names)
        want = _ort(m, feeds)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert np.asarray(g).shape == np.asarray(w).shape
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-6)


def _rewritten_matches(m, feeds):
    """The rewritten model holds no control flow and imports; its IR computes what onnxruntime computes on ``m``."""
    r = eliminate_control_flow(m)
    assert not any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in r.graph.node for a in n.attribute
    )
    model = import_proto(r, None)
    got = executor.run(model, feeds)
    for o, want in zip(model.graph.outputs, _ort(m, feeds)):
        assert got[o.name].shape == np.asarray(want).shape
        np.testing.assert_allclose(got[o.name], want, rtol=1e-5, atol=1e-6)
    return r


# ------------------------------------------------------------------------------------------------ bodies
def _loop_body(scan=True):
    """y_out = y_in + x * (i + 1) (x from the outer scope); scan output y_out * 2; cond passed through an Identity."""
    nodes = [
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("Add", ["i", "one"], ["i1"]),
        helper.make_node("Cast", ["i1"], ["f"], to=F),
        helper.make_node("Mul", ["x", "f"], ["xf"]),
        helper.make_node("Add", ["y_in", "xf"], ["y_out"]),
    ]
    outs = [_vi("cond_out", [], B), _vi("y_out", [2, 3])]
    if scan:
        nodes.append(helper.make_node("Mul", ["y_out", "two"], ["s"]))
        outs.append(_vi("s", [2, 3]))
    return helper.make_graph(
        nodes,
        "body",
        [_vi("i", [], I64), _vi("cond_in", [], B), _vi("y_in", [2, 3])],
        outs,
        [_const("one", np.array(1, np.int64)), _const("two", np.array(2, np.float32))],
    )


def _loop_model(trip, opset=17, cond_init=True):
    ins = ["M" if trip is not None else "", "c", "y0"]
    inits = [_const("c", np.array(cond_init)), _const("y0", RNG.standard_normal((2, 3)).astype(np.float32))]
    if trip is not None:
        inits.append(_const("M", np.array(trip, np.int64)))
    return _model(
        [helper.make_node("Loop", ins, ["y", "ys"], body=_loop_body())],
        [_vi("x", [2, 3])],
        [_vi("y", [2, 3]), _vi("ys", None)],
        inits,
        opset,
    )


# ------------------------------------------------------------------------------------------------ If
def test_if_constant_cond_inlines_the_taken_branch_with_a_nested_loop(tmp_path):
    """The taken branch holds a Loop (nested control flow); the other branch holds an op edgec cannot import."""
    loop = helper.make_node("Loop", ["M", "", "y0"], ["t_y", "t_ys"], body=_loop_body())
    then_g = helper.make_graph([loop, helper.make_node("Relu", ["t_y"], ["t_out"])], "then", [], [_vi("t_out", [2, 3])])
    else_g = helper.make_graph(
        [helper.make_node("Foo", ["x"], ["e_out"], domain="unknown.domain")], "else", [], [_vi("e_out", [2, 3])]
    )
    m = _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
        [_vi("x", [2, 3])],
        [_vi("y", [2, 3])],
        [
            _const("c", np.array(True)),
            _const("M", np.array(3, np.int64)),
            _const("y0", RNG.standard_normal((2, 3)).astype(np.float32)),
        ],
    )
    m.opset_import.append(helper.make_opsetid("unknown.domain", 1))
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    r = eliminate_control_flow(m)
    assert not any(n.domain for n in r.graph.node)
    m.opset_import.pop()  # onnxruntime checks every domain: compare on the model without the untaken branch's
    m.graph.node[0].attribute[0].g.CopyFrom(
        helper.make_graph([helper.make_node("Neg", ["x"], ["e_out"])], "else", [], [_vi("e_out", [2, 3])])
    )
    _compiled_matches(tmp_path, m, [{"x": x}])


def test_if_run_time_cond_computes_both_branches_and_selects(tmp_path):
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Mul", ["a", "x"], ["t"])],
        "then",
        [],
        [_vi("t", [2, 3])],
    )
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", [2, 3])])
    m = _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
        [_vi("c", [1], B), _vi("x", [2, 3])],
        [_vi("y", [2, 3])],
        opset=11,
    )
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    _compiled_matches(tmp_path, m, [{"c": np.array([True]), "x": x}, {"c": np.array([False]), "x": x}])


def test_if_run_time_cond_with_different_shapes_is_refused(tmp_path):
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [_vi("t", None)])
    else_g = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["e"], keepdims=0)], "else", [], [_vi("e", None)])
    m = _model(
        [helper.make_node("If", ["c"], ["y"], name="choose", then_branch=then_g, else_branch=else_g)],
        [_vi("c", [], B), _vi("x", [2, 3])],
        [_vi("y", None)],
        opset=13,
    )
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    with pytest.raises(
        UnsupportedError,
        match=r"(?s)node choose \(If, opset 13\).*computed at run time.*"
        r"float\[2, 3\] in one branch and float\[\] in the other",
    ):
        edgec.compile(str(p), target="cpu", output=str(tmp_path / "out"), use_cache=False)


def test_if_run_time_cond_with_random_branch_is_refused():
    then_g = helper.make_graph([helper.make_node("RandomNormalLike", ["x"], ["t"])], "then", [], [_vi("t", [2, 3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", [2, 3])])
    m = _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
        [_vi("c", [], B), _vi("x", [2, 3])],
        [_vi("y", [2, 3])],
    )
    with pytest.raises(UnsupportedModelError, match=r"node #0 \(If, opset 17\).*RandomNormalLike.*not deterministic"):
        eliminate_control_flow(m)


# ------------------------------------------------------------------------------------------------ Loop
@pytest.mark.parametrize("opset", [11, 17])
def test_loop_constant_trip_count_unrolled(tmp_path, opset):
    """Opset 11 is rewritten before the upgrade to 13 (Unsqueeze by attribute there)."""
    m = _loop_model(4, opset)
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    _compiled_matches(tmp_path, m, [{"x": x}])


def test_loop_zero_iterations_and_false_initial_cond():
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    for m in (_loop_model(0), _loop_model(5, cond_init=False)):
        m.graph.output[1].CopyFrom(_vi("ys", [0, 2, 3]))
        r = _rewritten_matches(m, {"x": x})
        assert not any(n.op_type == "Add" for n in r.graph.node)


def test_loop_without_trip_count_ends_on_a_constant_condition():
    """cond_out = i < 2 (the iteration number is a constant in each copy): three iterations."""
    body = _loop_body()
    del body.node[0]
    body.node.append(helper.make_node("Less", ["i", "lim"], ["cond_out"]))
    body.initializer.append(_const("lim", np.array(2, np.int64)))
    m = _model(
        [helper.make_node("Loop", ["", "c", "y0"], ["y", "ys"], body=body)],
        [_vi("x", [2, 3])],
        [_vi("y", [2, 3]), _vi("ys", [3, 2, 3])],
        [_const("c", np.array(True)), _const("y0", np.ones((2, 3), np.float32))],
    )
    r = _rewritten_matches(m, {"x": RNG.standard_normal((2, 3)).astype(np.float32)})
    assert sum(n.op_type == "Mul" for n in r.graph.node) == 6


def test_loop_run_time_trip_count_is_refused(tmp_path):
    m = _loop_model(None)
    m.graph.node[0].input[0] = "n"
    m.graph.node[0].name = "the_loop"
    m.graph.input.append(_vi("n", [], I64))
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    with pytest.raises(
        UnsupportedError,
        match=r"node the_loop \(Loop, opset 17\): its trip count M \('n'\) is "
        "computed at run time",
    ):
        edgec.compile(str(p), target="cpu", output=str(tmp_path / "out"), use_cache=False)


def test_loop_run_time_condition_is_refused():
    body = _loop_body()
    del body.node[0]
    body.node.extend(
        [
            helper.make_node("ReduceSum", ["y_out"], ["tot"], keepdims=0),
            helper.make_node("Greater", ["tot", "zero"], ["cond_out"]),
        ]
    )
    body.initializer.append(_const("zero", np.array(0, np.float32)))
    m = _model(
        [helper.make_node("Loop", ["M", "c", "y0"], ["y", "ys"], body=body)],
        [_vi("x", [2, 3])],
        [_vi("y", [2, 3]), _vi("ys", None)],
        [_const("M", np.array(3, np.int64)), _const("c", np.array(True)), _const("y0", np.ones((2, 3), np.float32))],
    )
    with pytest.raises(
        UnsupportedModelError,
        match=r"node #0 \(Loop, opset 17\): its body's condition output "
        r"'cond_out' is computed at run time",
    ):
        eliminate_control_flow(m)


def test_loop_unroll_cap_is_refused():
    m = _loop_model(MAX_UNROLLED_NODES)
    with pytest.raises(
        UnsupportedModelError,
        match=rf"node #0 \(Loop, opset 17\): unrolling {MAX_UNROLLED_NODES} "
        rf"iterations of a 6-node body would exceed the limit of "
        rf"{MAX_UNROLLED_NODES} nodes",
    ):
        eliminate_control_flow(m)


# ------------------------------------------------------------------------------------------------ Scan
def _scan_body():
    """Two states (a running sum and a running product), one scan output (the sum times the element)."""
    nodes = [
        helper.make_node("Add", ["s_in", "e"], ["s_out"]),
        helper.make_node("Mul", ["p_in", "e"], ["p_out"]),
        helper.make_node("Mul", ["s_out", "e2"], ["o"]),
    ]
    return helper.make_graph(
        nodes,
        "scan_body",
        [_vi("s_in", [3]), _vi("p_in", [3]), _vi("e", [3]), _vi("e2", [3])],
        [_vi("s_out", [3]), _vi("p_out", [3]), _vi("o", [3])],
    )


@pytest.mark.parametrize("opset", [9, 16])
def test_scan_axes_and_directions(tmp_path, opset):
    """Scan input 0 along axis 1 in reverse, input 1 along axis 0; the output stacked along axis 1, reversed."""
    scan = helper.make_node(
        "Scan",
        ["s0", "p0", "xa", "xb"],
        ["s", "p", "ys"],
        body=_scan_body(),
        num_scan_inputs=2,
        scan_input_axes=[1, 0],
        scan_input_directions=[1, 0],
        scan_output_axes=[1],
        scan_output_directions=[1],
    )
    m = _model(
        [scan],
        [_vi("s0", [3]), _vi("xa", [3, 4]), _vi("xb", [4, 3])],
        [_vi("s", [3]), _vi("p", [3]), _vi("ys", [3, 4])],
        [_const("p0", np.ones(3, np.float32))],
        opset,
    )
    feeds = {
        "s0": RNG.standard_normal(3).astype(np.float32),
        "xa": RNG.standard_normal((3, 4)).astype(np.float32),
        "xb": RNG.standard_normal((4, 3)).astype(np.float32),
    }
    _compiled_matches(tmp_path, m, [feeds])


def test_scan_opset8_batched():
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "e"], ["s_out"]), helper.make_node("Identity", ["s_out"], ["o"])],
        "b",
        [_vi("s_in", [2]), _vi("e", [2])],
        [_vi("s_out", [2]), _vi("o", [2])],
    )
    m = _model(
        [helper.make_node("Scan", ["", "s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1, directions=[1])],
        [_vi("s0", [3, 2]), _vi("x", [3, 4, 2])],
        [_vi("s", [3, 2]), _vi("ys", [3, 4, 2])],
        opset=8,
    )
    _rewritten_matches(
        m,
        {"s0": RNG.standard_normal((3, 2)).astype(np.float32), "x": RNG.standard_normal((3, 4, 2)).astype(np.float32)},
    )


def test_scan_dynamic_length_is_refused():
    scan = helper.make_node("Scan", ["s0", "p0", "xa", "xb"], ["s", "p", "ys"], body=_scan_body(), num_scan_inputs=2)
    m = _model(
        [scan],
        [_vi("s0", [3]), _vi("p0", [3]), _vi("xa", ["T", 3]), _vi("xb", ["T", 3])],
        [_vi("s", [3]), _vi("p", [3]), _vi("ys", None)],
    )
    with pytest.raises(
        UnsupportedModelError,
        match=r"node #0 \(Scan, opset 17\): the shape of its scan input 'xa' is "
        "not static",
    ):
        eliminate_control_flow(m)


# ------------------------------------------------------------------------------------------------ sequences
def test_sequences_and_optionals(tmp_path):
    """SplitToSequence / Insert / Erase / At / Length / ConcatFromSequence (with and without new_axis), SequenceMap
    over a sequence and a tensor, Optional / OptionalHasElement / OptionalGetElement."""
    map_body = helper.make_graph(
        [helper.make_node("Add", ["el", "t"], ["r"])], "map", [_vi("el", [2, 2]), _vi("t", [2, 2])], [_vi("r", [2, 2])]
    )
    nodes = [
        helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1),  # [2,2], [2,1], [2,3]
        helper.make_node("SequenceInsert", ["seq", "w", "zero"], ["seq2"]),  # w first
        helper.make_node("SequenceErase", ["seq2", "minus1"], ["seq3"]),  # [w, [2,2], [2,1]]
        helper.make_node("SequenceAt", ["seq3", "one"], ["a"]),  # the [2,2] piece
        helper.make_node("SequenceLength", ["seq3"], ["n"]),
        helper.make_node("ConcatFromSequence", ["seq3"], ["cat"], axis=1),  # [2, 5]
        helper.make_node("SequenceConstruct", ["a", "w"], ["pair"]),
        helper.make_node("SequenceMap", ["pair", "w"], ["mapped"], body=map_body),
        helper.make_node("ConcatFromSequence", ["mapped"], ["stacked"], axis=-1, new_axis=1),  # [2, 2, 2]
        helper.make_node("Optional", ["a"], ["opt"]),
        helper.make_node("OptionalHasElement", ["opt"], ["has"]),
        helper.make_node("OptionalGetElement", ["opt"], ["got"]),
        helper.make_node("Relu", ["got"], ["rl"]),
        helper.make_node("SplitToSequence", ["w"], ["rows"], axis=0, keepdims=0),
        helper.make_node("SequenceAt", ["rows", "minus1"], ["last_row"]),
    ]
    m = _model(
        nodes,
        [_vi("x", [2, 6]), _vi("w", [2, 2])],
        [
            _vi("cat", [2, 5]),
            _vi("n", [], I64),
            _vi("stacked", [2, 2, 2]),
            _vi("has", [], B),
            _vi("rl", [2, 2]),
            _vi("last_row", [2]),
        ],
        [
            _const("split", np.array([2, 1, 3], np.int64)),
            _const("zero", np.array(0, np.int64)),
            _const("one", np.array(1, np.int64)),
            _const("minus1", np.array(-1, np.int64)),
        ],
        opset=18,
    )
    feeds = {"x": RNG.standard_normal((2, 6)).astype(np.float32), "w": RNG.standard_normal((2, 2)).astype(np.float32)}
    _rewritten_matches(m, feeds)
    _compiled_matches(tmp_path, m, [feeds])


def test_sequence_graph_input_and_output_are_refused(tmp_path):
    seq_t = helper.make_tensor_sequence_value_info("s", F, [2])
    m = _model(
        [helper.make_node("SequenceAt", ["s", "zero"], ["y"])],
        [seq_t],
        [_vi("y", [2])],
        [_const("zero", np.array(0, np.int64))],
    )
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    with pytest.raises(UnsupportedError, match="graph input 's' is a sequence: edgec's runtimes feed tensors only"):
        edgec.compile(str(p), target="cpu", output=str(tmp_path / "out"), use_cache=False)
    m = _model(
        [helper.make_node("SequenceConstruct", ["x"], ["s"])],
        [_vi("x", [2])],
        [helper.make_tensor_sequence_value_info("s", F, [2])],
    )
    with pytest.raises(UnsupportedModelError, match="graph output 's' is a sequence"):
        eliminate_control_flow(m)


def test_run_time_position_is_refused():
    m = _model(
        [
            helper.make_node("SequenceConstruct", ["x", "x"], ["s"]),
            helper.make_node("SequenceAt", ["s", "k"], ["y"], name="pick"),
        ],
        [_vi("x", [2]), _vi("k", [], I64)],
        [_vi("y", [2])],
    )
    with pytest.raises(
        UnsupportedModelError,
        match=r"node pick \(SequenceAt, opset 17\): the position \('k'\) is "
        "computed at run time",
    ):
        eliminate_control_flow(m)


def test_model_without_control_flow_is_returned_as_is():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])
    assert eliminate_control_flow(m) is m


# ------------------------------------------------------------------------------------------------ decompose
def test_decompose_uses_a_body_whose_loop_is_static():
    """Range's onnx function body holds a Loop: with constant start / limit / delta it is unrolled, so a target
    without Range gets plain ops."""
    import types

    from edgec.ir.passes import PassContext
    from edgec.target import Capabilities

    core = frozenset(
        {"Add", "Sub", "Mul", "Div", "Cast", "Ceil", "Relu", "Identity", "Unsqueeze", "Concat", "Constant"}
    )
    ctx = PassContext(target=types.SimpleNamespace(capabilities=Capabilities(ops=core)))
    m = _model(
        [helper.make_node("Range", ["s", "l", "d"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])],
        [_vi("x", [4])],
        [_vi("y", [4])],
        [
            _const("s", np.array(1.5, np.float32)),
            _const("l", np.array(5.0, np.float32)),
            _const("d", np.array(0.9, np.float32)),
        ],
        opset=17,
    )
    model = import_proto(m, None)
    Decompose().run(model, ctx)
    assert {n.op_type for n in model.graph} <= core
    x = RNG.standard_normal(4).astype(np.float32)
    got = executor.run(model, {"x": x})
    np.testing.assert_allclose(got["y"], _ort(m, {"x": x})[0], rtol=1e-6)


def test_if_cond_known_only_after_a_loop_is_unrolled():
    """The condition reads the Loop's stacked output's shape (static once the Loop is unrolled and inferred); the
    branches differ in shape, so only the constant condition makes the If compilable."""
    m = _loop_model(3)
    then_g = helper.make_graph([helper.make_node("ReduceSum", ["ys"], ["t"], keepdims=0)], "then", [], [_vi("t", None)])
    else_g = helper.make_graph([helper.make_node("Identity", ["ys"], ["e"])], "else", [], [_vi("e", None)])
    m.graph.node.extend(
        [
            helper.make_node("Shape", ["ys"], ["shp"]),
            helper.make_node("Gather", ["shp", "zero"], ["n"]),
            helper.make_node("Equal", ["n", "three"], ["c3"]),
            helper.make_node("If", ["c3"], ["z"], then_branch=then_g, else_branch=else_g),
        ]
    )
    m.graph.initializer.extend([_const("zero", np.array(0, np.int64)), _const("three", np.array(3, np.int64))])
    m.graph.output.append(_vi("z", None))
    r = _rewritten_matches(m, {"x": RNG.standard_normal((2, 3)).astype(np.float32)})
    assert not any(n.op_type == "Where" for n in r.graph.node)
