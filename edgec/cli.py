"""The ``edgec`` command line.

Exit codes: 0 ok; 1 verification failed; 2 usage error (unknown option, pass, target); 3 bad input
(missing, unreadable or corrupt file); 4 unsupported model feature; 5 plugin failure; 70 internal error.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback

import click

from . import __version__
from .errors import EdgecError
from .output import human_bytes as _human

EXIT_INTERNAL = 70


def _emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def handle_errors(fn):
    """Turn edgec errors into one clear message and their exit code; tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = ctx.find_root().params.get("debug", False)
        as_json = kwargs.get("as_json", False)
        try:
            return fn(*args, **kwargs)
        except EdgecError as e:
            if debug:
                traceback.print_exc()
            if as_json:
                _emit_json({"ok": False, "error": {"kind": e.kind, "message": str(e), "exit_code": e.exit_code}})
            else:
                click.echo(f"edgec: error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt as e:
            from .errors import Terminated

            term = isinstance(e, Terminated)
            click.echo(
                f"edgec: {'terminated' if term else 'interrupted'}; nothing was written (any previous output is kept)",
                err=True,
            )
            sys.exit(143 if term else 130)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if debug:
                traceback.print_exc()
            msg = f"internal error: {type(e).__name__}: {e}"
            if as_json:
                _emit_json({"ok": False, "error": {"kind": "internal", "message": msg, "exit_code": EXIT_INTERNAL}})
            else:
                click.echo(f"edgec: {msg}\n(this is a bug in edgec; rerun with --debug for the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)

    return wrapper


def _terminate_like_interrupt() -> None:
    """SIGTERM (a build system cancelling, a container stopping) cleans up as Ctrl-C does: temporary folders
    removed, the previous output kept, exit 143."""
    import signal
    import threading

    from .errors import Terminated

    if threading.current_thread() is not threading.main_thread():
        return

    def term(signum, frame):
        raise Terminated()

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, term)


def _tolerance(ctx, param, value):
    """--tolerance / --min-cosine: finite numbers in range (nan, inf and negatives are refused)."""
    import math

    if value is None:
        return value
    lo, hi = {"tolerance": (0.0, math.inf), "min_cosine": (-1.0, 1.0), "min_top1": (0.0, 1.0)}[param.name]
    if not math.isfinite(value) or not lo <= value <= hi:
        allowed = "a finite number >= 0, e.g. 1e-4" if param.name == "tolerance" else f"a number in [{lo:g}, {hi:g}]"
        raise click.BadParameter(f"{value!r} is not allowed: give {allowed}")
    return value


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=__doc__.split("\n\n", 1)[1])
@click.version_option(__version__, prog_name="edgec")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool) -> None:
    """edgec: compile neural networks for edge targets."""
    _terminate_like_interrupt()
    if not debug:
        import warnings

        warnings.showwarning = _show_warning


