"""Pass infrastructure: text pipelines, option validation, verify-after-each-pass, instruments, errors."""

import dataclasses
import os
from typing import ClassVar

import pytest

from edgec import ir
from edgec.host import host
from edgec.ir.passes import (
    DumpIRInstrument,
    Pass,
    PassContext,
    PassError,
    PassManager,
    PipelineError,
    TimingInstrument,
    option,
    parse_pipeline,
)


@dataclasses.dataclass(frozen=True)
class Toy(Pass):
    name: ClassVar[str] = "toy"
    bits: int = option(8, choices=range(2, 9), help="bits")
    method: str = option("rtn", choices=("rtn", "gptq"))
    ratio: float = option(0.5, check=lambda v: 0 < v <= 1, allowed="0 < ratio <= 1")
    act_order: bool = False

    def run(self, model, ctx):
        return False


@dataclasses.dataclass(frozen=True)
class Breaker(Pass):
    """Corrupts the IR on purpose: the verifier must catch it."""

    name: ClassVar[str] = "breaker"

    def run(self, model, ctx):
        n = model.graph.nodes[0]
        n._inputs = (ir.Value("ghost", ir.DType.FLOAT32, (2, 8)),) + n._inputs[1:]
        return True


@dataclasses.dataclass(frozen=True)
class Crasher(Pass):
    name: ClassVar[str] = "crasher"

    def run(self, model, ctx):
        raise RuntimeError("boom")


REG = {"toy": Toy, "breaker": Breaker, "crasher": Crasher, **host().passes.as_dict()}


def test_parse_pipeline_with_options():
    ps = parse_pipeline("dce, toy{bits=4,method=gptq,ratio=0.25,act-order=true},fold-constants", REG)
    assert [p.name for p in ps] == ["dce", "toy", "fold-constants"]
    assert ps[1] == Toy(bits=4, method="gptq", ratio=0.25, act_order=True)
    assert ps[1].describe() == "toy{bits=4,method=gptq,ratio=0.25,act_order=true}"
    assert parse_pipeline("", REG) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("nope", "unknown pass 'nope'; known passes:"),
        ("toy{bits=9}", "toy: option bits=9 is not allowed; allowed: 2..8"),
        ("toy{method=awq}", "option method='awq' is not allowed; allowed: 'rtn', 'gptq'"),
        ("toy{ratio=2}", "allowed: 0 < ratio <= 1"),
        ("toy{bits=four}", "option bits='four' is not a valid int"),
        ("toy{colour=red}", "unknown option 'colour'; options: bits, method, ratio, act_order"),
        ("toy{bits}", "needs a value"),
        ("toy{bits=4", "cannot parse the pipeline"),
    ],
)
def test_pipeline_errors_name_option_and_allowed_values(text, message):
    with pytest.raises(PipelineError) as e:
        parse_pipeline(text, REG)
    assert message in str(e.value)


def test_passes_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Toy().bits = 3


def test_verify_after_each_pass_names_the_pass_and_its_predecessors(mlp):
    with pytest.raises(PassError) as e:
        PassManager(parse_pipeline("dce,toy,breaker", REG)).run(mlp)
    msg = str(e.value)
    assert "pass 'breaker' failed (after dce, toy)" in msg and "invalid IR" in msg and "ghost" in msg


def test_exceptions_are_wrapped_with_context(mlp):
    with pytest.raises(PassError, match=r"pass 'crasher' failed \(the first pass\): boom"):
        PassManager(parse_pipeline("crasher", REG)).run(mlp)


def test_instruments_time_and_dump(mlp, tmp_path):
    timing = TimingInstrument()
    dump = DumpIRInstrument(str(tmp_path / "ir"))
    seen = []
    PassManager(
        parse_pipeline("dce,toy{bits=4}", REG),
        instruments=[timing, dump],
        progress=lambda k, n, p: seen.append((k, n, p.name)),
    ).run(mlp)
    assert [n for n, _ in timing.times] == ["dce", "toy{bits=4}"]
    assert "total" in timing.report()
    files = sorted(os.listdir(tmp_path / "ir"))
    assert files == ["00-input.edgec.txt", "01-dce.edgec.txt", "02-toy.edgec.txt"]
    assert seen == [(0, 2, "dce"), (1, 2, "toy")]


def test_analysis_cache_invalidated_unless_preserved(mlp):
    calls = []

    class Count:
        def __init__(self, model):
            calls.append(1)

    ctx = PassContext()
    ctx.analysis(Count, mlp)
    ctx.analysis(Count, mlp)
    assert len(calls) == 1
    ctx.invalidate(preserved=[Count])
    ctx.analysis(Count, mlp)
    assert len(calls) == 1
    ctx.invalidate()
    ctx.analysis(Count, mlp)
    assert len(calls) == 2


def test_a_pass_context_without_registries_names_what_is_missing():
    """A pass that runs other passes reaches them through its PassContext; a context built without the registry
    says how to build one instead of raising a KeyError."""
    with pytest.raises(
        PipelineError,
        match=r"pass 'quantize' is not in this PassContext's registry .*PassContext\("
        r"passes=\.\.\.\)",
    ):
        PassContext().pass_class("quantize")
    assert PassContext(passes=host().passes.as_dict()).pass_class("quantize").name == "quantize"
