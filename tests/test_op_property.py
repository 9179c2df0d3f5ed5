"""Property test: random small one-op graphs (hypothesis) compiled for each target give onnxruntime's answer or an
honest refusal (UnsupportedError / BadInputError), never a wrong answer and never a raw exception.

Ops: unary elementwise, broadcasting binaries (float and integer Div / Mod), reductions over any subset of axes
(empty included, with keepdims / noop_with_empty_axes), Softmax / LogSoftmax / Hardmax, Transpose, Concat, Slice
and Gather with negative indices, Cast, Where. Each target runs ``EDGEC_PROPERTY_EXAMPLES`` examples (CI: a few,
derandomized so that CI is reproducible; set it higher for a deep run)."""

import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.compiler import parse_target
from edgec.errors import BadInputError, UnsupportedError, UsageError


EXAMPLES = int(os.environ.get("EDGEC_PROPERTY_EXAMPLES", "0"))
F, I32, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
UNARY = (
    "Abs",
    "Neg",
    "Exp",
    "Log",
    "Sqrt",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Floor",
    "Ceil",
    "Sign",
    "Erf",
    "Softplus",
    "Reciprocal",
    "Sin",
    "Cos",
    "Round",
    "IsNaN",
    "LeakyRelu",
    "Elu",
    "HardSigmoid",
    "Selu",
    "HardSwish",
)
BINARY = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Equal", "Less", "Greater")
REDUCE = (
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)


@st.composite
def shapes(draw, min_rank=1, max_rank=4):
    return tuple(draw(st.lists(st.integers(1, 4), min_size=min_rank, max_size=max_rank)))


def _floats(shape, rng, positive=False):
    a = rng.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a


