"""The compile driver behind ``edgec compile`` and :func:`edgec.compile`.

model file --frontend--> IR --cleanup + user pipeline + target passes--> IR --capability check-->
target.emit (into a temporary directory) --> manifest.json (+ verification) --> atomic rename to OUT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import __version__, report
from .cache import CompileResult
from .errors import BadInputError, EdgecError, Terminated, UnsupportedError, UsageError, VerificationFailed
from .frontend import pick_frontend
from .host import host
from .ir import Model, QuantizedTensor, ReferenceExecutor, infer_shapes, random_inputs
from .ir.dtypes import DType, from_storage, storage_map, to_storage
from .ir.core import IRError
from .ir.executor import ExecutionError
from .output import (WRITE_ERRNOS, OutputError, check_output, default_output, make_scratch, release, replace_dir,
                     writable_error)
from .ir.passes import (DumpIRInstrument, PassContext, PassError, PassManager, PipelineError, TimingInstrument,
                        did_you_mean, parse_pipeline)
from .target import Target

DEFAULT_TOLERANCE = 1e-4
# With simulated activation quantization, float implementations that differ by one ulp (accumulation
# order) move values across rounding boundaries: each such flip changes a value by one quantization step,
# and chains of layers spread it. Exact agreement is impossible in float32, so those models are judged by
# direction and bounded size instead: cosine >= ACT_QUANT_MIN_COSINE and max relative error <= ACT_QUANT_TOL.
ACT_QUANT_MIN_COSINE = 0.9999
ACT_QUANT_TOL = 5e-2
# A compile that changes the numbers on purpose (quantized weights or activations, pruning) is judged
# against the original model by fidelity: every output's cosine similarity >= LOSSY_MIN_COSINE (--min-cosine)
# (and Pearson correlation) and, for classifier-like outputs with at least MIN_TOP1_ROWS decisive rows,
# top-1 agreement >= LOSSY_MIN_TOP1 (--min-top1). A row is decisive when the original clearly prefers one
# class: under a softmax of its values, the top-1 probability exceeds the runner-up's by LOSSY_TOP1_GAP (a
# near tie is decided by rounding, not by the model; on SmolLM2's logits over random tokens, 1% of the range
# admitted near ties that Q4_K flipped 22% of the time, a 0.1 probability gap none). Fewer decisive rows are
# no evidence.
LOSSY_MIN_COSINE = 0.98
LOSSY_MIN_TOP1 = 0.8
LOSSY_TOP1_GAP = 0.1
MIN_TOP1_ROWS = 8




def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_target(spec: str) -> Target:
    """``name`` or ``name{opt=value,...}`` -> a Target instance."""
    targets = host().targets
    name = spec.split("{", 1)[0].strip()
    if name not in targets:
        raise UsageError(f"unknown target {name!r}{did_you_mean(name, targets.names())}; installed targets: "
                         f"{', '.join(targets.names())} (see 'edgec targets')")
    try:
        return parse_pipeline(spec, {name: targets[name]})[0]
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
            elif isinstance(s, (list, tuple)) and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                                      for d in s):
                dims = tuple(int(d) for d in s)
            else:
                raise ValueError
        except ValueError:
            raise UsageError(f"--input-shape {name}={s!r}: dims must be integers joined by 'x', e.g. 1x3x224x224") from None
        bad = [d for d in dims if d <= 0]
        if bad:
            raise UsageError(f"--input-shape {name}={'x'.join(map(str, dims))}: every dim must be a positive integer "
                             f"({bad[0]} is not), e.g. {name}=1x3x224x224")
        out[name] = dims
    return out


def fix_input_shapes(model: Model, shapes: Mapping[str, tuple[int, ...]], notes: list[str],
                     keep_dynamic: bool = False) -> dict[str, int]:
    """Apply ``--input-shape``; without one, dynamic dims become 1 unless the target keeps them
    (``keep_dynamic``: its runtime handles any sequence length, e.g. llama.cpp). Returns the values given to
    the inputs' symbolic dims (``{"batch": 8}``), which the rest of the graph's shapes may still name."""
    bound: dict[str, int] = {}
    names = {v.name for v in model.graph.inputs}
    unknown = set(shapes) - names
    if unknown:
        raise UsageError(f"--input-shape names unknown inputs {sorted(unknown)}; the model's inputs are {sorted(names)}")
    for v in model.graph.inputs:
        if v.name in shapes:
            new = shapes[v.name]
            if v.shape is not None and (len(new) != len(v.shape) or any(
                    isinstance(d, int) and d != n for d, n in zip(v.shape, new))):
                raise UsageError(f"--input-shape {v.name}={'x'.join(map(str, new))} does not fit the declared shape "
                                 f"{v.shape}")
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


def _top1(got, ref, margin: float = 1e-3) -> tuple[float, int]:
    """Top-1 agreement over the rows whose reference top-1 leads its runner-up by more than ``margin`` x
    max|reference| (a near tie is decided by rounding, not by the model). Rows with a non-finite value are never
    decisive. Returns (agreement, rows counted)."""
    g = np.asarray(got, np.float64).reshape(-1, np.shape(got)[-1])
    r = np.asarray(ref, np.float64).reshape(-1, np.shape(ref)[-1])
    finite = np.isfinite(r).all(-1) & np.isfinite(g).all(-1)
    if not finite.any():
        return 1.0, 0
    top2 = np.sort(r, axis=-1)[:, -2:]
    scale = float(np.abs(r[finite]).max()) or 1e-30
    decisive = finite & ((top2[:, 1] - top2[:, 0]) > margin * scale)
    if not decisive.any():
        return 1.0, 0
    return float((g[decisive].argmax(-1) == r[decisive].argmax(-1)).mean()), int(decisive.sum())


def _top1_confident(got, ref, gap: float) -> tuple[float, int]:
    """Top-1 agreement over the rows where the reference's softmax puts at least ``gap`` more probability on
    its top-1 than on its runner-up. Returns (agreement, rows counted)."""
    g = np.asarray(got, np.float64).reshape(-1, np.shape(got)[-1])
    r = np.asarray(ref, np.float64).reshape(-1, np.shape(ref)[-1])
    finite = np.asarray(np.isfinite(r).all(-1) & np.isfinite(g).all(-1), bool)
    safe = np.where(finite[:, None], r, 0.0)
    p = np.exp(safe - safe.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top2 = np.sort(p, axis=-1)[:, -2:]
    decisive = finite & ((top2[:, 1] - top2[:, 0]) > gap)
    if not decisive.any():
        return 1.0, 0
    return float((g[decisive].argmax(-1) == r[decisive].argmax(-1)).mean()), int(decisive.sum())


def _nonfinite_problem(got: np.ndarray, ref: np.ndarray) -> str | None:
    """Where the two disagree on NaN / inf (every metric below skips such elements, so this must be checked
    apart: an artifact that turns outputs into NaN would otherwise compare well)."""
    a, b = np.asarray(got), np.asarray(ref)
    if a.shape != b.shape:
        return f"shape {list(a.shape)} differs from {list(b.shape)}"
    if a.dtype.kind not in "fc" and b.dtype.kind not in "fc":
        return None
    fa, fb = np.isfinite(a), np.isfinite(b)
    if (fa != fb).any() or not np.array_equal(a[~fa], b[~fb], equal_nan=True):
        return f"non-finite values differ ({int((~fa).sum())} NaN/inf here, {int((~fb).sum())} there)"
    return None


def _finite_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The elements finite in both, as float64 (None when the shapes differ)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        return None
    keep = np.isfinite(a) & np.isfinite(b)
    return (a, b) if keep.all() else (a[keep], b[keep])


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| over the finite elements: the error relative to the output's scale."""
    pair = _finite_pair(a, b)
    if pair is None:
        return float("inf")
    a, b = pair
    if not a.size:
        return 0.0
    scale = float(np.abs(b).max())
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max())


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity over the finite elements; 1 when both are zero, 0 when only one is (an all-zero
    output is not "aligned")."""
    pair = _finite_pair(a, b)
    return 0.0 if pair is None else _cos(*pair)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of the mean-removed values (Pearson correlation): an offset shared by every value (a large
    bias) cannot hide an error that a plain cosine would call small. The plain cosine when the reference is
    constant."""
    pair = _finite_pair(a, b)
    if pair is None:
        return 0.0
    a, b = pair
    if not b.size or np.ptp(b) == 0:
        return _cos(a, b)
    return _cos(a - a.mean(), b - b.mean())