@main.command("compile")
@click.argument("model", type=click.Path())
@click.option(
    "-t", "--target", default="cpu", show_default=True, help="Target, optionally with options: 'cpu{arch=aarch64}'."
)
@click.option("-p", "--pipeline", default="", help="Passes to run after cleanup, e.g. 'quantize{bits=4}'.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Output directory (default: MODEL.TARGET).")
@click.option(
    "--input-shape", "input_shapes", multiple=True, metavar="NAME=AxBx..", help="Fix an input's shape (repeatable)."
)
@click.option("--calib", help="Calibration data for passes that calibrate.")
@click.option(
    "--verify", is_flag=True, help="Run the artifact and the reference executor on seeded inputs and compare."
)
@click.option(
    "--bench",
    is_flag=True,
    help="Measure the artifact on its runtime (as edgec bench OUT does) into the manifest and the report.",
)
@click.option(
    "--tolerance",
    type=float,
    default=1e-4,
    show_default=True,
    callback=_tolerance,
    help="Max relative error --verify accepts against the reference (and, for a float compile, the original).",
)
@click.option(
    "--min-cosine",
    type=float,
    default=None,
    callback=_tolerance,
    help="--verify on a quantized or pruned "
    "model: the cosine similarity each output must keep against the original model [default: 0.98].",
)
@click.option(
    "--min-top1",
    type=float,
    default=None,
    callback=_tolerance,
    help="--verify on a quantized or pruned "
    "model: top-1 agreement with the original over its confident rows [default: 0.8].",
)
@click.option("--force", is_flag=True, help="Replace the output directory even if edgec did not write it.")
@click.option(
    "--keep-failed",
    is_flag=True,
    help="On a failed --verify, keep the failed output in OUTPUT.failed (the previous OUTPUT is always kept).",
)
@click.option("--no-cleanup", is_flag=True, help="Skip the default cleanup/fusion passes.")
@click.option("--time-passes", is_flag=True, help="Print wall time per pass.")
@click.option("--dump-ir", type=click.Path(file_okay=False), help="Write the IR text after every pass into DIR.")
@click.option("--frontend", help="Force a frontend instead of choosing by file suffix.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for verification inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option(
    "--tiers",
    help="Emit the model at several footprint budgets, e.g. 2GB,1GB,500MB (per-layer bits by "
    "mixed-precision; needs --calib): OUTPUT/tier-*/ plus OUTPUT/tiers.json.",
)
@click.option("--tier-options", default="", help="Extra mixed-precision options for --tiers, e.g. 'bits=2:4:8'.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Content-addressed compile cache (default: "
    "$EDGEC_CACHE_DIR or ~/.cache/edgec/artifacts): an unchanged compile is copied from it.",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor fill the compile cache.")
@click.option(
    "--eval-text",
    type=click.Path(dir_okay=False),
    help="Language models: perplexity of the float model, "
    "the compiled model and the artifact on this text (first 1024 tokens), in the manifest and report.",
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="Where independent work runs (sensitivity shards, max_drop judgments, the GPTQ / mse / codebook / vq "
    "solves of layers that share an input, footprint tiers): local, ray (RAY_ADDRESS, else a local Ray) or "
    "ray://HOST:PORT. The result does not depend on it.",
)
@click.option(
    "--workers", type=int, help="Worker processes (local; default 1: in this process) or CPUs of a local Ray."
)
@handle_errors
def compile_cmd(executor, workers, **kw):
    """Compile MODEL for a target into a directory with the artifact, manifest.json and report.html."""
    from .api.executor import make_executor

    with make_executor(executor, workers) as ex:
        _compile(executor=None if ex.workers == 1 and ex.name == "local" else ex, **kw)


def _compile(
    model,
    target,
    pipeline,
    output,
    input_shapes,
    calib,
    verify,
    bench,
    tolerance,
    min_cosine,
    min_top1,
    force,
    keep_failed,
    no_cleanup,
    time_passes,
    dump_ir,
    frontend,
    seed,
    as_json,
    quiet,
    tiers,
    tier_options,
    cache_dir,
    no_cache,
    eval_text,
    executor,
):
    opts = dict(
        input_shapes=_shape_options(input_shapes),
        verify=verify,
        tolerance=tolerance,
        min_cosine=min_cosine,
        min_top1=min_top1,
        force=force,
        keep_failed=keep_failed,
        bench=bench,
        cleanup=not no_cleanup,
        seed=seed,
        frontend=frontend,
        calib=calib,
        eval_text=eval_text,
        cache_dir=cache_dir,
    )
    if tiers:
        _compile_tiers(
            model,
            target,
            pipeline,
            output,
            tiers,
            tier_options,
            as_json,
            quiet,
            use_cache=not no_cache,
            executor=executor,
            **opts,
        )
        return
    res = _run_compile(
        model,
        target,
        pipeline,
        output,
        opts,
        use_cache=not (no_cache or dump_ir or time_passes),
        dump_ir=dump_ir,
        time_passes=time_passes,
        show=not (quiet or as_json),
        executor=executor,
    )
    if as_json:
        _emit_json(
            {
                "ok": True,
                "output_dir": res.output_dir,
                "cached": res.cached,
                "cache_key": res.cache_key,
                "timings_s": res.timings_s,
                "manifest": res.manifest,
            }
        )
        return
    _print_compile(res)


def _run_compile(model, target, pipeline, output, opts, *, use_cache, dump_ir, time_passes, show, executor=None):
    """The compile served from the cache (looked up before the compiler or any plugin loads), else compiled,
    with a progress line on a terminal."""
    if use_cache and os.path.exists(model):
        res = _cache_hit(model, target, pipeline, output, opts)
        if res is not None:
            return res
    from .compiler import compile as do_compile

    bar = None
    if show and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", file=sys.stderr, leave=False)
    try:
        return do_compile(
            model,
            target,
            pipeline,
            output,
            time_passes=time_passes,
            dump_ir=dump_ir,
            use_cache=use_cache,
            progress=(lambda m: (bar.set_description_str(m), bar.refresh())) if bar is not None else None,
            executor=executor,
            **opts,
        )
    finally:
        if bar is not None:
            bar.close()


def _shape_options(input_shapes) -> dict[str, str]:
    """``--input-shape NAME=AxB`` options -> ``{NAME: "AxB"}`` (the dims are checked where they are used)."""
    from .errors import UsageError

    shapes = {}
    for s in input_shapes:
        name, eq, dims = s.partition("=")
        if not eq:
            raise UsageError(f"--input-shape {s!r}: expected NAME=AxBx..")
        shapes[name] = dims
    return shapes


def _compile_tiers(model, target, pipeline, output, tiers, tier_options, as_json, quiet, **kw):
    from .compiler import compile_tiers

    out = output or f"{model}.{target.split('{')[0]}.tiers"
    index = compile_tiers(
        model,
        target,
        pipeline,
        out,
        tiers.split(","),
        tier_options=tier_options,
        progress=None if (quiet or as_json) else lambda m: click.echo(m, err=True),
        **kw,
    )
    if as_json:
        _emit_json({"ok": True, "output_dir": out, "tiers": index})
        return
    click.echo(f"wrote {out}/tiers.json and {len(index['tiers'])} tiers:")
    for t in index["tiers"]:
        mp = t.get("mixed_precision") or {}
        click.echo(
            f"  {t['tier']:>8}: {t['path']}: artifact {_human(t['artifact_bytes'])}, weights "
            f"{_human(t['weights_bytes'])}, {mp.get('avg_bits', '?')} bits/weight on average"
        )


def _print_compile(res) -> None:
    """The human-readable account of a compile: notes, what was written, sizes, verification, perplexity."""
    m = res.manifest
    for n in m["notes"]:
        click.echo(f"note: {n}", err=True)
    sz = m["sizes"]
    if res.cached:
        click.echo(f"cached: inputs and options unchanged (key {res.cache_key[:16]}); nothing recompiled")
    click.echo(f"wrote {res.output_dir} ({', '.join(f['path'] for f in m['files'])}, manifest.json, report.html)")
    click.echo(
        f"weights: {_human(sz['weights_bytes_before'])} -> {_human(sz['weights_bytes_after'])}, "
        f"{sz['parameters']:,} parameters"
    )
    if "verification" in m:
        v = m["verification"]
        from .verify import verification_status

        status = verification_status(v).upper()
        click.echo(f"verify: {status}: {v['summary']}")
        for row in v.get("outputs", []):
            extra = (
                f", top-1 agreement {row['vs_original_top1_agreement']:.3f} over "
                f"{row['vs_original_top1_decisive_rows']} decisive rows"
                if row.get("vs_original_top1_evidence")
                else ""
            )
            orig = (
                f"; vs original: rel err {row['vs_original_max_rel_err']:.3g}, cosine {row['vs_original_cosine']:.6f}"
                if "vs_original_max_rel_err" in row
                else ""
            )
            click.echo(
                f"  {row['output']}: vs reference: rel err {row['vs_reference_max_rel_err']:.3g}, cosine "
                f"{row['vs_reference_cosine']:.6f}{orig}{extra}"
            )
    ev = m.get("evaluation")
    if ev:
        click.echo(
            f"perplexity on {ev['text']} ({ev['tokens']} tokens): float {ev['float_perplexity']:.3f}, compiled "
            f"{ev['compiled_perplexity']:.3f}"
            + (
                f", artifact ({ev['artifact_engine']}) {ev['artifact_perplexity']:.3f}"
                if ev.get("artifact_perplexity")
                else ""
            )
        )
    if m.get("bench"):
        from .bench import summary

        click.echo(summary(m["bench"]))
    if res.timings:
        click.echo(res.timings)


@main.command("verify")
@click.argument("output", type=click.Path())
@click.option(
    "--model",
    type=click.Path(),
    help="The model OUTPUT was compiled from (default: the manifest's source "
    "file, found beside OUTPUT or here by its sha256).",
)
@click.option("--calib", help="The calibration data it was compiled with (needed when the manifest records one).")
@click.option("--frontend", help="Force a frontend.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON on stdout.")
@handle_errors
def verify_cmd(output, model, calib, frontend, as_json):
    """Re-check a compiled OUTPUT: file hashes against its manifest, then the artifact re-run against the
    reference (exit 1 when either fails)."""
    from .verify import verify_output

    rec = verify_output(
        output, model, calib=calib, frontend=frontend, progress=None if as_json else lambda m: click.echo(m, err=True)
    )
    if as_json:
        _emit_json({"ok": rec["passed"], **rec})
    else:
        label = {"pass": "PASS", "fail": "FAIL", "files-only": "FILES OK"}[rec["status"]]
        click.echo(f"verify {output}: {label}: {rec['summary']}")
    if not rec["passed"]:
        sys.exit(1)


@main.command("bench")
@click.argument("output", type=click.Path())
@click.option("--runs", default=50, show_default=True, help="Timed inferences (after the warm-up).")
@click.option("--warmup", default=5, show_default=True, help="Untimed inferences first.")
@click.option("--threads", type=int, help="Runtime threads (default: every core this process may use).")
@click.option(
    "--compare",
    type=click.Choice(["onnxruntime"]),
    help="Also time the original model on this runtime, in the same process, in blocks alternating with the artifact.",
)
@click.option("--model", type=click.Path(), help="The original model for --compare (default: found by its sha256).")
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="NAME=AxBx..",
    help="The shape to time a dynamic input at (repeatable; default: every dynamic dim 1).",
)
@click.option("--prompt-tokens", default=128, show_default=True, help="Language models: the prefill's length.")
@click.option("--new-tokens", default=32, show_default=True, help="Language models: decode steps timed.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON on stdout.")
@handle_errors
def bench_cmd(output, runs, warmup, threads, compare, model, input_shapes, prompt_tokens, new_tokens, as_json):
    """Measure a compiled OUTPUT on its own runtime: latency (median, p90, p99), throughput and the runtime
    process's peak RSS; prefill and decode tokens/s for language models; packets per inference for Hexagon."""
    from .bench import bench, text

    rec = bench(
        output,
        runs=runs,
        warmup=warmup,
        threads=threads,
        compare=compare,
        model=model,
        input_shapes=_shape_options(input_shapes),
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
    )
    if as_json:
        _emit_json({"ok": True, **rec})
    else:
        click.echo(text(rec))


