"""The load, passes and check stages of a compile: import the model, fix its input shapes, check its sizes, load
calibration data, take the original's outputs for --verify, run the cleanup + user + target pipeline and the
target's capability check. Everything of a compile but emission (what ``compile`` and ``edgec verify`` share)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np

from .errors import BadInputError, EdgecError, UnsupportedError, UsageError
from .frontend import pick_frontend
from .hashing import sha256_file
from .host import host
from .ir import Model, QuantizedTensor, infer_shapes, random_inputs
from .ir.core import IRError
from .ir.passes import (
    DumpIRInstrument,
    PassContext,
    PassError,
    PassManager,
    PipelineError,
    TimingInstrument,
    did_you_mean,
    parse_pipeline,
)
from .target import Target
from .verify import VERIFY_SEQ_LEN, original_outputs


def parse_target(spec: str) -> Target:
    """``name`` or ``name{opt=value,...}`` -> a Target instance."""
    targets = host().targets
    name = spec.split("{", 1)[0].strip()
    if name not in targets:
        raise UsageError(
            f"unknown target {name!r}{did_you_mean(name, targets.names())}; installed targets: "
            f"{', '.join(targets.names())} (see 'edgec targets')"
        )
    try:
        return cast(Target, parse_pipeline(spec, {name: targets[name]})[0])  # the one stage: the target
    except PipelineError as e:
        raise UsageError(str(e)) from None


def parse_input_shapes(specs: Mapping[str, Any] | None) -> dict[str, tuple[int, ...]]:
    """``{"image": "1x3x224x224"}`` (or a sequence of ints) -> ``{"image": (1, 3, 224, 224)}``; every dim must
    be a positive integer."""
    out = {}
    for name, s in (specs or {}).items():
        if not isinstance(name, str) or not name:
            raise UsageError(f"--input-shape: input names must be non-empty strings, not {name!r}")
        try:
            if isinstance(s, str):
                dims = tuple(int(d) for d in s.lower().replace(",", "x").split("x"))
            elif isinstance(s, (list, tuple)) and all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in s
            ):
                dims = tuple(int(d) for d in s)
            else:
                raise ValueError
        except ValueError:
            raise UsageError(
                f"--input-shape {name}={s!r}: dims must be integers joined by 'x', e.g. 1x3x224x224"
            ) from None
        bad = [d for d in dims if d <= 0]
        if bad:
            raise UsageError(
                f"--input-shape {name}={'x'.join(map(str, dims))}: every dim must be a positive integer "
                f"({bad[0]} is not), e.g. {name}=1x3x224x224"
            )
        out[name] = dims
    return out


def fix_input_shapes(
    model: Model, shapes: Mapping[str, tuple[int, ...]], notes: list[str], keep_dynamic: bool = False
) -> dict[str, int]:
    """Apply ``--input-shape``; without one, dynamic dims become 1 unless the target keeps them
    (``keep_dynamic``: its runtime handles any sequence length, e.g. llama.cpp). Returns the values given to
    the inputs' symbolic dims (``{"batch": 8}``), which the rest of the graph's shapes may still name."""
    bound: dict[str, int] = {}
    names = {v.name for v in model.graph.inputs}
    unknown = set(shapes) - names
    if unknown:
        raise UsageError(
            f"--input-shape names unknown inputs {sorted(unknown)}; the model's inputs are {sorted(names)}"
        )
    for v in model.graph.inputs:
        if v.name in shapes:
            new = shapes[v.name]
            if v.shape is not None and (
                len(new) != len(v.shape) or any(isinstance(d, int) and d != n for d, n in zip(v.shape, new))
            ):
                raise UsageError(
                    f"--input-shape {v.name}={'x'.join(map(str, new))} does not fit the declared shape {v.shape}"
                )
            bound.update({str(d): n for d, n in zip(v.shape or (), new) if not isinstance(d, int)})
            v.shape = new
        elif v.shape is None:
            raise UsageError(f"input {v.name!r} has unknown rank; give --input-shape {v.name}=AxBx...")
        elif v.static_shape is None and not keep_dynamic:
            fixed = tuple(d if isinstance(d, int) else 1 for d in v.shape)
            notes.append(f"input {v.name!r}: dynamic dims {v.shape} fixed to {fixed} (override with --input-shape)")
            bound.update({str(d): 1 for d in v.shape if not isinstance(d, int)})
            v.shape = fixed
    return bound


def load_model(path: str, frontend: str | None = None) -> Model:
    fe = pick_frontend(path, host().frontends.as_dict(), frontend)
    return fe.load(path)


@dataclasses.dataclass
class Build:
    """A model imported and run through its pipeline, ready to emit (what compile and verify share)."""

    model: Model
    target: Target
    src_path: str | None
    src_hash: str | None
    shapes: dict[str, tuple[int, ...]]
    notes: list[str]
    bound: dict[str, int] = dataclasses.field(default_factory=dict)
    passes: list = dataclasses.field(default_factory=list)
    ctx: PassContext = dataclasses.field(default_factory=PassContext)
    size_before: int = 0
    timing: TimingInstrument = dataclasses.field(default_factory=TimingInstrument)
    t_import: float = 0.0
    t_passes: float = 0.0
    calibration: Any = None
    evaluation: Any = None
    feeds: dict[str, np.ndarray] | None = None
    original: dict[str, Any] | None = None


def build_model(
    model: str | Model,
    target: str,
    pipeline: str,
    *,
    input_shapes: Mapping[str, Any] | None = None,
    verify: bool = False,
    cleanup: bool = True,
    dump_ir: str | None = None,
    seed: int = 0,
    frontend: str | None = None,
    calib: str | None = None,
    eval_text: str | None = None,
    say: Callable[[str], None] = lambda m: None,
    executor: Any = None,
) -> Build:
    """Import ``model``, fix its input shapes, check its sizes against the limits, load calibration data,
    take the original's outputs on the verification inputs (``verify``) and run the cleanup + user + target
    pipeline, then the target's check: everything of a compile but the emission."""
    tgt = parse_target(target)
    try:
        user_passes = parse_pipeline(pipeline, host().passes.as_dict())
    except PipelineError as e:
        raise UsageError(str(e)) from None
    b = load(model, tgt, parse_input_shapes(input_shapes), frontend, say)
    if verify or calib is not None:
        _check_run_budget(b.model, "--verify" if verify else "calibration (--calib)", b.bound)
    if calib is not None:
        from .calibration import load_calibration

        say(f"loading calibration data {calib}")
        b.calibration = load_calibration(calib, b.model, seed=seed)
    if verify:
        b.feeds = random_inputs(b.model, seed=seed, dims={"seq": VERIFY_SEQ_LEN})
        b.original = original_outputs(b.src_path, b.model, b.feeds)
    _prepare_evaluation(b, eval_text, verify, say)
    run_passes(b, user_passes, cleanup=cleanup, dump_ir=dump_ir, seed=seed, say=say, executor=executor)
    check(b)
    return b


