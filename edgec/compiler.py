"""The compile driver behind ``edgec compile`` and :func:`edgec.compile`, in stages::

    load -> passes -> check         (edgec.build)     model file --frontend--> IR --pipeline--> IR, checked
    -> emit                         (here)            target.emit into a private scratch directory
    -> verify                       (edgec.verify)    the artifact on its runtime vs the reference and the original
    -> manifest                     (edgec.manifest)  manifest.json + report.html
    -> publish                      (here)            the cache filled, the scratch renamed onto OUT atomically

The cache lookup (:func:`edgec.cache.lookup_compile`) comes first: a hit skips every stage.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import __version__, cache, manifest as manifest_stage
from .bench import compile_bench
from .build import Build, build_model, fix_input_shapes, load_model, lossy, parse_target  # noqa: F401 (public API)
from .cache import CompileResult, Lookup
from .errors import EdgecError, UnsupportedError, UsageError, VerificationFailed
from .ir import Model
from .native import native_section  # noqa: F401 (public API)
from .output import WRITE_ERRNOS, OutputError, check_output, make_scratch, release, replace_dir, writable_error
from .target import Artifact, Target
from .verify import DEFAULT_TOLERANCE, verify_artifact, verify_output  # noqa: F401 (public API)


OPTION_KEYS = (
    "input_shapes",
    "verify",
    "tolerance",
    "min_cosine",
    "min_top1",
    "cleanup",
    "seed",
    "frontend",
    "calib",
    "eval_text",
    "cache_dir",
    "force",
)


def compile(
    model: str | Model,
    target: str = "cpu",
    pipeline: str = "",
    output: str | None = None,
    *,
    input_shapes: Mapping[str, Any] | None = None,
    verify: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    min_cosine: float | None = None,
    min_top1: float | None = None,
    cleanup: bool = True,
    time_passes: bool = False,
    dump_ir: str | None = None,
    seed: int = 0,
    frontend: str | None = None,
    calib: str | None = None,
    eval_text: str | None = None,
    cache_dir: str | None = None,
    use_cache: bool = True,
    force: bool = False,
    keep_failed: bool = False,
    bench: bool = False,
    progress: Callable[[str], None] | None = None,
    executor: Any = None,
) -> CompileResult:
    """Compile ``model`` for ``target`` into the directory ``output``; see ``edgec compile --help``.

    Raises :class:`edgec.errors.EdgecError` subclasses for every user-facing failure, bad arguments
    included; the output directory then keeps its previous contents (or does not exist). A failed
    verification keeps the previous output too; ``keep_failed`` puts the failed one in ``OUTPUT.failed``.
    An existing ``output`` is replaced only when edgec wrote it (or ``force``). A model given by path is
    looked up in the content-addressed compile cache first (:mod:`edgec.cache`; ``use_cache=False``
    bypasses it). ``min_cosine`` is the fidelity that ``verify`` demands of a quantized or pruned model
    against the original (default :data:`edgec.verify.LOSSY_MIN_COSINE`). ``bench`` measures the artifact on its
    runtime (:func:`edgec.bench.compile_bench`) into the manifest's ``bench`` and the report.
    """
    _check_arguments(
        model,
        target,
        pipeline,
        output,
        input_shapes,
        tolerance,
        min_cosine,
        min_top1,
        seed,
        {"calib": calib, "eval_text": eval_text, "dump_ir": dump_ir, "cache_dir": cache_dir},
    )
    say = progress or (lambda msg: None)
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    # the options that make a compile what it is (the cache key, the manifest's build settings)
    options = {k: v for k, v in locals().items() if k in OPTION_KEYS}
    if bench:  # only then: the cache keys of every other compile stay as they were
        options["bench"] = True
    # looked up before any plugin loads or the model is read: a hit costs hashing the inputs and a copy
    where = cache.lookup_compile(
        model if isinstance(model, str) else None,
        target,
        pipeline,
        output,
        options,
        use_cache=use_cache and not dump_ir and not time_passes,
        progress=say,
    )
    if where.hit is not None:
        return where.hit
    b = build_model(
        model,
        target,
        pipeline,
        input_shapes=input_shapes,
        verify=verify,
        cleanup=cleanup,
        dump_ir=dump_ir,
        seed=seed,
        frontend=frontend,
        calib=calib,
        eval_text=eval_text,
        say=say,
        executor=executor,
    )
    # where a target keeps what it learns across compiles (the cpu target's tuning database)
    b.ctx.config["cache_dir"] = where.cache_dir or cache_dir or cache.default_dir()
    manifest, t_emit = _finish(b, where, options, bench=bench, keep_failed=keep_failed, say=say)
    return CompileResult(
        os.path.abspath(where.output),
        manifest,
        b.timing.report() if time_passes else "",
        {"import": round(b.t_import, 3), "passes": round(b.t_passes, 3), "emit": round(t_emit, 3)},
        cache_key=where.key,
    )


def _finish(
    b: Build, where: Lookup, options: dict[str, Any], *, bench: bool, keep_failed: bool, say: Callable[[str], None]
) -> tuple[dict[str, Any], float]:
    """emit -> manifest -> verify -> evaluation -> bench -> write -> publish, in a scratch directory beside the
    output. Returns the manifest and the emit time."""
    verify, tolerance, force = options["verify"], options["tolerance"], options["force"]
    min_cosine, min_top1 = options["min_cosine"], options["min_top1"]
    tmp = make_scratch(where.output)
    try:
        art, t_emit = emit(b, tmp, say)
        manifest = manifest_stage.assemble(b.target, art, tmp, b.model, b, options)
        if verify:
            say(f"verifying on {b.target.runtime or 'its runtime'}")
            manifest["verification"] = verify_artifact(
                b.target,
                tmp,
                b.model,
                b.feeds,
                b.original,
                tolerance,
                lossy=lossy(b.model, b.passes),
                min_cosine=min_cosine,
                min_top1=min_top1,
            )
        if b.evaluation is not None:
            say("perplexity of the compiled model and the artifact")
            manifest["evaluation"] = b.evaluation.compiled(b.model, b.target, tmp, art.files)
        if bench:
            say(f"benchmarking on {b.target.runtime or 'its runtime'}")
            manifest["bench"] = compile_bench(tmp, manifest)
        say("writing report.html")
        manifest = manifest_stage.write(manifest, tmp)
        publish(tmp, where, manifest.get("verification"), force=force, keep_failed=keep_failed)
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise writable_error(where.output, e) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release(tmp)
    return manifest, t_emit


def emit(b: Build, out_dir: str, say: Callable[[str], None]) -> tuple[Artifact, float]:
    """The emit stage: the target writes its artifact into ``out_dir`` (a scratch directory); every file it reports
    is checked to lie there. Returns the artifact and the seconds it took."""
    say(f"emitting {b.target.describe()}")
    t0 = time.perf_counter()
    with native_section():
        art = b.target.emit(b.model, out_dir, b.ctx)
    _check_artifact_paths(b.target, out_dir, art.files)
    return art, time.perf_counter() - t0


def publish(tmp: str, where: Lookup, verification: dict[str, Any] | None, *, force: bool, keep_failed: bool) -> None:
    """The publish stage: a verified (or unverified) output is stored in the cache and renamed onto the output
    directory atomically; a failed verification leaves the output as it was (``keep_failed``: the failed one goes
    to ``OUTPUT.failed``) and raises."""
    output = where.output
    if verification is not None and not verification["passed"]:
        failed = output + ".failed"
        kept = f"--keep-failed puts the failed artifact in {failed} for inspection"
        if keep_failed:
            try:
                replace_dir(tmp, failed, inputs=where.inputs)
                kept = f"the failed artifact is in {failed}"
            except OutputError as e:  # the verdict stays the news; say why the copy is missing
                kept = f"the failed artifact was not kept: {e}"
        left = f"{output} was left as it was" if os.path.lexists(output) else f"nothing was written to {output}"
        raise VerificationFailed(f"verification failed: {verification['summary']}; {left}; {kept}")
    if where.key is not None:
        cache.store(where.cache_dir, where.key, tmp)
    replace_dir(tmp, output, force=force, inputs=where.inputs)


def _check_arguments(
    model: Any,
    target: Any,
    pipeline: Any,
    output: Any,
    input_shapes: Any,
    tolerance: Any,
    min_cosine: Any,
    min_top1: Any,
    seed: Any,
    paths: Mapping[str, Any],
) -> None:
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
        raise UsageError(
            "input_shapes must be a mapping of input name to shape, e.g. {'image': '1x3x224x224'} or "
            f"{{'image': (1, 3, 224, 224)}}, not {type(input_shapes).__name__}"
        )
    for name, v, lo, hi in (
        ("tolerance", tolerance, 0.0, math.inf),
        ("min_cosine", min_cosine, -1.0, 1.0),
        ("min_top1", min_top1, 0.0, 1.0),
    ):
        if v is None and name != "tolerance":
            continue
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float, np.floating, np.integer))
            or not math.isfinite(v)
            or not lo <= v <= hi
        ):
            rng = "a finite number >= 0" if name == "tolerance" else f"a number in [{lo:g}, {hi:g}]"
            raise UsageError(f"{name}={v!r} is not valid: it must be {rng}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UsageError(f"seed must be an integer, not {type(seed).__name__}")
    from .memory import memory_budget

    try:
        memory_budget()
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_artifact_paths(tgt: Target, tmp: str, files: list[str]) -> None:
    """Every file a target reports must lie inside the output directory (a plugin that derived a file name
    from model content could otherwise write elsewhere)."""
    root = os.path.realpath(tmp)
    for f in files:
        p = os.path.realpath(os.path.join(tmp, f))
        if os.path.isabs(f) or os.path.commonpath([root, p]) != root:
            raise UnsupportedError(
                f"target {tgt.name} reported the artifact file {f!r}, which lies outside the output "
                "directory; nothing was written"
            )
        if not os.path.exists(p):
            raise UnsupportedError(f"target {tgt.name} reported the artifact file {f!r} but did not write it")


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'2GB', '500MB', '1.5GiB', '1000000' -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise UsageError(
            f"size {text!r}: expected a number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 500MB"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


@dataclasses.dataclass
class TierRun:
    """A footprint-tier compile under way: the scratch folder its tiers are written into, the tiers largest
    first (one :func:`compile_tier` each: a unit of work an executor may run) and what the finished index
    records. :func:`tiers_begin` makes one, :func:`tiers_finish` publishes it."""

    model: str
    target: str
    output: str
    tmp: str
    inputs: tuple[Any, ...]
    items: list[dict[str, Any]]  # compile_tier's items, largest tier first
    force: bool = False


def tiers_begin(
    model: str, target: str, pipeline: str, output: str, tiers: list[str], *, tier_options: str = "", **kw
) -> TierRun:
    """Check the tiers and the output folder, make the scratch folder, and list one compile per tier: the
    pipeline followed by ``mixed-precision{size_mb=...}``, into ``tier-<size>/``; ``kw`` are
    :func:`compile`'s options (without ``executor`` and ``progress``: each item must be picklable)."""
    budgets = sorted({parse_size(t): t for t in tiers}.items(), reverse=True)
    if not budgets:
        raise UsageError("--tiers needs at least one size, e.g. --tiers 2GB,1GB,500MB")
    if kw.get("calib") is None:
        raise UsageError("--tiers chooses bit widths from measured sensitivities: pass --calib")
    output = os.path.normpath(output)
    inputs = (model, kw.get("calib"), kw.get("eval_text"))
    check_output(output, inputs, kw.get("force", False))
    tmp = make_scratch(output)
    opts = {**kw, "force": False, "keep_failed": False}
    items = []
    for b, label in budgets:
        name = f"tier-{label.strip().replace(' ', '')}"
        mp = f"mixed-precision{{size_mb={b / 1e6:.6f}" + (f",{tier_options}" if tier_options else "") + "}"
        items.append(
            {
                "tier": label,
                "budget_bytes": b,
                "path": name,
                "mixed_precision": mp,
                "model": model,
                "target": target,
                "pipeline": ",".join(p for p in (pipeline, mp) if p),
                "output": os.path.join(tmp, name),
                "opts": opts,
            }
        )
    return TierRun(model, target, output, tmp, inputs, items, kw.get("force", False))