@st.composite
def cases(draw):
    """(model, feeds): one node over random shapes, attributes and inputs."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(
        st.sampled_from(
            (
                "unary",
                "binary",
                "int_div",
                "reduce",
                "softmax",
                "transpose",
                "concat",
                "slice",
                "gather",
                "cast",
                "where",
            )
        )
    )
    shape = draw(shapes())
    inits, attrs = [], {}
    opset = 17
    if kind == "unary":
        op = draw(st.sampled_from(UNARY))
        x = _floats(shape, rng, positive=op in ("Log", "Sqrt"))
        if op == "Reciprocal":
            x = np.where(np.abs(x) < 0.1, 0.5, x).astype(np.float32)
        ins, feeds = ["x"], {"x": x}
    elif kind == "binary":
        op = draw(st.sampled_from(BINARY))
        # broadcasting: b drops leading axes or has ones
        b_shape = tuple(d if draw(st.booleans()) else 1 for d in shape[draw(st.integers(0, len(shape) - 1)) :])
        a, b = _floats(shape, rng, positive=op == "Pow"), _floats(b_shape, rng)
        if op == "Div":
            b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)
        ins, feeds = ["x", "y"], {"x": a, "y": b}
    elif kind == "int_div":
        op = draw(st.sampled_from(("Div", "Mod")))
        if op == "Mod":
            attrs["fmod"] = 0
        a = rng.integers(-20, 20, shape).astype(np.int32)
        b = rng.integers(1, 6, shape).astype(np.int32) * rng.choice([-1, 1], shape).astype(np.int32)
        ins, feeds = ["x", "y"], {"x": a, "y": b}
    elif kind == "reduce":
        op = draw(st.sampled_from(REDUCE))
        opset = draw(st.sampled_from((13, 18)))
        axes = draw(
            st.lists(st.integers(-len(shape), len(shape) - 1), max_size=len(shape), unique_by=lambda a: a % len(shape))
        )
        attrs["keepdims"] = draw(st.integers(0, 1))
        ins, feeds = ["x"], {"x": _floats(shape, rng, positive=op in ("ReduceProd",))}
        if opset >= 18 or op == "ReduceSum":
            if axes or draw(st.booleans()):
                inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
                ins.append("axes")
            if not axes and draw(st.booleans()):
                attrs["noop_with_empty_axes"] = 1
        elif axes:
            attrs["axes"] = axes
    elif kind == "softmax":
        op = draw(st.sampled_from(("Softmax", "LogSoftmax", "Hardmax")))
        attrs["axis"] = draw(st.integers(-len(shape), len(shape) - 1))
        ins, feeds = ["x"], {"x": _floats(shape, rng)}
    elif kind == "transpose":
        op = "Transpose"
        attrs["perm"] = list(draw(st.permutations(range(len(shape)))))
        ins, feeds = ["x"], {"x": _floats(shape, rng)}
    elif kind == "concat":
        op = "Concat"
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        attrs["axis"] = axis
        n = draw(st.integers(1, 3))
        feeds = {}
        for k in range(n):
            s = list(shape)
            s[axis] = draw(st.integers(1, 3))
            feeds[f"x{k}"] = _floats(tuple(s), rng)
        ins = list(feeds)
    elif kind == "slice":
        op = "Slice"
        axis = draw(st.integers(0, len(shape) - 1))
        d = shape[axis]
        start = draw(st.integers(-d - 1, d))
        end = draw(st.integers(-d - 1, d + 1))
        step = draw(st.sampled_from((1, 2, -1)))
        for name, v in (("starts", start), ("ends", end), ("axes", axis), ("steps", step)):
            inits.append(numpy_helper.from_array(np.array([v], np.int64), name))
        ins, feeds = ["x", "starts", "ends", "axes", "steps"], {"x": _floats(shape, rng)}
    elif kind == "gather":
        op = draw(st.sampled_from(("Gather", "GatherElements")))
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        attrs["axis"] = axis
        d = shape[axis]
        if op == "Gather":
            idx = rng.integers(-d, d, draw(shapes(1, 2)))
        else:
            s = list(shape)
            s[axis] = draw(st.integers(1, 3))
            idx = rng.integers(-d, d, tuple(s))
        inits.append(numpy_helper.from_array(idx.astype(np.int64), "idx"))
        ins, feeds = ["x", "idx"], {"x": _floats(shape, rng)}
    elif kind == "cast":
        op = "Cast"
        to = draw(st.sampled_from((I32, I64, TensorProto.BOOL, F)))
        attrs["to"] = to
        ins, feeds = ["x"], {"x": (_floats(shape, rng) * 4).astype(np.float32)}
    else:
        op = "Where"
        ins = ["c", "x", "y"]
        feeds = {"c": rng.random(shape) > 0.5, "x": _floats(shape, rng), "y": _floats(shape[-1:], rng)}
    n_out = 1
    node = helper.make_node(op, ins, ["out"], **attrs)
    graph = helper.make_graph(
        [node],
        "prop",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info("out") for _ in range(n_out)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m, feeds


def _check(compare, target: str, model: onnx.ModelProto, feeds: dict) -> None:
    try:
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception:  # noqa: BLE001 - onnxruntime lacks the variant: nothing to compare with
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        onnx.save(model, path)
        tgt = parse_target(target)
        try:
            res = edgec.compile(path, target=target, output=os.path.join(tmp, "out"), use_cache=False)
            got = tgt.run_artifact(res.output_dir, feeds, list(feeds))
        except (UnsupportedError, BadInputError, UsageError):
            return  # an honest refusal
        cat, detail = compare(want, list(got), fp16=tgt.name == "coreml")
    assert cat == "pass", f"{target}: {onnx.helper.printable_graph(model.graph)}\n{detail}"


# cpu compiles through TVM (seconds per example); the others take well under a second
TARGETS = [("cpu", 4), ("openvino", 12), ("tensorrt{precision=fp32}", 12), ("coreml", 12)]


@pytest.mark.parametrize("target,n", TARGETS, ids=[t for t, _ in TARGETS])
def test_random_one_op_graphs_match_onnxruntime(node_suite, target, n):
    compare = node_suite[0].compare  # benchmarks/coverage.py's comparison, as onnx's runner compares

    @settings(
        max_examples=EXAMPLES or n,
        deadline=None,
        derandomize=not EXAMPLES,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def prop(case):
        _check(compare, target, *case)

    prop()