def layer_table(model: Model) -> list[dict[str, Any]]:
    """Per-weight quantization and size, for the manifest."""
    rows = []
    for v in model.graph.initializers.values():
        if v.const is None or int(np.prod(v.shape or (1,))) < 16:
            continue
        users = sorted({u.node.name for u in v.uses})
        row = {"name": v.name, "shape": list(v.shape), "used_by": users, "bytes": v.const.nbytes}
        if isinstance(v.const, QuantizedTensor):
            row.update(v.const.describe())
        else:
            row.update({"dtype": v.dtype.short})
        rows.append(row)
    return rows


def quantization_summary(model: Model) -> dict[str, Any]:
    """Per-layer weight quantization reports and activation quantization, for the manifest."""
    from .plugins.quantize.quantize import REPORT_KEY
    layers = json.loads(model.metadata.get(REPORT_KEY, "{}"))
    acts = {v.name: dataclasses.asdict(v.quant) for v in model.graph.values() if v.quant is not None}
    return {"weights": layers, "activations": acts}


def _io(model: Model) -> dict[str, list[dict[str, Any]]]:
    """The inputs and outputs: their (logical) dtype, and ``stored_as`` where the artifact takes / returns them in a
    storage type (a float8's bits as uint8, an int4 as int8: see the legalize-dtypes pass)."""
    stored = storage_map(model.metadata)

    def entry(v) -> dict[str, Any]:
        e = {"name": v.name, "dtype": v.dtype.short if v.dtype else None, "shape": list(v.shape or [])}
        if v.name in stored:
            e["dtype"], e["stored_as"] = stored[v.name].short, stored[v.name].storage.short
        return e
    return {k: [entry(v) for v in vals] for k, vals in (("inputs", model.graph.inputs), ("outputs", model.graph.outputs))}


def _mixed_summary(model: Model) -> dict[str, Any] | None:
    """The mixed-precision pass's decision (allocation, bytes, average bits, what decided), if it ran."""
    raw = model.metadata.get("edgec.mixed_precision")
    if not raw:
        return None
    d = json.loads(raw)
    return {k: d[k] for k in ("avg_bits", "bytes", "histogram", "decided_by", "metric", "allocation", "evaluated",
                              "cached_sensitivity") if k in d}


def load_model(path: str, frontend: str | None = None) -> Model:
    fe = pick_frontend(path, host().frontends.as_dict(), frontend)
    return fe.load(path)