def compile_tier(item: dict[str, Any], shared: Any = None, **extra: Any) -> dict[str, Any]:
    """One tier's compile (an item of :func:`tiers_begin`), here or as an executor's task: its row of the index.
    ``extra``: :func:`compile` options for this process only (``progress``, ``executor``)."""
    res = compile(item["model"], item["target"], item["pipeline"], item["output"], **item["opts"], **extra)
    m = res.manifest
    return {
        "tier": item["tier"],
        "budget_bytes": item["budget_bytes"],
        "path": item["path"],
        "weights_bytes": m["sizes"]["weights_bytes_after"],
        "artifact_bytes": sum(f["bytes"] for f in m["files"]),
        "verification_passed": m.get("verification", {}).get("passed"),
        "mixed_precision": m.get("mixed_precision"),
    }


def tier_task(item: dict[str, Any], shared: Any = None) -> dict[str, Any]:
    """:func:`compile_tier` as an executor's task: a failure is returned as ``{"error": (class name, message)}``
    (:func:`tier_error` rebuilds it), so that the driver raises the error a serial run would."""
    from . import errors

    try:
        return compile_tier(item)
    except errors.EdgecError as e:
        return {"error": (type(e).__name__, str(e))}


def tier_error(label: str, error: tuple[str, str]) -> EdgecError:
    """A tier task's failure (:func:`tier_task`) as the error of its class (EdgecError for one edgec.errors lacks),
    naming the tier."""
    from . import errors

    kind, msg = error
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.EdgecError)):
        cls = errors.EdgecError
    return cls(f"tier {label}: {msg}")