def _cache_hit(model, target, pipeline, output, opts):
    """The compile served from the cache, or None; the compiler's own lookup, made without loading it."""
    from .cache import lookup_compile

    return lookup_compile(model, target, pipeline, output, opts).hit


@main.command()
@click.argument("model", type=click.Path())
@click.option("--frontend", help="Force a frontend.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--ir", "show_ir", is_flag=True, help="Print the IR text (large tensors elided).")
@click.option(
    "--sensitivity",
    is_flag=True,
    help="Quantize one layer at a time and measure the outputs' change "
    "(KL on logits, SQNR, cosine) on --calib data; cached, so a second run is instant.",
)
@click.option("--calib", help="Calibration data for --sensitivity: a .npz, a folder of samples, or 'random'.")
@click.option(
    "--bits",
    default="2:4:8",
    show_default=True,
    help="--sensitivity: candidates, ':'-separated (widths 2..8, pN palettes, f16).",
)
@click.option(
    "--method",
    default="rtn",
    show_default=True,
    type=click.Choice(["rtn", "mse", "gptq"]),
    help="--sensitivity: quantization algorithm.",
)
@click.option("--samples", default=8, show_default=True, type=int, help="--sensitivity: calibration samples.")
@click.option("--plot", type=click.Path(dir_okay=False), help="--sensitivity: also save a PNG plot here.")
@click.option(
    "--metric",
    default="kl",
    show_default=True,
    type=click.Choice(["kl", "sqnr", "cosine"]),
    help="--sensitivity: the metric plotted.",
)
@click.option("--no-cache", is_flag=True, help="--sensitivity: measure again even if cached.")
@click.option("--input-shape", "input_shapes", multiple=True, help="name=d0,d1,... for dynamic inputs.")
@click.option(
    "--executor", default="local", show_default=True, help="--sensitivity: local, ray or ray://HOST:PORT (shards)."
)
@click.option("--workers", type=int, help="--sensitivity: worker processes (local) or CPUs of a local Ray.")
@handle_errors
def inspect(
    model,
    frontend,
    as_json,
    show_ir,
    sensitivity,
    calib,
    bits,
    method,
    samples,
    plot,
    metric,
    no_cache,
    input_shapes,
    executor,
    workers,
):
    """Show a model's inputs, outputs, operators, parameters and sizes (or, with --sensitivity, how much
    quantizing each layer alone changes the outputs)."""
    import collections

    from .build import load_model
    from .manifest import io_summary, layer_table
    from .ir import print_model

    if sensitivity:
        from .api.executor import make_executor

        with make_executor(executor, workers) as ex:
            _inspect_sensitivity(model, calib, bits, method, samples, plot, metric, no_cache, input_shapes, as_json, ex)
        return
    m = load_model(model, frontend)
    ops = collections.Counter(n.qualified_op for n in m.graph)
    info = {
        "model": model,
        "opsets": m.opset_imports,
        **io_summary(m),
        "nodes": len(m.graph),
        "ops": dict(ops.most_common()),
        "parameters": m.param_count(),
        "weights_bytes": m.size_bytes(),
        "layers": layer_table(m),
    }
    if as_json:
        _emit_json(info)
        return
    if show_ir:
        click.echo(print_model(m, elide=True))
        return
    click.echo(
        f"{model}: {len(m.graph)} nodes, {info['parameters']:,} parameters, {info['weights_bytes'] / 1e6:.2f} MB"
    )
    for k in ("inputs", "outputs"):
        for v in info[k]:
            click.echo(f"  {k[:-1]:<6} {v['name']}: {v['dtype']}{v['shape']}")
    click.echo("  ops: " + ", ".join(f"{op}×{c}" for op, c in ops.most_common()))