def _check_arguments(model: Any, target: Any, pipeline: Any, output: Any, input_shapes: Any, tolerance: Any,
                     min_cosine: Any, min_top1: Any, seed: Any, paths: Mapping[str, Any]) -> None:
    """The Python API's arguments, checked up front: a wrong type or value is a UsageError naming it, never a
    TypeError from deep inside."""
    if not isinstance(model, (str, os.PathLike, Model)):
        raise UsageError(f"model must be a path (str) or an edgec.ir.Model, not {type(model).__name__}")
    for name, v in (("target", target), ("pipeline", pipeline)):
        if not isinstance(v, str):
            raise UsageError(f"{name} must be a string such as 'cpu' or 'quantize{{bits=4}}', not {type(v).__name__}")
    if not target.strip():
        raise UsageError("target is empty; give a target name such as 'cpu' (see 'edgec targets')")
    for name, v in (("output", output), *paths.items()):
        if v is not None and not isinstance(v, (str, os.PathLike)):
            raise UsageError(f"{name} must be a path (str) or None, not {type(v).__name__}")
    if input_shapes is not None and not isinstance(input_shapes, Mapping):
        raise UsageError("input_shapes must be a mapping of input name to shape, e.g. {'image': '1x3x224x224'} or "
                         f"{{'image': (1, 3, 224, 224)}}, not {type(input_shapes).__name__}")
    for name, v, lo, hi in (("tolerance", tolerance, 0.0, math.inf), ("min_cosine", min_cosine, -1.0, 1.0),
                            ("min_top1", min_top1, 0.0, 1.0)):
        if v is None and name != "tolerance":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) \
                or not lo <= v <= hi:
            rng = "a finite number >= 0" if name == "tolerance" else f"a number in [{lo:g}, {hi:g}]"
            raise UsageError(f"{name}={v!r} is not valid: it must be {rng}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UsageError(f"seed must be an integer, not {type(seed).__name__}")
    from .memory import memory_budget
    try:
        memory_budget()
    except ValueError as e:
        raise UsageError(str(e)) from None


def target_name(spec: str) -> str:
    return spec.split("{", 1)[0].strip()


def compile(model: str | Model, target: str = "cpu", pipeline: str = "", output: str | None = None, *,
            input_shapes: Mapping[str, Any] | None = None, verify: bool = False, tolerance: float = DEFAULT_TOLERANCE,
            min_cosine: float | None = None, min_top1: float | None = None, cleanup: bool = True,
            time_passes: bool = False,
            dump_ir: str | None = None, seed: int = 0, frontend: str | None = None, calib: str | None = None,
            eval_text: str | None = None, cache_dir: str | None = None, use_cache: bool = True, force: bool = False,
            keep_failed: bool = False, progress: Callable[[str], None] | None = None) -> CompileResult:
    """Compile ``model`` for ``target`` into the directory ``output``; see ``edgec compile --help``.

    Raises :class:`edgec.errors.EdgecError` subclasses for every user-facing failure, bad arguments
    included; the output directory then keeps its previous contents (or does not exist). A failed
    verification keeps the previous output too; ``keep_failed`` puts the failed one in ``OUTPUT.failed``.
    An existing ``output`` is replaced only when edgec wrote it (or ``force``). A model given by path is
    looked up in the content-addressed compile cache first (:mod:`edgec.cache`; ``use_cache=False``
    bypasses it). ``min_cosine`` is the fidelity that ``verify`` demands of a quantized or pruned model
    against the original (default :data:`LOSSY_MIN_COSINE`).
    """
    _check_arguments(model, target, pipeline, output, input_shapes, tolerance, min_cosine, min_top1, seed,
                     {"calib": calib, "eval_text": eval_text, "dump_ir": dump_ir, "cache_dir": cache_dir})
    say = progress or (lambda msg: None)
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    src_path = model if isinstance(model, str) else None
    output = os.path.normpath(os.fspath(output)) if output else default_output(src_path, target_name(target))
    from .cache import protected_inputs
    inputs = protected_inputs(output, src_path, calib, eval_text)
    check_output(output, inputs, force)
    cdir, ckey = None, None
    if use_cache and src_path and os.path.exists(src_path) and not dump_ir and not time_passes:
        # Looked up before any plugin loads or the model is read: a hit costs hashing the inputs and a copy.
        from . import cache
        cdir, ckey, hit = cache.serve(src_path, target, pipeline, output, cache_dir=cache_dir, calib=calib,
                                      input_shapes=input_shapes, verify=verify, tolerance=tolerance,
                                      cleanup=cleanup, seed=seed, frontend=frontend, eval_text=eval_text,
                                      force=force, extra_options={"min_cosine": min_cosine, "min_top1": min_top1},
                                      progress=say)
        if hit is not None:
            return hit
    b = build_model(model, target, pipeline, input_shapes=input_shapes, verify=verify, cleanup=cleanup,
                    dump_ir=dump_ir, seed=seed, frontend=frontend, calib=calib, eval_text=eval_text, say=say)
    tgt, ir_model, passes, notes, ctx = b.target, b.model, b.passes, b.notes, b.ctx
    calibration, evaluation = b.calibration, b.evaluation
    tmp = make_scratch(output)
    try:
        say(f"emitting {tgt.describe()}")
        t2 = time.perf_counter()
        with native_section():
            art = tgt.emit(ir_model, tmp, ctx)
        t_emit = time.perf_counter() - t2
        _check_artifact_paths(tgt, tmp, art.files)
        options_key = json.dumps({"target": tgt.describe(), "pipeline": [p.describe() for p in passes],
                                  "input_shapes": {k: list(v) for k, v in b.shapes.items()}, "cleanup": cleanup},
                                 sort_keys=True)
        manifest: dict[str, Any] = {
            "edgec_version": __version__,
            "target": {"name": tgt.name, "spec": tgt.describe(), **art.manifest},
            "source": {"path": os.path.basename(src_path) if src_path else None, "sha256": b.src_hash,
                       "format": ir_model.metadata.get("source_format")},
            "options_sha256": hashlib.sha256(options_key.encode()).hexdigest(),
            "pipeline": [p.describe() for p in passes],
            "build": {"seed": seed, "input_shapes": {v.name: list(v.shape or []) for v in ir_model.graph.inputs},
                      "frontend": frontend, "tolerance": tolerance, "min_cosine": min_cosine, "min_top1": min_top1},
            **_io(ir_model),
            "sizes": {"weights_bytes_before": b.size_before, "weights_bytes_after": ir_model.size_bytes(),
                      "parameters": ir_model.param_count()},
            "layers": layer_table(ir_model),
            "quantization": quantization_summary(ir_model),
            "mixed_precision": _mixed_summary(ir_model),
            "calibration": {"source": calibration.source, "samples": len(calibration)} if calibration else None,
            "files": [{"path": f, "bytes": os.path.getsize(os.path.join(tmp, f)),
                       "sha256": sha256_file(os.path.join(tmp, f))} for f in art.files],
            "notes": notes,
            "report": report.FILE,
        }
        if verify:
            say(f"verifying on {tgt.runtime or 'its runtime'}")
            manifest["verification"] = _verify(tgt, tmp, ir_model, b.feeds, b.original, tolerance,
                                               lossy=_lossy(ir_model, passes), min_cosine=min_cosine,
                                               min_top1=min_top1)
        if evaluation is not None:
            say("perplexity of the compiled model and the artifact")
            manifest["evaluation"] = evaluation.compiled(ir_model, tgt, tmp, art.files)
        manifest = _strict_json(manifest)
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True, default=str, allow_nan=False)
            f.write("\n")
        manifest = json.loads(json.dumps(manifest, sort_keys=True, default=str))  # as the file holds it
        say("writing report.html")
        report.write(manifest, os.path.join(tmp, report.FILE))
        v = manifest.get("verification")
        if v is not None and not v["passed"]:
            failed = output + ".failed"
            where = f"--keep-failed puts the failed artifact in {failed} for inspection"
            if keep_failed:
                try:
                    replace_dir(tmp, failed, inputs=inputs)
                    where = f"the failed artifact is in {failed}"
                except OutputError as e:  # the verdict stays the news; say why the copy is missing
                    where = f"the failed artifact was not kept: {e}"
            kept = (f"{output} was left as it was" if os.path.lexists(output) else f"nothing was written to {output}")
            raise VerificationFailed(f"verification failed: {v['summary']}; {kept}; {where}")
        if ckey is not None:
            from . import cache
            cache.store(cdir, ckey, tmp)
        replace_dir(tmp, output, force=force, inputs=inputs)
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise writable_error(output, e) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release(tmp)
    return CompileResult(os.path.abspath(output), manifest, b.timing.report() if time_passes else "",
                         {"import": round(b.t_import, 3), "passes": round(b.t_passes, 3), "emit": round(t_emit, 3)},
                         cache_key=ckey)