def load(
    model: str | Model,
    tgt: Target,
    shapes: dict[str, tuple[int, ...]],
    frontend: str | None,
    say: Callable[[str], None],
) -> Build:
    """The load stage: the model imported (or taken as given), its input shapes fixed for ``tgt`` and its sizes
    checked against this machine's limits."""
    t0 = time.perf_counter()
    src_path = model if isinstance(model, str) else None
    if src_path is not None:
        say(f"importing {src_path}")
        ir_model = load_model(src_path, frontend)
        src_hash = sha256_file(src_path) if os.path.isfile(src_path) else None
    else:
        ir_model, src_hash = cast(Model, model), None
    b = Build(ir_model, tgt, src_path, src_hash, shapes, [])
    old_opset = ir_model.metadata.get("edgec.opset_upgraded_from")
    if old_opset:
        b.notes.append(
            f"the model was upgraded from ai.onnx opset {old_opset} to "
            f"{ir_model.metadata.get('edgec.opset_upgraded_to', '?')} with onnx.version_converter; --verify "
            "compares against onnxruntime running the original file"
        )
    b.bound = fix_input_shapes(ir_model, shapes, b.notes, keep_dynamic=tgt.dynamic_shapes)
    if b.bound:  # the graph's shapes follow the inputs' new ones (budget estimates and shape checks need them)
        with contextlib.suppress(IRError):
            infer_shapes(ir_model)
    _check_degenerate(ir_model, b.bound, before_passes=True)
    from .ir.limits import check_sizes, max_tensor_bytes

    too_big = check_sizes(ir_model)
    if too_big:
        raise BadInputError(
            f"the model declares tensors beyond the {max_tensor_bytes() / 2**30:.3g} GiB this machine "
            "allows one tensor (EDGEC_MAX_TENSOR_BYTES raises the limit; --input-shape fixes "
            "oversized inputs):\n" + "\n".join(f"  - {p}" for p in too_big[:20])
        )
    b.t_import = time.perf_counter() - t0
    return b


