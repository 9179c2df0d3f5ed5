"""legalize-dtypes: float8 / float4 / e8m0 / bfloat16 / int4 / int2 held in storage types, converted exactly as
onnx's reference converts them."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper

from edgec.ir import DType
from edgec.ir.dtypes import from_storage, to_storage
from edgec.plugins.cleanup.legalize_dtypes import _reference_cast, encode_numpy, encode_table

NARROW = [
    DType.FLOAT8E4M3FN,
    DType.FLOAT8E4M3FNUZ,
    DType.FLOAT8E5M2,
    DType.FLOAT8E5M2FNUZ,
    DType.FLOAT4E2M1,
    DType.BFLOAT16,
]


def _all_float16() -> np.ndarray:
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    return x[~np.isnan(x) | (np.arange(1 << 16) == 0x7E00)]  # one (positive) NaN: its sign is not observable


@pytest.mark.parametrize("dtype", NARROW, ids=lambda d: d.short)
@pytest.mark.parametrize("saturate", [True, False])
def test_encoding_matches_the_reference_on_every_float16(dtype, saturate):
    tab = encode_table(dtype, saturate, "up")
    x = _all_float16()
    want = _reference_cast(x, dtype, saturate, "up").view(dtype.storage.numpy)
    got = encode_numpy(x, dtype, tab)
    nan = np.isnan(x)
    assert np.array_equal(got[~nan], want[~nan])
    assert np.isnan(from_storage(got[nan], dtype).astype(np.float32)).all() or dtype == DType.FLOAT4E2M1


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
def test_e8m0_round_modes(round_mode):
    tab = encode_table(DType.FLOAT8E8M0, True, round_mode)
    x = np.concatenate([_all_float16(), np.float32(2.0) ** np.arange(-126, 128, dtype=np.float32) * np.float32(1.5)])
    want = _reference_cast(x, DType.FLOAT8E8M0, True, round_mode).view(np.uint8)
    assert np.array_equal(encode_numpy(x, DType.FLOAT8E8M0, tab), want)


def test_storage_round_trip():
    x = np.array([1, -2, 448, np.nan], ml_dtypes.float8_e4m3fn)
    s = to_storage(x)
    assert s.dtype == np.uint8 and s.tolist()[:3] == [56, 192, 126]
    assert np.array_equal(from_storage(s, DType.FLOAT8E4M3FN).view(np.uint8), x.view(np.uint8))
    y = np.array([1, -8, 7], ml_dtypes.int4)
    assert to_storage(y).dtype == np.int8 and from_storage(to_storage(y), DType.INT4).dtype == ml_dtypes.int4
    z = np.array([1.5], np.float32)
    assert to_storage(z) is not None and to_storage(z).dtype == np.float32


# ------------------------------------------------------------------------------------------------ compiled
def _cast_model(src: int, dst: int, shape, **attrs) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=dst, **attrs)],
        "g",
        [helper.make_tensor_value_info("x", src, shape)],
        [helper.make_tensor_value_info("y", dst, shape)],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _run(tmp_path, model: onnx.ModelProto, feeds: dict, target: str = "cpu", verify: bool = False):
    import edgec
    from edgec.compiler import parse_target

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    res = edgec.compile(str(path), target=target, output=str(tmp_path / "out"), use_cache=False, verify=verify)
    return res, parse_target(target).run_model_types(res.output_dir, feeds, res.manifest, list(feeds))


def test_float32_to_float8_and_back_on_cpu(tmp_path):
    """Every float16 value (as float32) through Cast to E4M3FN on the cpu target: the codes equal the reference's."""
    x = _all_float16()
    x = np.concatenate([x, np.array([np.inf, -np.inf, 1e6, -1e-7, 0.0, -0.0], np.float32)])
    res, (y,) = _run(tmp_path, _cast_model(T.FLOAT, T.FLOAT8E4M3FN, [len(x)]), {"x": x})
    want = _reference_cast(x, DType.FLOAT8E4M3FN, True, "up")
    assert y.dtype == ml_dtypes.float8_e4m3fn
    same = (y.view(np.uint8) == want.view(np.uint8)) | (np.isnan(x))
    assert same.all() and np.isnan(y[np.isnan(x)].astype(np.float32)).all()
    out = res.manifest["outputs"][0]
    assert out["dtype"] == "f8e4m3fn" and out["stored_as"] == "u8"