def _sensitivity(
    path: str, calib: str, bits, method: str, samples: int, use_cache: bool, input_shapes, progress, executor=None
):
    """``edgec inspect --sensitivity``: import ``path``, fix its input shapes, load the calibration data, run the
    default cleanup, then measure each layer's sensitivity (:func:`edgec.plugins.mixed.sensitivity.analyse`)."""
    from .build import fix_input_shapes, load_model, parse_input_shapes
    from .calibration import load_calibration
    from .host import host
    from .ir.passes import PassContext, PassManager, parse_pipeline
    from .plugins.cleanup import DEFAULT_CLEANUP
    from .plugins.mixed.mixed_precision import MixedPrecision
    from .plugins.mixed.sensitivity import analyse

    h = host()
    m = load_model(path)
    fix_input_shapes(m, parse_input_shapes(input_shapes), [], keep_dynamic=False)
    ctx = PassContext(
        config={"seed": 0},
        calibration=load_calibration(calib, m, seed=0),
        passes=h.passes.as_dict(),
        checks=h.checks.as_dict(),
        executor=executor,
    )
    PassManager(parse_pipeline(DEFAULT_CLEANUP, ctx.passes)).run(m, ctx)
    mp = MixedPrecision(avg_bits=8.0, method=method, bits=":".join(map(str, bits)))
    cands = [mp.spec(mp.candidate(b)) for b in mp.widths()]
    return analyse(m, cands, ctx, samples=samples, use_cache=use_cache, progress=progress, seq=mp.seq)