def _prepare_evaluation(b: Build, eval_text: str | None, verify: bool, say: Callable[[str], None]) -> None:
    """A language model's perplexity (float model first): on ``eval_text``, or with --verify on the built-in text."""
    if eval_text is None and verify:
        from .api.llm import LLM_KEY
        from .plugins.llm.evaluate import DEFAULT_EVAL_TEXT
        from .api.llm import SOURCE_KEY

        if b.model.metadata.get(LLM_KEY):
            if b.model.metadata.get(SOURCE_KEY):
                eval_text = DEFAULT_EVAL_TEXT
            else:
                b.notes.append(
                    "perplexity not measured: the model carries no tokenizer (it was not imported from a "
                    "GGUF file or a Hugging Face folder)"
                )
    if eval_text:
        from .plugins.llm.evaluate import CompileEvaluation

        b.evaluation = CompileEvaluation(b.model, eval_text)
        say(f"perplexity of the float model on {eval_text}")
        b.evaluation.float_model(b.model)


def run_passes(
    b: Build,
    user_passes: list,
    *,
    cleanup: bool,
    dump_ir: str | None,
    seed: int,
    say: Callable[[str], None],
    executor: Any = None,
) -> None:
    """The passes stage: default cleanup, the user's pipeline, then the target's own passes."""
    from .plugins.cleanup import DEFAULT_CLEANUP

    h = host()
    b.passes = (
        (parse_pipeline(DEFAULT_CLEANUP, h.passes.as_dict()) if cleanup else []) + user_passes + b.target.pipeline()
    )
    try:
        instruments = [b.timing] + ([DumpIRInstrument(dump_ir)] if dump_ir else [])
    except OSError as e:
        raise UsageError(
            f"--dump-ir {dump_ir}: cannot write there ({e.strerror}); choose a writable directory"
        ) from None
    b.ctx = PassContext(
        target=b.target,
        config={"seed": seed},
        calibration=b.calibration,
        passes=h.passes.as_dict(),
        checks=h.checks.as_dict(),
        executor=executor,  # where passes may shard their work (sensitivity); never part of the result
    )
    b.size_before = b.model.size_bytes()
    t1 = time.perf_counter()
    try:
        PassManager(
            b.passes, instruments=instruments, progress=lambda k, n, p: say(f"pass {k + 1}/{n}: {p.describe()}")
        ).run(b.model, b.ctx)
    except PassError as e:
        if isinstance(e.cause, EdgecError):
            raise type(e.cause)(str(e)) from None
        if isinstance(e.cause, re.error):
            raise UsageError(f"{e} (a regular expression in the pass's options; check include=/exclude=)") from None
        raise
    b.t_passes = time.perf_counter() - t1


def check(b: Build) -> None:
    """The check stage: no degenerate shapes left, and the target takes every node."""
    _check_degenerate(b.model, b.bound)
    problems = b.target.check(b.model)
    if problems:
        raise UnsupportedError(
            f"target {b.target.name} cannot compile this model ({len(problems)} problems):", problems
        )