def test_float8_to_float16_and_int4_casts_on_cpu(tmp_path):
    codes = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e5m2)
    _, (y,) = _run(tmp_path / "a", _cast_model(T.FLOAT8E5M2, T.FLOAT16, [256]), {"x": codes})
    want = _reference_cast(codes, DType.FLOAT16, True, "up")
    assert np.array_equal(y.view(np.uint16), want.view(np.uint16))
    x = np.concatenate([np.linspace(-20, 20, 321, dtype=np.float32), np.array([np.nan, np.inf, -np.inf], np.float32)])
    _, (q,) = _run(tmp_path / "b", _cast_model(T.FLOAT, T.INT4, [len(x)]), {"x": x})
    assert q.dtype == ml_dtypes.int4
    assert np.array_equal(q.astype(np.int8), _reference_cast(x, DType.INT4, True, "up").astype(np.int8))


def test_blocked_int4_dequantize_and_quantize_on_cpu(tmp_path):
    """A blocked INT4 weight (opset 21) dequantized in the graph, and activations quantized to UINT4."""
    rng = np.random.default_rng(0)
    w = rng.integers(-8, 8, size=(4, 8)).astype(ml_dtypes.int4)
    scale = rng.uniform(0.01, 0.1, size=(4, 2)).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=1, block_size=4),
            helper.make_node("MatMul", ["x", "wf"], ["h"]),
            helper.make_node("QuantizeLinear", ["h", "hs", "hz"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", T.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", T.UINT4, [3, 8])],
        [
            onnx.numpy_helper.from_array(w, "w"),
            onnx.numpy_helper.from_array(scale, "s"),
            onnx.numpy_helper.from_array(np.array(0.05, np.float32), "hs"),
            onnx.numpy_helper.from_array(np.array(8, ml_dtypes.uint4), "hz"),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    x = rng.standard_normal((3, 4)).astype(np.float32)
    res, (y,) = _run(tmp_path, model, {"x": x}, verify=True)
    from onnx.reference import ReferenceEvaluator

    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert y.dtype == ml_dtypes.uint4 and np.array_equal(y.astype(np.uint8), want.astype(np.uint8))
    assert res.manifest["verification"]["passed"], res.manifest["verification"]


def test_arithmetic_on_bfloat16_is_left_for_the_check(tmp_path):
    """A bfloat16 Add is not computed on its storage bits: the target's check names the dtype."""
    from edgec.errors import UnsupportedError

    g = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "g",
        [helper.make_tensor_value_info(n, T.BFLOAT16, [4]) for n in "ab"],
        [helper.make_tensor_value_info("c", T.BFLOAT16, [4])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(UnsupportedError, match="bf16"):
        _run(tmp_path, model, {k: np.ones(4, ml_dtypes.bfloat16) for k in "ab"})


@pytest.mark.slow
@pytest.mark.parametrize("target", ["openvino", "tensorrt{precision=fp32}", "coreml{precision=fp32}"])
def test_float8_round_trip_on_other_targets(tmp_path, target):
    """The same rewrite on the other targets' runtimes (coreml: the MIL evaluator where one runs here)."""
    x = _all_float16()[::7]
    try:
        res, (y,) = _run(tmp_path, _cast_model(T.FLOAT, T.FLOAT8E4M3FNUZ, [len(x)]), {"x": x}, target=target)
    except NotImplementedError as e:
        pytest.skip(str(e))
    want = _reference_cast(x, DType.FLOAT8E4M3FNUZ, True, "up").view(np.uint8)
    assert np.array_equal(y.view(np.uint8)[~np.isnan(x)], want[~np.isnan(x)])
    assert json.loads(json.dumps(res.manifest["inputs"]))[0]["dtype"] == "f32"


# ------------------------------------------------------------------------------------------------ IR level
def _legalized(model: onnx.ModelProto, feeds: dict):
    """The pass on the imported model (no target: every such type legalized), run by the reference executor
    on stored inputs; outputs read back as their model types."""
    from edgec.ir import ReferenceExecutor, from_onnx, infer_shapes
    from edgec.ir.dtypes import storage_map
    from edgec.ir.passes import PassContext
    from edgec.plugins.cleanup.legalize_dtypes import LegalizeDtypes

    m = from_onnx(model)
    infer_shapes(m)
    LegalizeDtypes().run(m, PassContext())
    stored = storage_map(m.metadata)
    res = ReferenceExecutor(m).run({k: to_storage(v) if k in stored else v for k, v in feeds.items()})
    return m, [from_storage(res[o.name], stored[o.name]) if o.name in stored else res[o.name] for o in m.graph.outputs]


def _one(node, ins, outs, inits=(), opset=23):
    return helper.make_model(
        helper.make_graph([node], "g", ins, outs, list(inits)), opset_imports=[helper.make_opsetid("", opset)]
    )


REVIEW_CASES = {
    # a bfloat16 scale is decoded from its bits (it was multiplied as the bits' value)
    "dq_int4_bf16_scale": (
        _one(
            helper.make_node("DequantizeLinear", ["w", "s"], ["y"], axis=0, output_dtype=T.FLOAT),
            [helper.make_tensor_value_info("w", T.INT4, [2, 2])],
            [helper.make_tensor_value_info("y", T.FLOAT, [2, 2])],
            [onnx.numpy_helper.from_array(np.array([0.5, 0.25], ml_dtypes.bfloat16), "s")],
        ),
        {"w": np.array([[1, -2], [3, 4]], ml_dtypes.int4)},
    ),
    # the reference ignores a float4 zero point
    "dq_float4_zero_point": (
        _one(
            helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"]),
            [helper.make_tensor_value_info("x", T.FLOAT4E2M1, [2])],
            [helper.make_tensor_value_info("y", T.FLOAT, [2])],
            [
                onnx.numpy_helper.from_array(np.array(1.0, np.float32), "s"),
                onnx.numpy_helper.from_array(np.array(1.0, ml_dtypes.float4_e2m1fn), "z"),
            ],
            21,
        ),
        {"x": np.array([1, 2], ml_dtypes.float4_e2m1fn)},
    ),
    # NaN quantizes to the type's minimum whatever the zero point (the reference's int32 minimum, clipped)
    "q_nan_with_zero_point": (
        _one(
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
            [helper.make_tensor_value_info("x", T.FLOAT, [3])],
            [helper.make_tensor_value_info("y", T.INT4, [3])],
            [
                onnx.numpy_helper.from_array(np.array(1.0, np.float32), "s"),
                onnx.numpy_helper.from_array(np.array(3, ml_dtypes.int4), "z"),
            ],
            21,
        ),
        {"x": np.array([np.nan, -2.5, 1.5], np.float32)},
    ),
}


@pytest.mark.parametrize("name", sorted(REVIEW_CASES))
def test_conversions_match_the_reference(name):
    from onnx.reference import ReferenceEvaluator

    model, feeds = REVIEW_CASES[name]
    with np.errstate(invalid="ignore"):
        want = ReferenceEvaluator(model).run(None, feeds)
    _, got = _legalized(model, feeds)
    for g, w in zip(got, want):
        assert np.array_equal(np.asarray(g).astype(np.float32), np.asarray(w).astype(np.float32)), (g, w)


def test_edgec_ops_on_an_emulated_type_leave_it_for_the_check():
    """A fused edgec op (here Gelu on bfloat16) computes on its input: the value is not turned into its bits."""
    from edgec.ir import from_onnx, infer_shapes
    from edgec.ir.passes import PassContext
    from edgec.plugins.cleanup import FuseGelu
    from edgec.plugins.cleanup.legalize_dtypes import LegalizeDtypes

    nodes = [helper.make_node("Gelu", ["x"], ["g"]), helper.make_node("Cast", ["g"], ["y"], to=T.FLOAT)]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", T.BFLOAT16, [4])],
            [helper.make_tensor_value_info("y", T.FLOAT, [4])],
        ),
        opset_imports=[helper.make_opsetid("", 20)],
    )
    m = from_onnx(model)
    infer_shapes(m)
    FuseGelu().run(m, PassContext())
    LegalizeDtypes().run(m, PassContext())
    assert m.graph.inputs[0].dtype == DType.BFLOAT16  # left as it is: the target's check names bf16