def _inspect_sensitivity(
    model, calib, bits, method, samples, plot, metric, no_cache, input_shapes, as_json, executor=None
):
    from .errors import UsageError
    from .plugins.mixed.sensitivity import plot as plot_png

    if not calib:
        raise UsageError("--sensitivity needs --calib (a .npz, a folder of samples, or 'random' for a smoke test)")
    from .plugins.mixed.mixed_precision import parse_candidates
    from .plugins.mixed.sensitivity import label

    try:
        widths = parse_candidates(bits)
    except UsageError as e:
        raise UsageError(f"--bits {bits!r}: {str(e).split(': ', 2)[-1]}") from None
    shapes = dict(s.split("=", 1) for s in input_shapes) if input_shapes else None
    sens = _sensitivity(
        model,
        calib,
        widths,
        method,
        samples,
        use_cache=not no_cache,
        input_shapes=shapes,
        progress=None if as_json else lambda m: click.echo(m, err=True),
        executor=executor,
    )
    if plot:
        plot_png(sens, plot, metric)
    if as_json:
        _emit_json({"model": model, "cached": sens.cached, **sens.to_json(), "plot": plot})
        return
    click.echo(
        f"{model}: sensitivity of {len(sens.layers)} layers ({'cached' if sens.cached else 'measured'}); "
        f"{metric} per candidate, one layer quantized at a time, on the {sens.distance}"
    )
    head = "".join(f"{label(c)[-14:]:>14}" for c in sens.candidates)
    click.echo(f"  {'layer':<48}{'params':>10}{head}")
    for w in sens.layers:
        vals = "".join(
            f"{sens.table[w][c][metric]:>14.4g}" if c in sens.table[w] else f"{'-':>14}" for c in sens.candidates
        )
        click.echo(f"  {sens.nodes[w][-48:]:<48}{sens.params[w]:>10,}{vals}")
    if plot:
        click.echo(f"  plot: {plot}")