def tiers_finish(run: TierRun, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``tiers.json`` (the tiers' rows, largest first) and move the scratch folder into place."""
    index = {
        "edgec_version": __version__,
        "target": run.target,
        "source": os.path.basename(run.model),
        "pick": "the first tier whose artifact_bytes fit the memory available",
        "tiers": rows,
    }
    with open(os.path.join(run.tmp, "tiers.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    replace_dir(run.tmp, run.output, force=run.force, inputs=run.inputs)
    return index


def tiers_abandon(run: TierRun) -> None:
    shutil.rmtree(run.tmp, ignore_errors=True)
    release(run.tmp)


def compile_tiers(
    model: str,
    target: str,
    pipeline: str,
    output: str,
    tiers: list[str],
    *,
    tier_options: str = "",
    progress: Callable[[str], None] | None = None,
    executor: Any = None,
    **kw,
) -> dict[str, Any]:
    """Compile ``model`` once per footprint tier: ``mixed-precision{size_mb=...}`` picks each tier's per-layer
    bit widths (the sensitivities are measured once and cached), every tier is emitted into
    ``output/tier-<size>/``, and ``output/tiers.json`` lists them largest first with their sizes, so an
    application picks the largest tier that fits the memory it has. The directory appears complete or not
    at all.

    With an ``executor`` of several workers, the largest tier compiles here first (its sensitivity measurement
    on the executor's workers, then cached), and the other tiers are tasks on the executor, at the same time,
    each reading the sensitivities from the cache (a worker on another machine, whose cache lacks them, measures
    them again: the same numbers, more time). The tiers are the same bytes either way."""
    say = progress or (lambda m: None)
    run = tiers_begin(model, target, pipeline, output, tiers, tier_options=tier_options, **kw)
    try:
        first, rest = run.items[0], run.items[1:]
        say(f"tier {first['tier']}: {first['mixed_precision']}")
        rows = [compile_tier(first, progress=progress, executor=executor)]
        if rest and executor is not None and executor.fans_out:
            for it in rest:
                say(f"tier {it['tier']}: {it['mixed_precision']} (a task on the {executor.name} executor)")
            results = executor.run(tier_task, rest)
            for it, r in zip(rest, results, strict=True):
                if not r.ok:
                    raise EdgecError(
                        f"tier {it['tier']}: its compile failed on the {executor.name} executor: {r.error}"
                    )
                if "error" in r.value:
                    raise tier_error(it["tier"], r.value["error"])
                rows.append(r.value)
        else:
            for it in rest:
                say(f"tier {it['tier']}: {it['mixed_precision']}")
                rows.append(compile_tier(it, progress=progress))
        return tiers_finish(run, rows)
    finally:
        tiers_abandon(run)