def test_float_mod_fmod0_is_numpys_remainder():
    from edgec.ir import executor, from_onnx
    from edgec.plugins.cleanup.decompose import Decompose
    import types

    from edgec.ir.passes import PassContext
    from edgec.target import Capabilities
    from tests.plugins.test_decompose import CORE

    # a target taking Mod with fmod=1 only
    tgt = types.SimpleNamespace(
        capabilities=Capabilities(ops=CORE | {"Mod", "Xor", "Sign"}),
        accepts_node=lambda n, m: (
            n.op_type in CORE | {"Mod", "Xor", "Sign"} and not (n.op_type == "Mod" and not n.attr("fmod", 0))
        ),
    )
    model = _one(
        helper.make_node("Mod", ["a", "b"], ["y"], fmod=0),
        [helper.make_tensor_value_info(n, T.FLOAT, [4]) for n in "ab"],
        [helper.make_tensor_value_info("y", T.FLOAT, [4])],
        (),
        17,
    )
    m = from_onnx(model)
    assert Decompose().run(m, PassContext(target=tgt))
    a, b = np.array([-4, 4, -3, 3], np.float32), np.array([2, -2, 2, -2], np.float32)
    got = executor.run(m, {"a": a, "b": b})["y"]
    want = np.mod(a, b)
    # (the zeros' signs, copysign(0, b), are not checked here: onnxruntime's Where returns -0.0 as +0.0)
    assert np.array_equal(got, want)
    assert any(n.op_type == "Sign" for n in m.graph)
