"""The compile driver behind ``edgec compile`` and :func:`edgec.compile`.

model file --frontend--> IR --cleanup + user pipeline + target passes--> IR --capability check-->
target.emit (into a temporary directory) --> manifest.json (+ verification) --> atomic rename to OUT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import __version__, report
from .cache import CompileResult, default_output as _default_output, replace_dir as _replace_dir
from .errors import BadInputError, EdgecError, UnsupportedError, UsageError, VerificationFailed
from .frontend import pick_frontend
from .host import host
from .ir import Model, QuantizedTensor, ReferenceExecutor, random_inputs
from .ir.executor import ExecutionError
from .ir.passes import (DumpIRInstrument, PassContext, PassError, PassManager, PipelineError, TimingInstrument,
                        parse_pipeline)
from .target import Target

DEFAULT_TOLERANCE = 1e-4
# With simulated activation quantization, float implementations that differ by one ulp (accumulation
# order) move values across rounding boundaries: each such flip changes a value by one quantization step,
# and chains of layers spread it. Exact agreement is impossible in float32, so those models are judged by
# direction and bounded size instead: cosine >= ACT_QUANT_MIN_COSINE and max relative error <= ACT_QUANT_TOL.
ACT_QUANT_MIN_COSINE = 0.9999
ACT_QUANT_TOL = 5e-2




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
        raise UsageError(f"unknown target {name!r}; installed targets: {', '.join(targets.names())} "
                         "(see 'edgec targets')")
    try:
        return parse_pipeline(spec, {name: targets[name]})[0]
    except PipelineError as e:
        raise UsageError(str(e)) from None


def parse_input_shapes(specs: Mapping[str, str] | None) -> dict[str, tuple[int, ...]]:
    """``{"image": "1x3x224x224"}`` -> ``{"image": (1, 3, 224, 224)}``."""
    out = {}
    for name, s in (specs or {}).items():
        try:
            out[name] = tuple(int(d) for d in str(s).lower().replace(",", "x").split("x"))
        except ValueError:
            raise UsageError(f"--input-shape {name}={s!r}: dims must be integers joined by 'x', e.g. 1x3x224x224") from None
    return out


def fix_input_shapes(model: Model, shapes: Mapping[str, tuple[int, ...]], notes: list[str],
                     keep_dynamic: bool = False) -> None:
    """Apply ``--input-shape``; without one, dynamic dims become 1 unless the target keeps them
    (``keep_dynamic``: its runtime handles any sequence length, e.g. llama.cpp)."""
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
            v.shape = new
        elif v.shape is None:
            raise UsageError(f"input {v.name!r} has unknown rank; give --input-shape {v.name}=AxBx...")
        elif v.static_shape is None and not keep_dynamic:
            fixed = tuple(d if isinstance(d, int) else 1 for d in v.shape)
            notes.append(f"input {v.name!r}: dynamic dims {v.shape} fixed to {fixed} (override with --input-shape)")
            v.shape = fixed


def _top1(got, ref, margin: float = 1e-3) -> tuple[float, int]:
    """Top-1 agreement over the rows whose reference top-1 leads its runner-up by more than ``margin`` x
    max|reference| (a near tie is decided by rounding, not by the model). Returns (agreement, rows counted)."""
    g = np.asarray(got, np.float32).reshape(-1, np.shape(got)[-1])
    r = np.asarray(ref, np.float32).reshape(-1, np.shape(ref)[-1])
    top2 = np.sort(r, axis=-1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > margin * max(float(np.abs(r).max()), 1e-30)
    if not decisive.any():
        return 1.0, 0
    return float((g[decisive].argmax(-1) == r[decisive].argmax(-1)).mean()), int(decisive.sum())


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|: the error relative to the output's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = float(np.abs(b).max()) if b.size else 0.0
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    d = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / d) if d > 0 else 1.0


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
    return {k: [{"name": v.name, "dtype": v.dtype.short if v.dtype else None, "shape": list(v.shape or [])}
                for v in vals] for k, vals in (("inputs", model.graph.inputs), ("outputs", model.graph.outputs))}


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


def compile(model: str | Model, target: str = "cpu", pipeline: str = "", output: str | None = None, *,
            input_shapes: Mapping[str, str] | None = None, verify: bool = False, tolerance: float = DEFAULT_TOLERANCE,
            cleanup: bool = True, time_passes: bool = False, dump_ir: str | None = None, seed: int = 0,
            frontend: str | None = None, calib: str | None = None, eval_text: str | None = None,
            cache_dir: str | None = None, use_cache: bool = True,
            progress: Callable[[str], None] | None = None) -> CompileResult:
    """Compile ``model`` for ``target`` into the directory ``output``; see ``edgec compile --help``.

    Raises :class:`edgec.errors.EdgecError` subclasses for every user-facing failure; the output directory
    then does not exist (or keeps its previous contents). A model given by path is looked up in the
    content-addressed compile cache first (:mod:`edgec.cache`; ``use_cache=False`` bypasses it).
    """
    say = progress or (lambda msg: None)
    cdir, ckey = None, None
    if use_cache and isinstance(model, str) and os.path.exists(model) and not dump_ir and not time_passes:
        # Looked up before any plugin loads or the model is read: a hit costs hashing the inputs and a copy.
        from . import cache
        cdir, ckey, hit = cache.serve(model, target, pipeline, output, cache_dir=cache_dir, calib=calib,
                                      input_shapes=input_shapes, verify=verify, tolerance=tolerance,
                                      cleanup=cleanup, seed=seed, frontend=frontend, eval_text=eval_text,
                                      progress=say)
        if hit is not None:
            return hit
    h = host()
    tgt = parse_target(target)
    try:
        user_passes = parse_pipeline(pipeline, h.passes.as_dict())
    except PipelineError as e:
        raise UsageError(str(e)) from None
    shapes = parse_input_shapes(input_shapes)
    t0 = time.perf_counter()
    src_hash = None
    if isinstance(model, str):
        say(f"importing {model}")
        src_path = model
        ir_model = load_model(model, frontend)
        src_hash = sha256_file(model) if os.path.isfile(model) else None
    else:
        src_path, ir_model = None, model
    notes: list[str] = []
    fix_input_shapes(ir_model, shapes, notes, keep_dynamic=tgt.dynamic_shapes)
    from .ir.limits import check_sizes, max_tensor_bytes
    too_big = check_sizes(ir_model)
    if too_big:
        raise BadInputError(f"the model declares tensors beyond the {max_tensor_bytes() / 2**30:.3g} GiB this machine "
                            "allows one tensor (EDGEC_MAX_TENSOR_BYTES raises the limit; --input-shape fixes "
                            "oversized inputs):\n" + "\n".join(f"  - {p}" for p in too_big[:20]))
    t_import = time.perf_counter() - t0
    calibration = None
    if calib is not None:
        from .calibration import load_calibration
        say(f"loading calibration data {calib}")
        calibration = load_calibration(calib, ir_model, seed=seed)
    feeds = random_inputs(ir_model, seed=seed, dims={"seq": VERIFY_SEQ_LEN})
    original_ref = None
    if verify:
        original_ref = _original_outputs(src_path, ir_model, feeds)
    evaluation = None
    if eval_text is None and verify:
        # a language model's verification includes perplexity, on the built-in text unless --eval-text
        from .plugins.llm.decoder import LLM_KEY
        from .plugins.llm.evaluate import DEFAULT_EVAL_TEXT
        from .plugins.llm.frontends import SOURCE_KEY
    if eval_text is None and verify and ir_model.metadata.get(LLM_KEY):
        if ir_model.metadata.get(SOURCE_KEY):
            eval_text = DEFAULT_EVAL_TEXT
        else:
            notes.append("perplexity not measured: the model carries no tokenizer (it was not imported from a "
                         "GGUF file or a Hugging Face folder)")
    if eval_text:
        from .plugins.llm.evaluate import CompileEvaluation
        evaluation = CompileEvaluation(ir_model, eval_text)
        say(f"perplexity of the float model on {eval_text}")
        evaluation.float_model(ir_model)

    from .plugins.cleanup import DEFAULT_CLEANUP
    passes = (parse_pipeline(DEFAULT_CLEANUP, h.passes.as_dict()) if cleanup else []) + user_passes + tgt.pipeline()
    timing = TimingInstrument()
    instruments = [timing] + ([DumpIRInstrument(dump_ir)] if dump_ir else [])
    ctx = PassContext(target=tgt, config={"seed": seed}, calibration=calibration)
    size_before = ir_model.size_bytes()
    t1 = time.perf_counter()
    try:
        PassManager(passes, instruments=instruments,
                    progress=lambda k, n, p: say(f"pass {k + 1}/{n}: {p.describe()}")).run(ir_model, ctx)
    except PassError as e:
        if isinstance(e.cause, EdgecError):
            raise type(e.cause)(str(e)) from None
        raise
    t_passes = time.perf_counter() - t1

    problems = tgt.check(ir_model)
    if problems:
        raise UnsupportedError(f"target {tgt.name} cannot compile this model ({len(problems)} problems):", problems)

    output = output or _default_output(src_path, tgt.name)
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", dir=parent)
    try:
        say(f"emitting {tgt.describe()}")
        t2 = time.perf_counter()
        with native_section():
            art = tgt.emit(ir_model, tmp, ctx)
        t_emit = time.perf_counter() - t2
        _check_artifact_paths(tgt, tmp, art.files)
        options_key = json.dumps({"target": tgt.describe(), "pipeline": [p.describe() for p in passes],
                                  "input_shapes": {k: list(v) for k, v in shapes.items()}, "cleanup": cleanup},
                                 sort_keys=True)
        manifest: dict[str, Any] = {
            "edgec_version": __version__,
            "target": {"name": tgt.name, "spec": tgt.describe(), **art.manifest},
            "source": {"path": os.path.basename(src_path) if src_path else None, "sha256": src_hash,
                       "format": ir_model.metadata.get("source_format")},
            "options_sha256": hashlib.sha256(options_key.encode()).hexdigest(),
            "pipeline": [p.describe() for p in passes],
            **_io(ir_model),
            "sizes": {"weights_bytes_before": size_before, "weights_bytes_after": ir_model.size_bytes(),
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
            manifest["verification"] = _verify(tgt, tmp, ir_model, feeds, original_ref, tolerance)
        if evaluation is not None:
            say("perplexity of the compiled model and the artifact")
            manifest["evaluation"] = evaluation.compiled(ir_model, tgt.name, tmp, art.files)
        manifest = _strict_json(manifest)
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True, default=str, allow_nan=False)
            f.write("\n")
        manifest = json.loads(json.dumps(manifest, sort_keys=True, default=str))  # as the file holds it
        say("writing report.html")
        report.write(manifest, os.path.join(tmp, report.FILE))
        _replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    res = CompileResult(os.path.abspath(output), manifest, timing.report() if time_passes else "",
                        {"import": round(t_import, 3), "passes": round(t_passes, 3), "emit": round(t_emit, 3)},
                        cache_key=ckey)
    v = manifest.get("verification")
    if v is not None and not v["passed"]:
        raise VerificationFailed(f"verification failed: {v['summary']} (artifact kept in {output} for inspection)")
    if ckey is not None:
        from . import cache
        cache.store(cdir, ckey, output)
    return res


@contextlib.contextmanager
def native_section():
    """Ctrl-C while a target's native library runs (TVM builds and runs through C++ callbacks into Python, where
    a KeyboardInterrupt aborts the process, is swallowed, or comes back as another error) is held until the
    library returns, then raised as KeyboardInterrupt; a second Ctrl-C raises at once. Outside the main thread
    (no signal handlers there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[bool] = []

    def held(signum, frame):
        if pending:  # the second Ctrl-C: the user insists
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        pending.append(True)
        print("edgec: interrupt received; stopping when the target's native code returns (Ctrl-C again to "
              "force)", file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGINT, held) or signal.default_int_handler
    try:
        yield
    except BaseException:
        if pending:
            raise KeyboardInterrupt from None
        raise
    finally:
        if signal.getsignal(signal.SIGINT) is held:
            signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


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
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", dir=parent)
    try:
        rows = []
        for b, label in budgets:
            name = f"tier-{label.strip().replace(' ', '')}"
            mp = f"mixed-precision{{size_mb={b / 1e6:.6f}" + (f",{tier_options}" if tier_options else "") + "}"
            say(f"tier {label}: {mp}")
            res = compile(model, target, ",".join(p for p in (pipeline, mp) if p), os.path.join(tmp, name),
                          progress=progress, **kw)
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
        _replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
            raise BadInputError(f"{src_path}: onnxruntime cannot run the original model on the verification "
                                f"inputs, so there is nothing to verify against: {str(e).splitlines()[0]}") from None
        return {"runtime": "onnxruntime (original file)", "outputs": outs}
    try:  # loading can fail too (onnxruntime rejects e.g. an attribute name no operator has)
        r = ReferenceExecutor(model).run(feeds)
    except ExecutionError as e:
        raise UnsupportedError(f"the reference executor cannot run the imported model: {e}") from None
    return {"runtime": "reference executor (imported model)", "outputs": [r[o.name] for o in model.graph.outputs]}


VERIFY_SEQ_LEN = 32  # tokens in the seeded verification input of language models


def _verify(tgt: Target, out_dir: str, model: Model, feeds, original, tolerance: float) -> dict[str, Any]:
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
    quantized = any(isinstance(v.const, QuantizedTensor) for v in model.graph.initializers.values())
    act_quant = any(v.quant is not None for v in model.graph.values())
    int_outs = None
    if act_quant and tgt.integer_semantics():
        from .ir.integer import integer_reference
        iref = integer_reference(model).run(feeds)
        int_outs = [iref[o.name] for o in model.graph.outputs]
    rows = []
    passed = True
    # A target whose runtime executes simulated activation quantization as real integer kernels (its own
    # requantization rounding) states its criterion; otherwise rounding-boundary flips of the simulation.
    aq = getattr(tgt, "act_quant_policy", None) or {}
    min_cos, act_tol = aq.get("min_cosine", ACT_QUANT_MIN_COSINE), aq.get("max_rel_err", ACT_QUANT_TOL)
    act_why = aq.get("description", "rounding-boundary flips")
    for k, o in enumerate(model.graph.outputs):
        row = {"output": o.name, "vs_reference_max_rel_err": _rel_err(got[k], ref_outs[k]),
               "vs_reference_cosine": _cosine(got[k], ref_outs[k])}
        if original is not None and k < len(original["outputs"]):
            row["vs_original_max_rel_err"] = _rel_err(got[k], original["outputs"][k])
            row["vs_original_cosine"] = _cosine(got[k], original["outputs"][k])
            if got[k].ndim == 2 and got[k].shape[0] >= 1 and got[k].shape[1] > 1:
                row["top1_agreement"] = float((got[k].argmax(-1) == np.asarray(original["outputs"][k]).argmax(-1)).mean())
        policy = getattr(tgt, "verify_policy", None)
        if got[k].ndim >= 2 and got[k].shape[-1] > 1:
            row["vs_reference_top1_agreement"], row["top1_decisive_rows"] = _top1(
                got[k], ref_outs[k], (policy or {}).get("top1_margin", 1e-3))
        if policy:
            ok = (row["vs_reference_cosine"] >= policy["min_cosine"]
                  and row.get("vs_reference_top1_agreement", 1.0) >= policy["min_top1"])
        elif act_quant:
            ok = (row["vs_reference_cosine"] >= min_cos
                  and row["vs_reference_max_rel_err"] <= max(tolerance, act_tol))
        else:
            ok = row["vs_reference_max_rel_err"] <= tolerance
        if not quantized and not act_quant and not policy and "vs_original_max_rel_err" in row:
            ok = ok and row["vs_original_max_rel_err"] <= tolerance
        if int_outs is not None:
            # The integer kernels are bit-exact with the integer semantics; float ops after them (softmax,
            # norms) may differ from onnxruntime's by float32 rounding, hence the tolerance.
            row["vs_integer_reference_max_rel_err"] = _rel_err(got[k], int_outs[k])
            row["bit_exact_vs_integer_reference"] = bool(np.array_equal(got[k], int_outs[k]))
            ok = ok and row["vs_integer_reference_max_rel_err"] <= tolerance
        row["passed"] = ok
        passed &= ok
        rows.append(row)
    worst = max(r["vs_reference_max_rel_err"] for r in rows)
    summary = (f"max relative error {worst:.3g} vs the reference executor"
               + (f", {max(r.get('vs_original_max_rel_err', 0) for r in rows):.3g} vs the original "
                  f"({original['runtime']})" if original else "")
               + (f"; simulated int8 activations: criterion cosine >= {min_cos} and rel err <= "
                  f"{max(tolerance, act_tol):g} vs the reference ({act_why})" if act_quant
                  else f"; tolerance {tolerance:g}"))
    policy = getattr(tgt, "verify_policy", None)
    if policy:
        summary += f"; target criterion: {policy['description']}"
    if int_outs is not None:
        exact = sum(r["bit_exact_vs_integer_reference"] for r in rows)
        summary += (f"; vs the integer reference (edgec.ir.integer): {exact}/{len(rows)} outputs bit-exact, max "
                    f"relative error {max(r['vs_integer_reference_max_rel_err'] for r in rows):.3g}")
    return {"passed": passed, "ran": True, "runtime": tgt.runtime, "tolerance": tolerance, "outputs": rows,
            "criterion": "target" if policy else "activation-quant" if act_quant else "max-rel-err",
            "summary": summary, "error_metric": "max|artifact - reference| / max|reference|"}
