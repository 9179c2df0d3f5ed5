"""``edgec bench OUT``: an artifact's latency, throughput and memory on its own runtime.

The measurement runs in a fresh Python process (not forked), so that its peak resident set is the runtime's:
Python, numpy, edgec and the runtime library, with the artifact loaded and run, and nothing the caller did
before. The target loads the artifact once (:meth:`edgec.target.Target.runner`); the child then runs ``warmup``
inferences, and ``runs`` timed ones. With ``compare="onnxruntime"`` the original ONNX model runs on
onnxruntime's CPU provider in the same child, interleaved with the artifact in alternating blocks of runs, at
the same thread count: the machine's noise falls on both alike, and the ratio is the figure to quote.

A simulated runtime's artifact (Hexagon under qemu) reports the cost figure the simulator counts (packets per
inference), never its time. A language model's artifact (a target with
:meth:`~edgec.target.Target.llm_speed`, e.g. gguf on llama.cpp) is measured as one: prefill and decode tokens
per second.

Inputs are made from the manifest's input list: floats standard normal (seeded), integers and booleans zero
(a valid token id or index for any vocabulary).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .errors import BadInputError, EdgecError, UnsupportedError, UsageError

COMPARE = ("onnxruntime",)
BLOCKS = 5  # --compare: the runs of each contender in this many alternating blocks
IDLE_S = 0.2  # --compare: the pause before each block, long enough for the other pool's threads to stop spinning

_MS = {"type": "number", "minimum": 0}
_LATENCY = {
    "type": "object",
    "required": ["median", "p90", "p99", "min", "mean"],
    "properties": {k: _MS for k in ("median", "p90", "p99", "min", "mean")},
}
_COMMON = ["output", "target", "runtime", "threads", "kind", "rss_before_load_mb", "peak_rss_mb"]
#: JSON Schema of the record ``edgec bench --json`` prints (beside ``"ok": true``): one of three kinds.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": _COMMON,
    "properties": {
        "output": {"type": "string"},
        "target": {"type": "string"},
        "runtime": {"type": "string"},
        "threads": {"type": "integer", "minimum": 1},
        "kind": {"enum": ["model", "language-model", "simulated"]},
        "rss_before_load_mb": {"type": ["number", "null"]},
        "peak_rss_mb": {"type": ["number", "null"]},
    },
    "oneOf": [
        {
            "properties": {
                "kind": {"const": "model"},
                "latency_ms": _LATENCY,
                "throughput_per_s": {"type": "number", "exclusiveMinimum": 0},
                "batch": {"type": "integer", "minimum": 0},
                "runs": {"type": "integer", "minimum": 1},
                "warmup": {"type": "integer", "minimum": 0},
                "inputs": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}},
                "latency_samples_ms": {"type": "array", "items": _MS},
                "compare": {
                    "type": "object",
                    "required": ["runtime", "latency_ms", "median_ratio"],
                    "properties": {"latency_ms": _LATENCY, "median_ratio": {"type": "number", "exclusiveMinimum": 0}},
                },
            },
            "required": ["latency_ms", "latency_samples_ms", "throughput_per_s", "batch", "runs", "warmup", "inputs"],
        },
        {
            "properties": {
                "kind": {"const": "language-model"},
                "prefill_tokens_per_s": {"type": "number", "exclusiveMinimum": 0},
                "decode_tokens_per_s": {"type": "number", "exclusiveMinimum": 0},
                "decode_ms_per_token": {"type": "number", "exclusiveMinimum": 0},
                "prompt_tokens": {"type": "integer", "minimum": 1},
                "new_tokens": {"type": "integer", "minimum": 1},
            },
            "required": [
                "prefill_tokens_per_s",
                "decode_tokens_per_s",
                "decode_ms_per_token",
                "prompt_tokens",
                "new_tokens",
            ],
        },
        {
            "properties": {
                "kind": {"const": "simulated"},
                "simulator": {"type": "string"},
                "packets_per_inference": {"type": "integer", "minimum": 1},
                "harness_packets": {"type": "integer", "minimum": 0},
            },
            "required": ["simulator", "packets_per_inference"],
        },
    ],
}


def bench(
    output: str,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    compare: str | None = None,
    model: str | None = None,
    input_shapes: Mapping[str, Any] | None = None,
    prompt_tokens: int = 128,
    new_tokens: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure the artifact in ``output`` (see the module's docstring); returns the record ``edgec bench --json``
    prints."""
    from .build import parse_input_shapes
    from .verify import manifest_files, read_manifest, source_model

    if runs < 1 or warmup < 0 or (threads is not None and threads < 1) or prompt_tokens < 1 or new_tokens < 1:
        raise UsageError("--runs, --threads, --prompt-tokens and --new-tokens must be positive, --warmup >= 0")
    if compare is not None and compare not in COMPARE:
        raise UsageError(f"--compare {compare!r}: edgec compares with {', '.join(COMPARE)}")
    manifest = read_manifest(output)
    manifest_files(output, manifest)
    source = None
    if compare is not None:
        source, name = source_model(output, manifest, model)
        if source is None:
            raise UsageError(
                f"--compare {compare} runs the original model ({name or 'unknown'}), which was not found beside "
                f"{output} or here; pass it with --model"
            )
    return bench_artifact(
        output,
        manifest,
        runs=runs,
        warmup=warmup,
        threads=threads,
        compare=compare,
        source=source,
        shapes=parse_input_shapes(input_shapes),
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        seed=seed,
    )