@dataclasses.dataclass
class Build:
    """A model imported and run through its pipeline, ready to emit (what compile and verify share)."""

    model: Model
    target: Target
    passes: list
    ctx: PassContext
    shapes: dict[str, tuple[int, ...]]
    notes: list[str]
    src_hash: str | None
    size_before: int
    timing: TimingInstrument
    t_import: float
    t_passes: float
    calibration: Any = None
    evaluation: Any = None
    feeds: dict[str, np.ndarray] | None = None
    original: dict[str, Any] | None = None


def build_model(model: str | Model, target: str, pipeline: str, *, input_shapes: Mapping[str, Any] | None = None,
                verify: bool = False, cleanup: bool = True, dump_ir: str | None = None, seed: int = 0,
                frontend: str | None = None, calib: str | None = None, eval_text: str | None = None,
                say: Callable[[str], None] = lambda m: None) -> Build:
    """Import ``model``, fix its input shapes, check its sizes against the limits, load calibration data,
    take the original's outputs on the verification inputs (``verify``) and run the cleanup + user + target
    pipeline: everything of a compile but the emission."""
    h = host()
    tgt = parse_target(target)
    try:
        user_passes = parse_pipeline(pipeline, h.passes.as_dict())
    except PipelineError as e:
        raise UsageError(str(e)) from None
    shapes = parse_input_shapes(input_shapes)
    src_path = model if isinstance(model, str) else None
    t0 = time.perf_counter()
    src_hash = None
    if src_path is not None:
        say(f"importing {src_path}")
        ir_model = load_model(src_path, frontend)
        src_hash = sha256_file(src_path) if os.path.isfile(src_path) else None
    else:
        ir_model = model
    notes: list[str] = []
    old_opset = ir_model.metadata.get("edgec.opset_upgraded_from")
    if old_opset:
        notes.append(f"the model was upgraded from ai.onnx opset {old_opset} to "
                     f"{ir_model.metadata.get('edgec.opset_upgraded_to', '?')} with onnx.version_converter; --verify "
                     "compares against onnxruntime running the original file")
    bound = fix_input_shapes(ir_model, shapes, notes, keep_dynamic=tgt.dynamic_shapes)
    if bound:  # the graph's shapes follow the inputs' new ones (budget estimates and shape checks need them)
        with contextlib.suppress(IRError):
            infer_shapes(ir_model)
    _check_degenerate(ir_model, bound, before_passes=True)
    from .ir.limits import check_sizes, max_tensor_bytes
    too_big = check_sizes(ir_model)
    if too_big:
        raise BadInputError(f"the model declares tensors beyond the {max_tensor_bytes() / 2**30:.3g} GiB this machine "
                            "allows one tensor (EDGEC_MAX_TENSOR_BYTES raises the limit; --input-shape fixes "
                            "oversized inputs):\n" + "\n".join(f"  - {p}" for p in too_big[:20]))
    t_import = time.perf_counter() - t0
    if verify or calib is not None:
        _check_run_budget(ir_model, "--verify" if verify else "calibration (--calib)", bound)
    b = Build(ir_model, tgt, [], PassContext(), shapes, notes, src_hash, 0, TimingInstrument(), t_import, 0.0)
    if calib is not None:
        from .calibration import load_calibration
        say(f"loading calibration data {calib}")
        b.calibration = load_calibration(calib, ir_model, seed=seed)
    if verify:
        b.feeds = random_inputs(ir_model, seed=seed, dims={"seq": VERIFY_SEQ_LEN})
        b.original = _original_outputs(src_path, ir_model, b.feeds)
    if eval_text is None and verify:
        # a language model's verification includes perplexity, on the built-in text unless --eval-text
        from .plugins.llm.decoder import LLM_KEY
        from .plugins.llm.evaluate import DEFAULT_EVAL_TEXT
        from .plugins.llm.frontends import SOURCE_KEY
        if ir_model.metadata.get(LLM_KEY):
            if ir_model.metadata.get(SOURCE_KEY):
                eval_text = DEFAULT_EVAL_TEXT
            else:
                notes.append("perplexity not measured: the model carries no tokenizer (it was not imported from a "
                             "GGUF file or a Hugging Face folder)")
    if eval_text:
        from .plugins.llm.evaluate import CompileEvaluation
        b.evaluation = CompileEvaluation(ir_model, eval_text)
        say(f"perplexity of the float model on {eval_text}")
        b.evaluation.float_model(ir_model)

    from .plugins.cleanup import DEFAULT_CLEANUP
    b.passes = (parse_pipeline(DEFAULT_CLEANUP, h.passes.as_dict()) if cleanup else []) + user_passes + tgt.pipeline()
    try:
        instruments = [b.timing] + ([DumpIRInstrument(dump_ir)] if dump_ir else [])
    except OSError as e:
        raise UsageError(f"--dump-ir {dump_ir}: cannot write there ({e.strerror}); choose a writable directory") from None
    b.ctx = PassContext(target=tgt, config={"seed": seed}, calibration=b.calibration)
    b.size_before = ir_model.size_bytes()
    t1 = time.perf_counter()
    try:
        PassManager(b.passes, instruments=instruments,
                    progress=lambda k, n, p: say(f"pass {k + 1}/{n}: {p.describe()}")).run(ir_model, b.ctx)
    except PassError as e:
        if isinstance(e.cause, EdgecError):
            raise type(e.cause)(str(e)) from None
        if isinstance(e.cause, re.error):
            raise UsageError(f"{e} (a regular expression in the pass's options; check include=/exclude=)") from None
        raise
    b.t_passes = time.perf_counter() - t1
    _check_degenerate(ir_model, bound)
    problems = tgt.check(ir_model)
    if problems:
        raise UnsupportedError(f"target {tgt.name} cannot compile this model ({len(problems)} problems):", problems)
    return b


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
            if any(d < 0 for d in s) or (not before_passes and 0 in s and o.dtype is not None and o.dtype.is_float
                                         and not any(x is not None and x.shape is not None and 0 in x.shape
                                                     for x in n.inputs)):
                bad.append(f"node {n.name!r} ({n.op_type}) would produce {o.name!r} of shape {list(s)}")
    if bad:
        given = ", ".join(f"{v.name}={'x'.join(map(str, v.shape or ()))}" for v in model.graph.inputs)
        fixed = (f" (the dynamic dims {', '.join(sorted(bound))} were set to {', '.join(str(bound[k]) for k in sorted(bound))})"
                 if bound else "")
        raise UsageError(f"the input shapes {given}{fixed} leave the model with empty tensors:\n"
                         + "\n".join(f"  - {b}" for b in bad[:10])
                         + "\ngive --input-shape with the sizes the model expects, e.g. "
                         + f"{model.graph.inputs[0].name}=1x3x224x224")


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
            return (f"node {n.name!r} ({n.op_type}) slides a window of {dil[i] * (k - 1) + 1} over a spatial dim of "
                    f"{d} (padded {d + pads[i] + pads[i + len(spatial)]}): its input {n.inputs[0].name!r} has shape "
                    f"{list(x)}")
    return None