@main.command("build")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for the artifacts.")
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="Where the compiles run: local (this machine), ray (RAY_ADDRESS, else a local Ray started for this run) "
    "or ray://HOST:PORT.",
)
@click.option(
    "--workers",
    type=int,
    help="Processes (local; default 1: one compile after the other, in this process) or CPUs of a local Ray "
    "(default: every core).",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor fill the compile cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Compile cache folder (default: EDGEC_CACHE_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@handle_errors
def build_cmd(plan, output, executor, workers, no_cache, cache_dir, as_json, quiet):
    """Compile every model x target x pipeline of PLAN (a TOML file of [[compile]] tables; see edgec.plan) into
    OUTPUT/<model>/<target>/, each cached and verified, on an executor; one summary table (text, --json,
    OUTPUT/build.html). Exits non-zero if any compile fails, listing them all."""
    from .api.executor import make_executor
    from .plan import load_plan, run_plan, summary_text, write_summary

    jobs = load_plan(plan, output)  # every problem of the plan, before any work
    say = (lambda m: None) if (quiet or as_json) else (lambda m: click.echo(m, err=True))
    say(f"{len(jobs)} compiles from {plan}")
    count = {"n": 0}

    def on_row(r):
        count["n"] += 1
        state = "cached" if r.get("cached") else ("ok" if r["ok"] else "FAILED")
        say(f"[{count['n']}/{len(jobs)}] {r['name']} -> {r['target']}: {state} ({r.get('seconds', 0):.1f} s)")

    with make_executor(executor, workers) as ex:
        summary = run_plan(jobs, ex, use_cache=not no_cache, cache_dir=cache_dir, on_row=on_row)
    write_summary(summary, output)
    if as_json:
        _emit_json({"ok": summary["failed"] == 0, **summary})
    else:
        click.echo(summary_text(summary))
        click.echo(f"summary: {os.path.join(output, 'build.html')}, {os.path.join(output, 'build.json')}")
    if summary["failed"]:
        sys.exit(1)


@main.command("eval")
@click.argument("model", type=click.Path(exists=True))
@click.option(
    "--perplexity", "text", type=click.Path(exists=True, dir_okay=False), help="Text file whose perplexity to measure."
)
@click.option("--ctx", type=int, default=512, show_default=True, help="Tokens per window.")
@click.option("--stride", type=int, default=None, help="Tokens between window starts (default: ctx/2).")
@click.option("--max-tokens", type=int, default=0, help="Only the first N tokens of the text (0: all).")
@click.option(
    "--engine",
    default="auto",
    show_default=True,
    help="auto: an artifact on its target's own runtime (llama.cpp for gguf, the OpenVINO CPU plugin for "
    "openvino, a vendor's), a model on the reference executor; 'reference' runs an artifact's model "
    "file on the reference executor; 'artifact' or the runtime's name (llama.cpp, openvino) insists "
    "on the artifact's runtime.",
)
@click.option(
    "--chat", "prompt", help="Generate a reply to this chat prompt on the artifact's runtime (gguf: llama.cpp)."
)
@click.option(
    "--tool-calls",
    "tool_calls_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Tool-calling set (JSON Lines: id, messages, tools, expected; e.g. examples/toolcalls/toolcalls.jsonl): "
    "generate each prompt's calls and report JSON / schema validity, name accuracy, argument exact-match and F1.",
)
@click.option(
    "--reference",
    type=click.Path(exists=True),
    help="With --tool-calls: a reference model (the float model, a file or an artifact) whose calls the model's "
    "are compared with (reference agreement).",
)
@click.option(
    "--max-new-tokens",
    type=int,
    default=None,
    help="New tokens per generation (default: 64 for --chat, 128 for --tool-calls).",
)
@click.option("--limit", type=int, default=0, help="With --tool-calls: only the first K prompts (0: all).")
@click.option("--frontend", help="Force a frontend.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def eval_cmd(
    model,
    text,
    ctx,
    stride,
    max_tokens,
    engine,
    prompt,
    tool_calls_file,
    reference,
    max_new_tokens,
    limit,
    frontend,
    as_json,
):
    """Evaluate a language model or a compiled artifact: perplexity on a text, a chat reply, or tool calling."""
    from . import llm_eval
    from .errors import UsageError

    if not text and not prompt and not tool_calls_file:
        raise UsageError("eval needs --perplexity TEXT_FILE, --chat PROMPT and/or --tool-calls FILE.jsonl")
    if (reference or limit) and not tool_calls_file:
        raise UsageError("--reference and --limit apply to --tool-calls FILE.jsonl; add it or drop them")
    if limit < 0 or (max_new_tokens is not None and max_new_tokens < 1):
        raise UsageError("--limit must be >= 0 (0: every prompt) and --max-new-tokens >= 1")
    res = llm_eval.run(
        model,
        text=text,
        ctx=ctx,
        stride=stride or max(1, ctx // 2),
        max_tokens=max_tokens,
        engine=engine,
        prompt=prompt,
        max_new_tokens=max_new_tokens or 64,
        frontend=frontend,
        progress=not as_json,
        tool_calls_file=tool_calls_file,
        reference=reference,
        tool_tokens=max_new_tokens or 128,
        limit=limit,
    )
    if as_json:
        _emit_json({"ok": True, **res})
        return
    click.echo(f"{res['model']} ({res['engine']}, tokenizer {res['tokenizer']})")
    if "perplexity" in res:
        click.echo(res["perplexity_text"])
    if "reply" in res:
        click.echo(f"chat reply: {res['reply']}")
    if "tool_calls" in res:
        from .api.toolcalls import metrics_text

        tc = res["tool_calls"]
        click.echo(f"tools rendered: {', '.join(tc['rendering'])}; {tc['max_new_tokens']} new tokens per prompt")
        click.echo(metrics_text(tc["metrics"]))


def _options_text(cls) -> str:
    opts = cls.options()
    return ", ".join(f"{o['name']}={o['default']}" + (f" ({o['help']})" if o["help"] else "") for o in opts)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def passes(as_json):
    """List the available passes and their options."""
    from .host import host

    _list_registry(host().passes, as_json, width=20)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def targets(as_json):
    """List the available targets and their options."""
    from .host import host

    _list_registry(host().targets, as_json, width=12, extra=("runtime",))


@main.command("cache")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="The cache (default: $EDGEC_CACHE_DIR or ~/.cache/edgec/artifacts).",
)
@click.option("--clear", is_flag=True, help="Delete every cached compile.")
@click.option(
    "--clear-tuning", is_flag=True, help="Delete the tuning databases too (cpu{tune=N}'s searches run again)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def cache_cmd(cache_dir, clear, clear_tuning, as_json):
    """Show (or --clear) the content-addressed compile cache and its tuning databases."""
    from . import cache

    d = cache_dir or cache.default_dir()
    entries, size = cache.clear(d) if clear else cache.stats(d)
    dbs, db_size = cache.clear_tuning(d) if clear_tuning else cache.tuning_stats(d)
    info = {
        "cache_dir": d,
        "entries": entries,
        "bytes": size,
        "cleared": bool(clear),
        "tuning_databases": dbs,
        "tuning_bytes": db_size,
        "tuning_cleared": bool(clear_tuning),
    }
    if as_json:
        _emit_json(info)
        return
    click.echo(
        f"{d}: {entries} cached compiles, {_human(size)}"
        + ("; cleared" if clear else "")
        + f"; {dbs} tuning databases, {_human(db_size)}"
        + ("; cleared" if clear_tuning else "")
    )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def checks(as_json):
    """List the property checks a search can require (mixed-precision{checks=NAME:ARG;...})."""
    from .host import host

    entries = sorted(host().checks.entries.items())
    if as_json:
        _emit_json(
            [
                {"name": n, "summary": e.obj.summary, "needs_model": e.obj.needs_model, "plugin": e.plugin.distribution}
                for n, e in entries
            ]
        )
        return
    for n, e in entries:
        click.echo(f"{n:<12} {e.obj.summary}")


def _list_registry(reg, as_json: bool, width: int, extra: tuple[str, ...] = ()) -> None:
    """Print a pass or target registry: name, summary, options, providing distribution."""
    entries = sorted(reg.entries.items())
    if as_json:
        _emit_json(
            [
                {
                    "name": n,
                    "summary": e.obj.summary,
                    "options": e.obj.options(),
                    "plugin": e.plugin.distribution,
                    **{k: getattr(e.obj, k) for k in extra},
                }
                for n, e in entries
            ]
        )
        return
    for n, e in entries:
        click.echo(f"{n:<{width}} {e.obj.summary}")
        if e.obj.options():
            click.echo(f"{'':<{width}}   options: {_options_text(e.obj)}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def plugins(as_json):
    """List loaded plugins with their distribution and version."""
    from .host import AUTOLOAD_ENV, host

    h = host()
    provided = {}
    for kind, reg in (("pass", h.passes), ("frontend", h.frontends), ("target", h.targets), ("check", h.checks)):
        for n, e in reg.entries.items():
            provided.setdefault(e.plugin.name, []).append(f"{kind}:{n}")
    rows = [
        {
            "name": p.name,
            "module": p.module,
            "distribution": p.distribution,
            "version": p.version,
            "provides": sorted(provided.get(p.name, [])),
        }
        for p in h.plugins
    ]
    if as_json:
        _emit_json({"autoload": h.autoload, "plugins": rows})
        return
    if not h.autoload:
        click.echo(f"(third-party autoload disabled by {AUTOLOAD_ENV})")
    for r in rows:
        click.echo(f"{r['name']:<20} {r['distribution']} {r['version']:<8} {r['module']}")
        click.echo(f"{'':<20}   provides: {', '.join(r['provides']) or '-'}")


if __name__ == "__main__":  # pragma: no cover
    main()