def bench_artifact(
    output: str,
    manifest: Mapping[str, Any],
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    compare: str | None = None,
    source: str | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    prompt_tokens: int = 128,
    new_tokens: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure the artifact in ``output`` described by ``manifest`` (its contents: ``edgec compile --bench``
    measures before the manifest is written) in a fresh child process."""
    job = {
        "output": os.path.abspath(output),
        "manifest": manifest,
        "runs": runs,
        "warmup": warmup,
        "threads": threads or len(os.sched_getaffinity(0)),
        "compare": compare,
        "source": None if source is None else os.path.abspath(source),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "seed": seed,
        "shapes": dict(shapes or {}),
    }
    res = _run_child(job)
    if "error" in res:
        raise _error(res["error"])
    return res


def _run_child(job: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`_child` in a fresh interpreter (not a multiprocessing child, which would import the caller's
    main module again), the job in on stdin, the record back through a file (a runtime may print on stdout)."""
    env = {**os.environ, "TVM_NUM_THREADS": str(job["threads"]), "OMP_NUM_THREADS": str(job["threads"])}
    fd, result = tempfile.mkstemp(prefix="edgec-bench-", suffix=".json")
    os.close(fd)
    try:
        r = subprocess.run(
            [sys.executable, "-c", "from edgec.bench import _child; _child()"],
            input=json.dumps({**job, "result": result}),
            capture_output=True,
            text=True,
            env=env,
            cwd=os.path.dirname(result),  # `python -c` puts its cwd first on sys.path: a neutral one
        )
        if r.returncode != 0:
            tail = " ".join(r.stderr.strip().splitlines()[-3:])[-600:]
            raise UnsupportedError(
                f"the runtime crashed while running {job['output']} (the benchmark process exited {r.returncode}): "
                f"{tail or 'no message'}"
            )
        with open(result) as f:
            out: dict[str, Any] = json.load(f)
        return out
    finally:
        os.unlink(result)


def _child() -> None:
    """The benchmark process's entry point: the job from stdin, the record (or the error) into its file."""
    job = json.load(sys.stdin)
    res = _measure(job)
    with open(job["result"], "w") as f:
        json.dump(res, f)


def _error(e: dict[str, Any]) -> EdgecError:
    """The child's EdgecError, raised again in the parent as its own class (by kind), with its exit code."""
    classes: dict[str, type[EdgecError]] = {}
    todo: list[type[EdgecError]] = [EdgecError]
    while todo:
        c = todo.pop()
        classes.setdefault(c.kind, c)
        todo.extend(c.__subclasses__())
    err = classes.get(e["kind"], EdgecError)(e["message"])
    err.exit_code, err.kind = e["exit_code"], e["kind"]
    return err


def compile_bench(output: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``edgec compile --bench``: the bench record of the artifact just built (its defaults, no comparison), or
    ``{"ran": false, "reason": ...}`` where it cannot be measured (its runtime is not here, or failed: that does
    not fail the compile, whose artifact --verify judges; the manifest and the account say why)."""
    try:
        rec = bench_artifact(output, manifest)
    except EdgecError as e:
        return {"ran": False, "reason": str(e)}
    rec.pop("output", None)  # the build's scratch directory
    return {"ran": True, **rec}


def summary(rec: Mapping[str, Any]) -> str:
    """One line for ``edgec compile --bench``'s account."""
    if not rec.get("ran", True):
        return f"bench: not run: {rec['reason']}"
    if rec["kind"] == "simulated":
        return f"bench: {rec['packets_per_inference']} packets per inference under {rec['simulator']}"
    if rec["kind"] == "language-model":
        return (
            f"bench: prefill {rec['prefill_tokens_per_s']:.1f} tokens/s, decode {rec['decode_tokens_per_s']:.1f} "
            f"tokens/s on {rec['runtime']}"
        )
    lat = rec["latency_ms"]
    return (
        f"bench: median {lat['median']:.3f} ms, p90 {lat['p90']:.3f}, p99 {lat['p99']:.3f} on {rec['runtime']} "
        f"({rec['threads']} threads), peak RSS {rec['peak_rss_mb']} MB"
    )


def _measure(job: dict[str, Any]) -> dict[str, Any]:
    """In the benchmark process (TVM_NUM_THREADS / OMP_NUM_THREADS set before any runtime starts its pool): load,
    warm up, time; an EdgecError comes back as data, raised again in the caller."""
    try:
        return _measure_in_child(job)
    except EdgecError as e:
        return {"error": {"message": str(e), "exit_code": e.exit_code, "kind": e.kind}}
    except Exception as e:  # noqa: BLE001 - a runtime's own exception (TVMError, RuntimeError, ...) loading or running
        first = (str(e).strip().splitlines() or [""])[0][:400]
        err = UnsupportedError(f"the runtime failed on {job['output']}: {type(e).__name__}: {first}")
        return {"error": {"message": str(err), "exit_code": err.exit_code, "kind": err.kind}}


def _measure_in_child(job: dict[str, Any]) -> dict[str, Any]:
    from .build import parse_target

    manifest = job["manifest"]
    target = parse_target(manifest["target"]["spec"])
    files = [f["path"] for f in manifest["files"]]
    rec: dict[str, Any] = {
        "output": job["output"],
        "target": manifest["target"]["spec"],
        "runtime": target.runtime,
        "threads": job["threads"],
        "rss_before_load_mb": _rss_mb("VmRSS"),
    }
    llm = target.llm_speed(job["output"], files, job["prompt_tokens"], job["new_tokens"], job["threads"])
    if llm is not None:
        rec["kind"] = "language-model"
        rec.update(llm)
        rec["peak_rss_mb"] = _rss_mb("VmHWM")
        return rec
    feeds = make_feeds(manifest.get("inputs") or [], job["seed"], job["shapes"])
    cost = target.simulated_cost(job["output"], files, feeds)
    if cost is not None:
        rec["kind"] = "simulated"
        rec.update(cost)
        rec["peak_rss_mb"] = None  # the simulator's process, not this one
        return rec
    rec["kind"] = "model"
    rec.update(_time_model(target, job, files, feeds))
    rec["peak_rss_mb"] = _rss_mb("VmHWM")
    return rec


def _time_model(target: Any, job: dict[str, Any], files: list[str], feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Latency of the artifact (and of the original model on onnxruntime, interleaved), per inference."""
    names = [i["name"] for i in job["manifest"].get("inputs") or []]
    fn = target.runner(job["output"], files, names, job["threads"])
    contenders: dict[str, Callable[[], Any]] = {"artifact": lambda: fn(feeds)}
    if job["compare"]:
        contenders["onnxruntime"] = _onnxruntime(job["source"], feeds, job["threads"])
    for _ in range(job["warmup"]):
        for run in contenders.values():
            run()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    # Interleaved in blocks, not call by call: a runtime keeps its thread pool spinning for a while after a call,
    # so alternating single calls would make each fight the other's idle threads. Each block starts after a pause
    # (IDLE_S) and with one untimed call of its contender.
    blocks = min(BLOCKS, job["runs"]) if len(contenders) > 1 else 1
    for b in range(blocks):
        n = job["runs"] // blocks + (b < job["runs"] % blocks)
        for k, run in contenders.items():
            if blocks > 1:
                time.sleep(IDLE_S)  # the other runtime's pool threads stop spinning and sleep
                run()
            for _ in range(n):
                t0 = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - t0)
    batch = _batch(feeds)
    out: dict[str, Any] = {"runs": job["runs"], "warmup": job["warmup"], "batch": batch, "inputs": _shapes(feeds)}
    out["latency_ms"] = latency_stats(times["artifact"])
    out["latency_samples_ms"] = [round(t * 1e3, 4) for t in times["artifact"]]  # in run order, for the report's plot
    out["throughput_per_s"] = round(batch / float(np.median(times["artifact"])), 3)
    if job["compare"]:
        out["compare"] = {
            "runtime": job["compare"],
            "latency_ms": latency_stats(times["onnxruntime"]),
            "median_ratio": round(float(np.median(times["artifact"]) / np.median(times["onnxruntime"])), 3),
        }
    return out


def latency_stats(seconds: list[float]) -> dict[str, float]:
    """Median, p90, p99, min and mean of per-inference times, in milliseconds."""
    ms = np.asarray(seconds, np.float64) * 1e3
    q = np.percentile(ms, [50, 90, 99])
    return {
        "median": round(float(q[0]), 4),
        "p90": round(float(q[1]), 4),
        "p99": round(float(q[2]), 4),
        "min": round(float(ms.min()), 4),
        "mean": round(float(ms.mean()), 4),
    }


def make_feeds(
    inputs: list[dict[str, Any]], seed: int, shapes: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, np.ndarray]:
    """One input batch from the manifest's input list: floats standard normal, integers and booleans zero. A
    dynamic dimension takes its size from ``shapes`` (``--input-shape``), else 1."""
    from .ir.dtypes import DType

    rng = np.random.default_rng(seed)
    shapes = dict(shapes or {})
    unknown = set(shapes) - {i["name"] for i in inputs}
    if unknown:
        raise UsageError(f"--input-shape names no input of this artifact: {', '.join(sorted(unknown))}")
    feeds = {}
    for i in inputs:
        shape = _shape(i["name"], list(i.get("shape") or []), shapes.get(i["name"]))
        try:
            dt = DType.from_short(i.get("stored_as") or i["dtype"])
        except (KeyError, ValueError, TypeError):
            raise BadInputError(f"the manifest's input {i['name']!r} has no element type edgec knows") from None
        if dt.is_float:
            feeds[i["name"]] = rng.standard_normal(shape).astype(dt.numpy)
        else:
            feeds[i["name"]] = np.zeros(shape, dt.numpy)
    return feeds


def _shape(name: str, declared: list[Any], given: tuple[int, ...] | None) -> tuple[int, ...]:
    """The shape to time input ``name`` at: ``given`` where it fits the declared one, else the declared one with
    every dynamic dim 1."""
    fixed = [isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in declared]
    if given is None:
        return tuple(d if ok else 1 for d, ok in zip(declared, fixed))
    if len(given) != len(declared) or any(ok and g != d for g, d, ok in zip(given, declared, fixed)):
        raise UsageError(
            f"--input-shape {name}={'x'.join(map(str, given))} does not fit the artifact's input shape {declared}"
        )
    return tuple(given)


def _onnxruntime(source: str, feeds: Mapping[str, np.ndarray], threads: int) -> Callable[[], Any]:
    """The original ONNX model on onnxruntime's CPU provider, ``threads`` intra-op threads, all optimizations."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UnsupportedError("--compare onnxruntime needs onnxruntime (pip install onnxruntime)") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types on any load failure
        raise UnsupportedError(f"onnxruntime cannot load {source}: {str(e).splitlines()[0][:300]}") from None
    wanted = {i.name for i in sess.get_inputs()}
    ort_feeds = {k: v for k, v in feeds.items() if k in wanted}
    missing = wanted - set(ort_feeds)
    if missing:
        raise UnsupportedError(
            f"the original model takes inputs the artifact does not ({', '.join(sorted(missing))}): the two do "
            "not compare"
        )
    return lambda: sess.run(None, ort_feeds)


def _batch(feeds: Mapping[str, np.ndarray]) -> int:
    """The leading dimension of the first input of rank >= 1 (1 when there is none)."""
    for v in feeds.values():
        if v.ndim:
            return int(v.shape[0])
    return 1


def _shapes(feeds: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in feeds.items()}


def _rss_mb(field: str) -> float | None:
    """This process's resident set (VmRSS) or its peak so far (VmHWM), in MB, from /proc (None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def text(rec: dict[str, Any]) -> str:
    """The human-readable account of a bench record."""
    head = f"{rec['output']}  ({rec['target']} on {rec['runtime'] or 'its runtime'}, {rec['threads']} threads)"
    lines = [head]
    if rec["kind"] == "simulated":
        lines.append(
            f"{rec['packets_per_inference']} packets per inference under {rec['simulator']} ({rec['arch']}; the "
            f"runner's own {rec['harness_packets']} not counted). No time: a simulator's says nothing of the device."
        )
        return "\n".join(lines)
    if rec["kind"] == "language-model":
        lines.append(
            f"prefill: {rec['prefill_tokens_per_s']:.1f} tokens/s ({rec['prompt_tokens']} tokens)   decode: "
            f"{rec['decode_tokens_per_s']:.1f} tokens/s ({rec['new_tokens']} tokens, "
            f"{rec['decode_ms_per_token']:.2f} ms per token)"
        )
    else:
        lat = rec["latency_ms"]
        lines.append(
            f"latency (ms, {rec['runs']} runs after {rec['warmup']} warm-up): median {lat['median']:.3f}  "
            f"p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  min {lat['min']:.3f}"
        )
        lines.append(f"throughput: {rec['throughput_per_s']:.2f} samples/s at batch {rec['batch']}")
        if "compare" in rec:
            c = rec["compare"]
            lines.append(
                f"{c['runtime']} (same process, alternating blocks): median {c['latency_ms']['median']:.3f} ms; "
                f"the artifact takes {c['median_ratio']:.3f}x its time"
            )
    lines.append(
        f"peak RSS of the runtime process: {rec['peak_rss_mb']} MB (before loading: {rec['rss_before_load_mb']} MB)"
    )
    return "\n".join(lines)