def _check_run_budget(model: Model, why: str, bound: Mapping[str, int]) -> None:
    """Refuse before allocating when running the model once (verification or calibration) cannot fit the
    memory budget."""
    from .ir.budget import over_budget, run_estimate
    shapes = {v.name: tuple(d if isinstance(d, int) else (VERIFY_SEQ_LEN if str(d) == "seq" else 1)
                            for d in (v.shape or ())) for v in model.graph.inputs}
    try:
        msg = over_budget(f"running the model for {why} on inputs "
                          + ", ".join(f"{k}={'x'.join(map(str, s))}" for k, s in shapes.items()),
                          run_estimate(model, shapes, bound), fix="use a smaller --input-shape")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if msg:
        raise BadInputError(msg)


def _lossy(model: Model, passes: list) -> bool:
    """Whether the compile changed the model's numbers on purpose (quantization, pruning, ...): --verify then
    judges the artifact against the original by fidelity, not by --tolerance."""
    return (any(isinstance(v.const, QuantizedTensor) or v.sparsity is not None for v in model.graph.initializers.values())
            or any(v.quant is not None for v in model.graph.values()) or any(getattr(p, "lossy", False) for p in passes))



@contextlib.contextmanager
def native_section():
    """Ctrl-C (or SIGTERM) while a target's native library runs (TVM builds and runs through C++ callbacks into
    Python, where a KeyboardInterrupt aborts the process, is swallowed, or comes back as another error) is held
    until the library returns, then raised (KeyboardInterrupt, or :class:`edgec.errors.Terminated`); a second
    signal raises at once. Outside the main thread (no signal handlers there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, Any] = {}

    def interrupt(signum: int) -> BaseException:
        return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def held(signum, frame):
        if pending:  # the second signal: the user insists
            for sig, h in previous.items():
                signal.signal(sig, h)
            raise interrupt(signum)
        pending.append(signum)
        print("edgec: interrupt received; stopping when the target's native code returns (Ctrl-C again to "
              "force)", file=sys.stderr, flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, held)
    if previous[signal.SIGINT] is None:
        previous[signal.SIGINT] = signal.default_int_handler
    if previous[signal.SIGTERM] is None:
        previous[signal.SIGTERM] = signal.SIG_DFL
    try:
        yield
    except BaseException:
        if pending:
            raise interrupt(pending[0]) from None
        raise
    finally:
        for sig, h in previous.items():
            if signal.getsignal(sig) is held:
                signal.signal(sig, h)
    if pending:
        raise interrupt(pending[0])


def _strict_json(x: Any) -> Any:
    """The manifest as strict JSON: non-finite floats (an exact layer's SQNR is infinite) become the strings
    "inf", "-inf" and "nan", which every JSON parser reads (Python's Infinity is not JSON)."""
    if isinstance(x, float) and not np.isfinite(x):
        return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict_json(v) for v in x]
    return x


def _check_artifact_paths(tgt: Target, tmp: str, files: list[str]) -> None:
    """Every file a target reports must lie inside the output directory (a plugin that derived a file name
    from model content could otherwise write elsewhere)."""
    root = os.path.realpath(tmp)
    for f in files:
        p = os.path.realpath(os.path.join(tmp, f))
        if os.path.isabs(f) or os.path.commonpath([root, p]) != root:
            raise UnsupportedError(f"target {tgt.name} reported the artifact file {f!r}, which lies outside the output "
                                   "directory; nothing was written")
        if not os.path.exists(p):
            raise UnsupportedError(f"target {tgt.name} reported the artifact file {f!r} but did not write it")


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'2GB', '500MB', '1.5GiB', '1000000' -> bytes."""
    import re
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise UsageError(f"size {text!r}: expected a number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB), "
                         "e.g. 500MB")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def compile_tiers(model: str, target: str, pipeline: str, output: str, tiers: list[str], *,
                  tier_options: str = "", progress: Callable[[str], None] | None = None, **kw) -> dict[str, Any]:
    """Compile ``model`` once per footprint tier: ``mixed-precision{size_mb=...}`` picks each tier's per-layer
    bit widths (the sensitivities are measured once and cached), every tier is emitted into
    ``output/tier-<size>/``, and ``output/tiers.json`` lists them largest first with their sizes, so an
    application picks the largest tier that fits the memory it has. The directory appears complete or not
    at all."""
    say = progress or (lambda m: None)
    budgets = sorted({parse_size(t): t for t in tiers}.items(), reverse=True)
    if not budgets:
        raise UsageError("--tiers needs at least one size, e.g. --tiers 2GB,1GB,500MB")
    if kw.get("calib") is None:
        raise UsageError("--tiers chooses bit widths from measured sensitivities: pass --calib")
    output = os.path.normpath(output)
    inputs = (model, kw.get("calib"), kw.get("eval_text"))
    check_output(output, inputs, kw.get("force", False))
    tmp = make_scratch(output)
    try:
        rows = []
        for b, label in budgets:
            name = f"tier-{label.strip().replace(' ', '')}"
            mp = f"mixed-precision{{size_mb={b / 1e6:.6f}" + (f",{tier_options}" if tier_options else "") + "}"
            say(f"tier {label}: {mp}")
            res = compile(model, target, ",".join(p for p in (pipeline, mp) if p), os.path.join(tmp, name),
                          progress=progress, **{**kw, "force": False, "keep_failed": False})
            m = res.manifest
            files = sum(f["bytes"] for f in m["files"])
            rows.append({"tier": label, "budget_bytes": b, "path": name, "weights_bytes": m["sizes"]["weights_bytes_after"],
                         "artifact_bytes": files, "verification_passed": m.get("verification", {}).get("passed"),
                         "mixed_precision": m.get("mixed_precision")})
        index = {"edgec_version": __version__, "target": target, "source": os.path.basename(model),
                 "pick": "the first tier whose artifact_bytes fit the memory available", "tiers": rows}
        with open(os.path.join(tmp, "tiers.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
        replace_dir(tmp, output, force=kw.get("force", False), inputs=inputs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release(tmp)
    return index


def _original_outputs(src_path: str | None, model: Model, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Outputs of the model before any pass: onnxruntime on the original ONNX file where there is one."""
    if src_path and src_path.lower().endswith(".onnx"):
        import onnxruntime as ort
        try:
            sess = ort.InferenceSession(src_path, providers=["CPUExecutionProvider"])
            names = [o.name for o in sess.get_outputs()]
            outs = sess.run(names, {k: feeds[k] for k in feeds})
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail / InvalidArgument / ...
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "NOT_IMPLEMENTED" not in first and "No corresponding Numpy type" not in first:
                raise BadInputError(f"{src_path}: onnxruntime cannot run the original model on the verification "
                                    f"inputs, so there is nothing to verify against: {first}") from None
            # an op or element type onnxruntime has no kernel for (float8 / int4 casts, new opsets): onnx's own
            # reference evaluator defines them
            from onnx.reference import ReferenceEvaluator
            try:
                outs = ReferenceEvaluator(src_path).run(None, dict(feeds))
            except Exception as e2:  # noqa: BLE001
                raise BadInputError(f"{src_path}: neither onnxruntime ({first}) nor onnx's reference evaluator "
                                    f"({type(e2).__name__}: {str(e2).splitlines()[0] if str(e2) else ''}) can run "
                                    "the original model, so there is nothing to verify against") from None
            return {"runtime": "onnx reference evaluator (original file; onnxruntime lacks a kernel)",
                    "outputs": list(outs)}
        return {"runtime": "onnxruntime (original file)", "outputs": outs}
    try:  # loading can fail too (onnxruntime rejects e.g. an attribute name no operator has)
        r = ReferenceExecutor(model).run(feeds)
    except ExecutionError as e:
        raise UnsupportedError(f"the reference executor cannot run the imported model: {e}") from None
    return {"runtime": "reference executor (imported model)", "outputs": [r[o.name] for o in model.graph.outputs]}


VERIFY_SEQ_LEN = 32  # tokens in the seeded verification input of language models


def _sqnr_db(got: np.ndarray, ref: np.ndarray) -> float:
    """10 log10(|ref|^2 / |got - ref|^2) over the finite elements, in dB (inf when exact)."""
    pair = _finite_pair(got, ref)
    if pair is None:
        return float("-inf")
    g, r = pair
    noise, signal_ = float(((g - r) ** 2).sum()), float((r ** 2).sum())
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal_ / noise)) if signal_ > 0 else float("-inf")


