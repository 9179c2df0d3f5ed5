"""The verify stage on its own: where the original's outputs come from, and which criterion a target's typed
VerifyPolicy puts in force."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgec import verify
from edgec.errors import BadInputError
from edgec.ir import ActivationQuant, DType, Graph, Model
from edgec.target import ACT_QUANT_POLICY, Capabilities, Target, VerifyPolicy


def _identity(tmp_path) -> str:
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_original_outputs_when_neither_runtime_can_run_the_original(tmp_path, monkeypatch):
    """onnxruntime without a kernel (NOT_IMPLEMENTED) falls back to onnx's reference evaluator; where that fails
    too, the error names both causes instead of leaking either library's exception."""
    import onnx.reference
    import onnxruntime as ort

    path = _identity(tmp_path)
    feeds = {"x": np.ones(2, np.float32)}

    def no_kernel(*a, **k):
        raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Foo")

    class Broken:
        def __init__(self, *a, **k):
            raise ValueError("no implementation for Foo")

    monkeypatch.setattr(ort, "InferenceSession", no_kernel)
    got = verify.original_outputs(path, Model(Graph("g")), feeds)
    assert got["runtime"].startswith("onnx reference evaluator") and np.array_equal(got["outputs"][0], feeds["x"])
    monkeypatch.setattr(onnx.reference, "ReferenceEvaluator", Broken)
    with pytest.raises(
        BadInputError,
        match=r"neither onnxruntime \(.*NOT_IMPLEMENTED.*\) nor onnx's reference "
        r"evaluator \(ValueError: no implementation for Foo\)",
    ):
        verify.original_outputs(path, Model(Graph("g")), feeds)


def test_original_outputs_other_onnxruntime_errors_are_bad_input(tmp_path, monkeypatch):
    import onnxruntime as ort

    def invalid(*a, **k):
        raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : bad")

    monkeypatch.setattr(ort, "InferenceSession", invalid)
    with pytest.raises(BadInputError, match="onnxruntime cannot run the original model.*INVALID_GRAPH"):
        verify.original_outputs(_identity(tmp_path), Model(Graph("g")), {"x": np.ones(2, np.float32)})


@dataclasses.dataclass(frozen=True)
class _Plain(Target):
    name: ClassVar[str] = "plain"
    capabilities: ClassVar[Capabilities] = Capabilities(ops=frozenset())


@dataclasses.dataclass(frozen=True)
class _Fp16(_Plain):
    def verify_policy(self) -> VerifyPolicy | None:
        return VerifyPolicy("half precision", min_cosine=0.99, min_top1=0.9)

    def act_quant_policy(self) -> VerifyPolicy:
        return VerifyPolicy("int8 kernels", min_cosine=0.995, max_rel_err=0.1)


def _model(act_quant: bool) -> Model:
    g = Graph("g")
    x = g.add_input("x", DType.FLOAT32, (2, 4))
    y = g.op("Relu", [x], name="r").output
    if act_quant:
        y.quant = ActivationQuant(scale=0.1)
    g.outputs.append(y)
    return Model(g, {"": 17})


@pytest.mark.parametrize(
    "target, act_quant, name, rel_bound",
    [
        (_Plain(), False, "max-rel-err", None),
        (_Plain(), True, "activation-quant", ACT_QUANT_POLICY.max_rel_err),
        (_Fp16(), False, "target", None),
        (_Fp16(), True, "target", None),  # the target's own criterion comes first; its act-quant one is reported
    ],
)
def test_criteria_follow_the_targets_policies(target, act_quant, name, rel_bound):
    c = verify.criteria(target, _model(act_quant), 1e-4, False, None, None)
    assert c.name == name
    assert (c.vs_reference.max_rel_err if c.vs_reference else None) == rel_bound
    if act_quant:
        assert c.act_quant == target.act_quant_policy()


def test_a_policy_judges_cosine_rel_err_and_top1():
    crit = verify.Criteria(1e-4, None, VerifyPolicy("x", min_cosine=0.999, max_rel_err=0.05), False, 0.98, 0.8, False)
    ref = np.linspace(-1, 1, 40, dtype=np.float32).reshape(4, 10)
    ok = verify._judge_output("y", ref * 1.001, ref, None, None, crit)
    assert ok["passed"], ok
    bad = verify._judge_output("y", ref + 0.2, ref, None, None, crit)
    assert not bad["passed"] and any("rel err" in w and "> 0.05" in w for w in bad["failed_because"])