def _check_degenerate(model: Model, bound: Mapping[str, int], before_passes: bool = False) -> None:
    """Input shapes that leave an op without output (a pooling window larger than the image: negative or
    empty float tensors) are the user's to fix, before a target's compiler trips over them. Before the passes
    only windows and negative sizes are checked: an empty part a model splits off and concatenates back (a
    rotary embedding over the whole head) is legitimate, and cleanup takes it out (eliminate-empty)."""
    bad = []
    for n in model.graph:
        window = _window_problem(n)
        if window:
            bad.append(window)
        for o in n.outputs:
            s = o.shape
            if s is None or not all(isinstance(d, int) for d in s):
                continue
            s = cast("tuple[int, ...]", s)  # every dim checked int above
            if any(d < 0 for d in s) or (
                not before_passes
                and 0 in s
                and o.dtype is not None
                and o.dtype.is_float
                and not any(x is not None and x.shape is not None and 0 in x.shape for x in n.inputs)
            ):
                bad.append(f"node {n.name!r} ({n.op_type}) would produce {o.name!r} of shape {list(s)}")
    if bad:
        given = ", ".join(f"{v.name}={'x'.join(map(str, v.shape or ()))}" for v in model.graph.inputs)
        fixed = (
            f" (the dynamic dims {', '.join(sorted(bound))} were set to {', '.join(str(bound[k]) for k in sorted(bound))})"
            if bound
            else ""
        )
        raise UsageError(
            f"the input shapes {given}{fixed} leave the model with empty tensors:\n"
            + "\n".join(f"  - {b}" for b in bad[:10])
            + "\ngive --input-shape with the sizes the model expects, e.g. "
            + f"{model.graph.inputs[0].name}=1x3x224x224"
        )


def _window_problem(n) -> str | None:
    """A Conv / pooling window larger than its padded input (ONNX shape inference rounds such outputs up to
    1; the runtimes find them empty)."""
    if n.op_type not in ("Conv", "MaxPool", "AveragePool", "LpPool") or n.domain not in ("", "ai.onnx"):
        return None
    x = n.inputs[0].shape if n.inputs and n.inputs[0] is not None else None
    if x is None or len(x) < 3 or str(n.attr("auto_pad", "NOTSET")).upper() not in ("NOTSET", "VALID"):
        return None
    spatial = x[2:]
    kernel = n.attr("kernel_shape")
    if kernel is None and n.op_type == "Conv" and len(n.inputs) > 1 and n.inputs[1] is not None and n.inputs[1].shape:
        kernel = n.inputs[1].shape[2:]
    if kernel is None or len(kernel) != len(spatial):
        return None
    pads = list(n.attr("pads") or [0] * (2 * len(spatial)))
    dil = list(n.attr("dilations") or [1] * len(spatial))
    for i, (d, k) in enumerate(zip(spatial, kernel)):
        if not isinstance(d, int) or not isinstance(k, int) or len(pads) != 2 * len(spatial):
            return None
        if d + pads[i] + pads[i + len(spatial)] < dil[i] * (k - 1) + 1:
            return (
                f"node {n.name!r} ({n.op_type}) slides a window of {dil[i] * (k - 1) + 1} over a spatial dim of "
                f"{d} (padded {d + pads[i] + pads[i + len(spatial)]}): its input {n.inputs[0].name!r} has shape "
                f"{list(x)}"
            )
    return None


def _check_run_budget(model: Model, why: str, bound: Mapping[str, int]) -> None:
    """Refuse before allocating when running the model once (verification or calibration) cannot fit the
    memory budget."""
    from .ir.budget import over_budget, run_estimate

    shapes = {
        v.name: tuple(d if isinstance(d, int) else (VERIFY_SEQ_LEN if str(d) == "seq" else 1) for d in (v.shape or ()))
        for v in model.graph.inputs
    }
    try:
        msg = over_budget(
            f"running the model for {why} on inputs "
            + ", ".join(f"{k}={'x'.join(map(str, s))}" for k, s in shapes.items()),
            run_estimate(model, shapes, bound),
            fix="use a smaller --input-shape",
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if msg:
        raise BadInputError(msg)


def lossy(model: Model, passes: list) -> bool:
    """Whether the compile changed the model's numbers on purpose (quantization, pruning, ...): --verify then
    judges the artifact against the original by fidelity, not by --tolerance."""
    return (
        any(isinstance(v.const, QuantizedTensor) or v.sparsity is not None for v in model.graph.initializers.values())
        or any(v.quant is not None for v in model.graph.values())
        or any(getattr(p, "lossy", False) for p in passes)
    )