def _judge_top1(row: dict[str, Any], prefix: str, got, ref, margin: float, minimum: float, why: list[str],
                confident: bool = False) -> bool:
    """Top-1 agreement over the decisive rows (the reference's top-1 leading by ``margin`` of its range, or with
    ``confident`` by a softmax probability gap of ``margin``), as evidence only where there are MIN_TOP1_ROWS."""
    agree, rows = (_top1_confident if confident else _top1)(got, ref, margin)
    row[f"{prefix}_top1_agreement"], row[f"{prefix}_top1_decisive_rows"] = agree, rows
    if rows < MIN_TOP1_ROWS:
        row[f"{prefix}_top1_evidence"] = False  # too few rows to say anything: not counted either way
        return True
    row[f"{prefix}_top1_evidence"] = True
    if not agree >= minimum:
        why.append(f"top-1 agreement {agree:.3f} < {minimum} over {rows} decisive rows ({prefix.replace('vs_', 'vs ')})")
        return False
    return True


def _comparable(arr: Any, dtype: DType | None) -> np.ndarray:
    """An output of a model type held in a storage type (or as onnxruntime returns it: a float8's bits in uint8)
    as values verification can compare: narrow floats and bfloat16 as float32, sub-byte integers in a byte."""
    a = np.asarray(arr)
    if dtype is None:
        return a
    if dtype.stored_as_bits:
        if a.dtype == dtype.storage.numpy:
            a = from_storage(a, dtype)
        return a.astype(np.float32)
    return a.astype(dtype.storage.numpy) if a.dtype != dtype.storage.numpy else a


