"""Numbers at the edges, where a runtime's own kernels were found wrong: functions of tiny arguments (TVM's tanh
cancels near 0, OpenVINO's erf is 1e-7 off in absolute terms) and int8 / uint8 arithmetic that must wrap as
ONNX's two's complement does (OpenVINO saturates). One model per family, compiled for each target and compared
with onnxruntime on the same file at onnx's own tolerance."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import edgec
from edgec.compiler import parse_target

TARGETS = ["cpu", "openvino"]
UNARY = [
    "Tanh",
    "Erf",
    "Sinh",
    "Asinh",
    "Atanh",
    "Sin",
    "Tan",
    "Asin",
    "Atan",
    "Sigmoid",
    "Softplus",
    "Mish",
    "Elu",
    "Softsign",
]


def _run(m, feeds, target, tmp_path):
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    res = edgec.compile(path, target=target, output=str(tmp_path / target), use_cache=False)
    got = parse_target(target).run_artifact(res.output_dir, feeds, list(feeds))
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    return got, want


@pytest.mark.parametrize("target", TARGETS)
def test_functions_of_tiny_arguments_keep_their_relative_precision(target, tmp_path):
    x = np.array([1e-8, 1e-7, 1e-6, 1e-5, -3e-5, 1e-4, 1e-3, 0.3, -0.7, 0.0], np.float32)
    nodes = [helper.make_node(op, ["x"], [f"y_{op}"]) for op in UNARY]
    m = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10])],
            [helper.make_tensor_value_info(f"y_{op}", TensorProto.FLOAT, [10]) for op in UNARY],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    m.ir_version = 8
    got, want = _run(m, {"x": x}, target, tmp_path)
    for op, g, w in zip(UNARY, got, want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-7, err_msg=f"{op} on {target}")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_narrow_integer_arithmetic_wraps(target, dt, tmp_path):
    info = np.iinfo(dt)
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dt))
    x = np.array([info.max, info.min, 100, 3, info.max // 2 + 1, 7], dt)
    y = np.array([2, 1, 2, 5, 2, 3], dt) if info.min == 0 else np.array([2, -1, 2, -5, 2, 3], dt)
    ops = ["Add", "Sub", "Mul", "Div"] + (["Neg", "Abs"] if info.min < 0 else [])
    nodes = [helper.make_node(op, ["x", "y"] if op not in ("Neg", "Abs") else ["x"], [f"z_{op}"]) for op in ops]
    m = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info(n, t, [6]) for n in "xy"],
            [helper.make_tensor_value_info(f"z_{op}", t, [6]) for op in ops],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m.ir_version = 8
    got, want = _run(m, {"x": x, "y": y}, target, tmp_path)
    for op, g, w in zip(ops, got, want):
        np.testing.assert_array_equal(g, w, err_msg=f"{op} of {np.dtype(dt).name} on {target}")


@pytest.mark.parametrize("dt", [np.int8, np.int32, np.int64, np.uint32])
def test_integer_division_never_traps_on_cpu(dt, tmp_path):
    """x86's idiv raises SIGFPE on a zero divisor and on MIN / -1, which would kill the process running the
    artifact: Div and Mod (both fmods) give -x / 0 for a divisor of -1 (wrapping) and 0 for a zero divisor."""
    info = np.iinfo(dt)
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dt))
    x = np.array([info.min, 7, info.max, 9, 5], dt)
    y = np.array([-1 if info.min < 0 else 1, 0, -1 if info.min < 0 else 1, 2, 0], dt)
    nodes = [
        helper.make_node("Div", ["x", "y"], ["d"]),
        helper.make_node("Mod", ["x", "y"], ["m0"]),
        helper.make_node("Mod", ["x", "y"], ["m1"], fmod=1),
    ]
    m = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info(n, t, [5]) for n in "xy"],
            [helper.make_tensor_value_info(o, t, [5]) for o in ("d", "m0", "m1")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m.ir_version = 8
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    res = edgec.compile(path, target="cpu", output=str(tmp_path / "out"), use_cache=False)
    d, m0, m1 = parse_target("cpu").run_artifact(res.output_dir, {"x": x, "y": y}, ["x", "y"])
    with np.errstate(all="ignore"):
        want_d = np.array([x[0] if info.min < 0 else x[0], 0, -x[2] if info.min < 0 else x[2], 4, 0], dt)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(m0, np.array([0, 0, 0, 1, 0], dt))
    np.testing.assert_array_equal(m1, np.array([0, 0, 0, 1, 0], dt))


def test_pow_across_types_on_cpu(tmp_path):
    """A float base to an integer power keeps the integer's parity (2**24 + 1 rounds to an even float); an integer
    base is computed in float64 and truncated, as onnxruntime computes it."""
    x = np.array([-2.0, -1.0, 2.0, -1.5], np.float32)
    e = np.array([3, 2**24 + 1, 10, 0], np.int64)
    xi = np.array([3, -2, 7, 1], np.int32)
    ei = np.array([4, 3, 2, -1], np.int32)
    nodes = [helper.make_node("Pow", ["x", "e"], ["p"]), helper.make_node("Pow", ["xi", "ei"], ["q"])]
    m = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                helper.make_tensor_value_info("e", TensorProto.INT64, [4]),
                helper.make_tensor_value_info("xi", TensorProto.INT32, [4]),
                helper.make_tensor_value_info("ei", TensorProto.INT32, [4]),
            ],
            [
                helper.make_tensor_value_info("p", TensorProto.FLOAT, [4]),
                helper.make_tensor_value_info("q", TensorProto.INT32, [4]),
            ],
        ),
        opset_imports=[helper.make_opsetid("", 15)],
    )
    m.ir_version = 8
    got, want = _run(m, {"x": x, "e": e, "xi": xi, "ei": ei}, "cpu", tmp_path)
    np.testing.assert_array_equal(got[0], np.array([-8.0, -1.0, 1024.0, 1.0], np.float32))
    np.testing.assert_array_equal(got[1], want[1])