def _verify(tgt: Target, out_dir: str, model: Model, feeds, original, tolerance: float, *, lossy: bool = False,
            min_cosine: float | None = None, min_top1: float | None = None) -> dict[str, Any]:
    """Run the artifact and judge it: exactness against the reference executor (the compiled model), and,
    where the original model's outputs are known, against the original: within ``tolerance`` for a compile
    that keeps the numbers, by fidelity (cosine >= ``min_cosine``, top-1 agreement >= LOSSY_MIN_TOP1 over at
    least MIN_TOP1_ROWS decisive rows) for one that changes them on purpose (quantization, pruning)."""
    # inputs / outputs the artifact holds in storage types (float8 bits, int4 values in int8) are fed as such, and
    # every output is compared as values of its model type
    stored = storage_map(model.metadata)
    feeds = {k: to_storage(a) if k in stored else a for k, a in feeds.items()}
    try:
        with native_section():
            got = tgt.run_artifact(out_dir, feeds, [v.name for v in model.graph.inputs])
    except NotImplementedError as e:
        return {"passed": True, "ran": False, "summary": f"not run: {e}"}
    try:
        ref = ReferenceExecutor(model).run(feeds)
    except ExecutionError as e:
        raise UnsupportedError(f"the reference executor cannot run the compiled model to verify it: {e}") from None
    ref_outs = [ref[o.name] for o in model.graph.outputs]
    if stored:
        logical = [stored.get(o.name) for o in model.graph.outputs]
        got = [_comparable(a, d) for a, d in zip(got, logical)]
        ref_outs = [_comparable(a, d) for a, d in zip(ref_outs, logical)]
        if original is not None:
            original = {**original, "outputs": [_comparable(a, d) for a, d in zip(original["outputs"], logical)]}
    act_quant = any(v.quant is not None for v in model.graph.values())
    fidelity = LOSSY_MIN_COSINE if min_cosine is None else float(min_cosine)
    fidelity_top1 = LOSSY_MIN_TOP1 if min_top1 is None else float(min_top1)
    from .plugins.llm.decoder import LLM_KEY
    language_model = bool(model.metadata.get(LLM_KEY))
    int_outs = None
    if act_quant and tgt.integer_semantics():
        from .ir.integer import integer_reference
        iref = integer_reference(model).run(feeds)
        int_outs = [_comparable(iref[o.name], stored.get(o.name)) for o in model.graph.outputs]
    rows = []
    passed = True
    # A target whose runtime executes simulated activation quantization as real integer kernels (its own
    # requantization rounding) states its criterion; otherwise rounding-boundary flips of the simulation.
    aq = getattr(tgt, "act_quant_policy", None) or {}
    min_cos, act_tol = aq.get("min_cosine", ACT_QUANT_MIN_COSINE), aq.get("max_rel_err", ACT_QUANT_TOL)
    act_why = aq.get("description", "rounding-boundary flips")
    policy = getattr(tgt, "verify_policy", None)
    for k, o in enumerate(model.graph.outputs):
        why: list[str] = []
        row = {"output": o.name, "vs_reference_max_rel_err": _rel_err(got[k], ref_outs[k]),
               "vs_reference_cosine": _cosine(got[k], ref_outs[k]), "vs_reference_sqnr_db": _sqnr_db(got[k], ref_outs[k])}
        classifier = got[k].ndim >= 2 and got[k].shape[-1] > 1
        bad = _nonfinite_problem(got[k], ref_outs[k])
        if bad:
            why.append(f"{bad} vs the reference")
        # every check is written "not (value within bound)", so a NaN metric fails it
        if policy:
            if not row["vs_reference_cosine"] >= policy["min_cosine"]:
                why.append(f"cosine {row['vs_reference_cosine']:.6f} < {policy['min_cosine']} vs the reference")
            if classifier:
                _judge_top1(row, "vs_reference", got[k], ref_outs[k], policy.get("top1_margin", 1e-3),
                            policy["min_top1"], why)
        elif act_quant:
            if not row["vs_reference_cosine"] >= min_cos:
                why.append(f"cosine {row['vs_reference_cosine']:.6f} < {min_cos} vs the reference")
            if not row["vs_reference_max_rel_err"] <= max(tolerance, act_tol):
                why.append(f"rel err {row['vs_reference_max_rel_err']:.3g} > {max(tolerance, act_tol):g} vs the reference")
        elif not row["vs_reference_max_rel_err"] <= tolerance:
            why.append(f"rel err {row['vs_reference_max_rel_err']:.3g} > tolerance {tolerance:g} vs the reference")
        if original is not None and k < len(original["outputs"]):
            orig = np.asarray(original["outputs"][k])
            row["vs_original_max_rel_err"] = _rel_err(got[k], orig)
            row["vs_original_cosine"] = _cosine(got[k], orig)
            row["vs_original_pearson"] = _pearson(got[k], orig)
            row["vs_original_sqnr_db"] = _sqnr_db(got[k], orig)
            bad = _nonfinite_problem(got[k], orig)
            if bad:
                why.append(f"{bad} vs the original")
            if classifier:
                _judge_top1(row, "vs_original", got[k], orig, LOSSY_TOP1_GAP, fidelity_top1 if lossy else 1.0,
                            why if lossy else [], confident=True)
            if lossy:
                # Pearson (offset-free) is judged except on a language model's logits: there the tens of
                # thousands of improbable tokens dominate it (SmolLM2-135M over random tokens: 0.915 at Q4_K,
                # 0.42 at Q2_K, where the plain cosine gives 0.9954 and 0.8355)
                for metric in ("cosine",) if language_model else ("cosine", "pearson"):
                    v = row[f"vs_original_{metric}"]
                    if not v >= fidelity:
                        why.append(f"{metric} {v:.4f} < {fidelity} vs the original model (the quantized/pruned model "
                                   "is too far from it; --min-cosine sets the bar)")
            elif not policy and not act_quant and not row["vs_original_max_rel_err"] <= tolerance:
                why.append(f"rel err {row['vs_original_max_rel_err']:.3g} > tolerance {tolerance:g} vs the original")
        if int_outs is not None:
            # The integer kernels are bit-exact with the integer semantics; float ops after them (softmax,
            # norms) may differ from onnxruntime's by float32 rounding, hence the tolerance.
            row["vs_integer_reference_max_rel_err"] = _rel_err(got[k], int_outs[k])
            row["bit_exact_vs_integer_reference"] = bool(np.array_equal(got[k], int_outs[k]))
            if not row["vs_integer_reference_max_rel_err"] <= tolerance:
                why.append(f"rel err {row['vs_integer_reference_max_rel_err']:.3g} > tolerance {tolerance:g} vs the "
                           "integer reference")
        ok = not why
        if why:
            row["failed_because"] = why
        row["passed"] = ok
        passed &= ok
        rows.append(row)
    worst = max(r["vs_reference_max_rel_err"] for r in rows)
    summary = (f"max relative error {worst:.3g} vs the reference executor"
               + (f", {max(r.get('vs_original_max_rel_err', 0) for r in rows):.3g} vs the original "
                  f"({original['runtime']})" if original else "")
               + (f"; simulated int8 activations: criterion cosine >= {min_cos} and rel err <= "
                  f"{max(tolerance, act_tol):g} vs the reference ({act_why})" if act_quant
                  else f"; tolerance {tolerance:g} vs the reference"))
    if policy:
        summary += f"; target criterion: {policy['description']}"
    if lossy and original is not None:
        summary += (f"; quantized/pruned: fidelity vs the original cosine{'' if language_model else ' and Pearson'} >= "
                    f"{fidelity} and top-1 "
                    f"agreement >= {fidelity_top1} where at least {MIN_TOP1_ROWS} rows are decisive (softmax top-1 "
                    f"leading by > {LOSSY_TOP1_GAP:g}; worst cosine "
                    f"{min(r.get('vs_original_cosine', 1.0) for r in rows):.4f}, Pearson "
                    f"{min(r.get('vs_original_pearson', 1.0) for r in rows):.4f}, SQNR "
                    f"{min(r.get('vs_original_sqnr_db', float('inf')) for r in rows):.1f} dB)")
    if int_outs is not None:
        exact = sum(r["bit_exact_vs_integer_reference"] for r in rows)
        summary += (f"; vs the integer reference (edgec.ir.integer): {exact}/{len(rows)} outputs bit-exact, max "
                    f"relative error {max(r['vs_integer_reference_max_rel_err'] for r in rows):.3g}")
    if not passed:
        summary += "; FAILED: " + "; ".join(f"{r['output']}: {', '.join(r['failed_because'])}" for r in rows
                                           if not r["passed"])
    return {"passed": passed, "ran": True, "runtime": tgt.runtime, "tolerance": tolerance, "outputs": rows,
            "criterion": "target" if policy else "activation-quant" if act_quant else "max-rel-err",
            "fidelity": {"lossy": lossy, "min_cosine": fidelity, "min_top1": fidelity_top1, "top1_gap": LOSSY_TOP1_GAP,
                         "min_top1_rows": MIN_TOP1_ROWS} if lossy else None,
            "summary": summary, "error_metric": "max|artifact - reference| / max|reference|"}


def _manifest_schema(output: str, m: Any) -> list[dict[str, Any]]:
    """The manifest's file list, checked (a malformed manifest is bad input, not a crash)."""
    bad = BadInputError(f"{output}/manifest.json is malformed (not what edgec writes); recompile to replace it")
    if not isinstance(m, dict) or not isinstance(m.get("target"), dict) or not isinstance(m["target"].get("spec"), str):
        raise bad
    files = m.get("files")
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("bytes"), int)
            and isinstance(f.get("sha256"), str) for f in files):
        raise bad
    for key, kind in (("source", dict), ("build", dict), ("calibration", dict), ("pipeline", list), ("inputs", list)):
        if m.get(key) is not None and not isinstance(m[key], kind):
            raise bad
    if not all(isinstance(p, str) for p in m.get("pipeline") or []) or not all(
            isinstance(i, dict) and isinstance(i.get("name"), str) and isinstance(i.get("shape", []), list)
            for i in m.get("inputs") or []):
        raise bad
    return files


def _safe_sha256(path: str) -> str | None:
    """sha256 of a regular file (None for anything else: a FIFO or a /proc file is never read)."""
    import stat as stat_
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat_.S_ISREG(os.fstat(fd).st_mode):
            return None
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()


def verify_output(output: str, model: str | None = None, *, calib: str | None = None, frontend: str | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Re-check an existing output directory (``edgec verify OUT``): every file's size and sha256 against the
    manifest (and no file the manifest does not list), then, given the model it was compiled from (``model``,
    or the manifest's source file found beside ``output`` or in the current directory, recognised by its
    sha256), the artifact run again on its runtime and judged as ``--verify`` judged it. Returns the record:
    ``status`` is "pass", "fail" or "files-only" (the files match, nothing was re-run), ``passed`` whether
    nothing failed."""
    say = progress or (lambda m: None)
    from .output import is_edgec_output, read_json
    if not os.path.isdir(output):
        raise UsageError(f"{output!r} is not a directory; give an output directory of edgec compile")
    if not is_edgec_output(output):
        raise UsageError(f"{output!r} holds no manifest.json written by edgec; give an output directory of edgec compile")
    try:
        manifest: Any = read_json(os.path.join(output, "manifest.json"))
    except (OSError, ValueError) as e:
        raise BadInputError(f"{output}/manifest.json cannot be read: {e}") from None
    if isinstance(manifest, dict) and "files" not in manifest and "tiers" in manifest:
        raise UsageError(f"{output} is a tiers folder; verify each of its tier-* directories")
    files = _manifest_schema(output, manifest)
    root = os.path.realpath(output)
    problems, checked = [], 0
    listed = {"manifest.json", report.FILE}
    for f in files:
        p = os.path.realpath(os.path.join(output, f["path"]))
        listed.add(os.path.relpath(p, root))
        if os.path.commonpath([p, root]) != root:
            problems.append(f"{f['path']}: lies outside the output directory")
        elif not os.path.isfile(p):
            problems.append(f"{f['path']}: missing")
        elif os.path.getsize(p) != f["bytes"]:
            problems.append(f"{f['path']}: {os.path.getsize(p)} bytes, the manifest records {f['bytes']}")
        elif _safe_sha256(p) != f["sha256"]:
            problems.append(f"{f['path']}: sha256 differs from the manifest's")
        checked += 1
    for r, dirs, names in os.walk(output):
        for n in names:
            rel = os.path.relpath(os.path.join(r, n), output)
            if rel not in listed and not any(rel.startswith(x.rstrip("/") + os.sep) for x in listed):
                problems.append(f"{rel}: not listed in the manifest")
    rec: dict[str, Any] = {"output": os.path.abspath(output), "files_checked": checked, "integrity_problems": problems,
                           "rerun": None, "passed": not problems, "status": "fail" if problems else "files-only"}
    if problems:
        rec["summary"] = f"{len(problems)} problems with the files: " + "; ".join(problems[:5])
        return rec
    src = manifest.get("source") or {}
    name = os.path.basename(str(src.get("path") or ""))
    if model is None and name and isinstance(src.get("sha256"), str):
        for c in (os.path.join(os.path.dirname(os.path.abspath(output)), name), os.path.join(os.getcwd(), name)):
            if _safe_sha256(c) == src["sha256"]:
                model = c
                break
    if model is None:
        rec["summary"] = (f"all {checked} files match the manifest; NOT RE-RUN: the model it was compiled from "
                          f"({name or 'unknown'}) was not found beside it or here; pass --model to re-run it")
        return rec
    if isinstance(src.get("sha256"), str) and os.path.isfile(model) and _safe_sha256(model) != src["sha256"]:
        raise BadInputError(f"{model} is not the model {output} was compiled from (its sha256 differs from the "
                            f"manifest's {src['sha256'][:16]}...); pass the original model with --model")
    if manifest.get("calibration") and calib is None:
        raise UsageError(f"{output} was calibrated on {manifest['calibration'].get('source')}; pass the same data "
                         "with --calib to re-run it")
    build = manifest.get("build") or {}
    tgt = parse_target(manifest["target"]["spec"])
    n_target = len(tgt.pipeline())
    pipeline = manifest.get("pipeline") or []
    pipeline = pipeline[:len(pipeline) - n_target]
    shapes = {i["name"]: "x".join(map(str, i["shape"])) for i in manifest.get("inputs") or []
              if i.get("shape") and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in i["shape"])}
    try:
        seed = int(build.get("seed", 0))
        tolerance = float(build.get("tolerance", DEFAULT_TOLERANCE))
        min_cos = build.get("min_cosine")
        min_cos = None if min_cos is None else float(min_cos)
        min_t1 = build.get("min_top1")
        min_t1 = None if min_t1 is None else float(min_t1)
    except (TypeError, ValueError):
        raise BadInputError(f"{output}/manifest.json is malformed (its build settings); recompile to replace it") from None
    b = build_model(model, manifest["target"]["spec"], ",".join(pipeline), input_shapes=shapes, verify=True,
                    cleanup=False, seed=seed, frontend=frontend or build.get("frontend"), calib=calib, say=say)
    say(f"running the artifact on {b.target.runtime or 'its runtime'}")
    v = _verify(b.target, output, b.model, b.feeds, b.original, tolerance, lossy=_lossy(b.model, b.passes),
                min_cosine=min_cos, min_top1=min_t1)
    rec["rerun"] = v
    if not v.get("ran", True):
        rec["summary"] = f"all {checked} files match the manifest; NOT RE-RUN: {v['summary']}"
        return rec
    rec["passed"] = bool(v["passed"])
    rec["status"] = "pass" if v["passed"] else "fail"
    rec["summary"] = (f"all {checked} files match the manifest; re-run: "
                      + ("PASS" if v["passed"] else "FAIL") + f": {v['summary']}")
    return rec
