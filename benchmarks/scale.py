"""Throughput of ``edgec build`` on each executor, and the projection beyond this machine (issue 24, item 5).

    python benchmarks/scale.py [--targets cpu,openvino,tensorrt,coreml] [--models resnet18,mobilenetv3-small,bert]

A plan of 3 models x 4 targets (the example architectures of examples/models, exported to ONNX with seeded
weights; every compile verified on its runtime) is run with the compile cache off:

- ``local`` with 1 worker (one compile after the other, in this process: edgec's default) and with 2 processes;
- ``ray`` with 1 and with 2 workers (a local Ray started for the run; its start-up timed apart).

Each run's artifacts are compared byte for byte with the serial run's (sha256 of every file the manifests
list). The projection to N workers uses the model stated in the output: the measured per-compile times
scheduled longest-first onto N workers, plus the measured per-compile cost of the executor (dispatch, transfer of
arguments and results, process start) and its start-up. Writes benchmarks/RESULTS-scale.md.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# benchmarks/ last on the path: its kernels.py would shadow the `kernels` package that transformers imports
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from _results import export_example, write_results  # noqa: E402 (sibling module)


def makespan(times: list[float], workers: int) -> float:
    """Longest-processing-time-first schedule of ``times`` on ``workers``: the last finish."""
    loads = [0.0] * workers
    heapq.heapify(loads)
    for t in sorted(times, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + t)
    return max(loads)


def sensitivity_rows(work: str, bits: str, samples: int) -> list[str]:
    """SmolLM2-135M's per-layer sensitivity (rtn, group 64, ``bits`` candidates, ``samples`` calibration windows of
    128 tokens) serially, on 2 local processes and on a local Ray of 2 workers; the tables compared."""
    from _results import smollm2_bench

    from edgec.api.executor import make_executor
    from edgec.ir.serde import load
    from edgec.plugins.mixed.mixed_precision import MixedPrecision
    from edgec.plugins.mixed.sensitivity import analyse

    os.makedirs(os.path.join(work, "smol"), exist_ok=True)
    _, base, ctx, _, _ = smollm2_bench(os.path.join(work, "smol"), max_samples=samples, seq_len=128)
    mp = MixedPrecision(avg_bits=4.0, bits=bits, group=64, samples=samples)
    cands = [mp.spec(mp.candidate(b)) for b in mp.widths()]
    rows, tables = [], {}
    for kind, n in (("local", 1), ("local", 2), ("ray", 2)):
        with make_executor(kind, n) as ex:
            ctx.executor = ex if (kind, n) != ("local", 1) else None
            t0 = time.perf_counter()
            sens = analyse(load(base), cands, ctx, samples=samples, use_cache=False)
            secs = time.perf_counter() - t0
        tables[(kind, n)] = sens.table
        rows.append((kind, n, secs, len(sens.layers)))
        print(f"sensitivity {kind} x{n}: {secs:.1f} s", flush=True)
    ctx.executor = None
    serial = rows[0][2]
    out = [
        "",
        "## Sensitivity shards (SmolLM2-135M-Instruct)",
        "",
        f"`analyse` over {rows[0][3]} layers x {len(cands)} candidates ({', '.join(cands)}), {samples} calibration "
        "window(s) of 128 tokens, cache off: serially in this process, then in interleaved layer shards on the "
        "executor (each worker loads the saved model once and computes the float outputs once). Time includes "
        "quantizing the candidates' copies (in the driver) and the workers' start-up.",
        "",
        "| executor | workers | s | speed-up | table identical to serial |",
        "|---|---:|---:|---:|---|",
    ]
    for kind, n, secs, _ in rows:
        same = tables[(kind, n)] == tables[("local", 1)]
        out.append(f"| {kind} | {n} | {secs:.1f} | {serial / secs:.2f}x | {'yes' if same else 'NO'} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenetv3-small,bert")
    ap.add_argument("--targets", default="cpu,openvino,tensorrt,coreml")
    ap.add_argument("--project", default="4,8,16", help="worker counts to project to")
    ap.add_argument("--sens-bits", default="4:8", help="SmolLM2 sensitivity: candidate widths ('' to skip)")
    ap.add_argument("--sens-samples", type=int, default=1, help="SmolLM2 sensitivity: 128-token samples")
    args = ap.parse_args()
    t_start = time.time()
    work = tempfile.mkdtemp(prefix="edgec-scale-")
    models = args.models.split(",")
    targets = args.targets.split(",")
    lines = ["# edgec build: throughput per executor", ""]
    plan = os.path.join(work, "plan.toml")
    with open(plan, "w") as f:
        for name in models:
            f.write(
                f'[[compile]]\nname = "{name}"\nmodel = "{export_example(name, work)}"\ntargets = {targets!r}\nverify = true\n\n'
            )
    runs = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]
    results = {}
    for kind, n in runs:
        # the CLI as a user runs it, in a fresh process: its start-up (imports, processes, Ray) is the difference
        # between the process's wall time and the summary's
        out = os.path.join(work, f"out-{kind}-{n}")
        cmd = ["edgec", "build", plan, "-o", out, "--executor", kind, "--workers", str(n), "--no-cache", "--json"]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        total = time.perf_counter() - t0
        s = json.loads(p.stdout)
        s["startup_s"] = round(total - s["wall_s"], 3)
        s["total_s"] = round(total, 3)
        results[(kind, n)] = s
        print(f"{kind} x{n}: {s['wall_s']:.1f} s (+{s['startup_s']:.1f} s start-up), {s['failed']} failed", flush=True)
        for r in s["rows"]:
            if not r["ok"]:
                print(f"  FAILED {r['name']} -> {r['target']}: {r.get('error', '')[:2000]}", flush=True)
    serial = results[("local", 1)]
    base_files = [r.get("files") for r in serial["rows"]]
    task = [r["seconds"] for r in serial["rows"]]
    lines += [
        f"`python benchmarks/scale.py --models {args.models} --targets {args.targets}` on "
        f"{len(os.sched_getaffinity(0))} cores; the four build runs took {time.time() - t_start:.0f} s. A plan of {len(models)} models x "
        f"{len(targets)} targets ({len(task)} compiles, each verified on its runtime; the example architectures of "
        "examples/models with seeded weights), the compile cache off, each run `edgec build PLAN -o OUT --executor E "
        "--workers N --no-cache --json` in a fresh process. compiles s: the summary's wall time of the compiles; "
        "start-up: the rest of the process's wall time (imports, worker processes, Ray); speed-up against the same "
        "executor with 1 worker. Each worker's runtimes take cores / workers threads.",
        "",
        "| executor | workers | start-up s | compiles s | total s | compiles / min (total) | speed-up (compiles) | "
        "speed-up (total) | failed | artifacts identical to serial |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (kind, n), s in results.items():
        one = results[(kind, 1)]
        same = [r.get("files") for r in s["rows"]] == base_files
        lines.append(
            f"| {kind} | {n} | {s['startup_s']:.1f} | {s['wall_s']:.1f} | {s['total_s']:.1f} | "
            f"{60 * len(task) / s['total_s']:.2f} | {one['wall_s'] / s['wall_s']:.2f}x | "
            f"{one['total_s'] / s['total_s']:.2f}x | {s['failed']} | {'yes' if same else 'NO'} |"
        )
    lines += ["", "Per compile (the serial run):", "", "| model | target | s | result |", "|---|---|---:|---|"]
    for r in serial["rows"]:
        lines.append(
            f"| {r['name']} | {r['target']} | {r['seconds']:.1f} | "
            + (
                "ok, verify " + str(r.get("verify"))
                if r["ok"]
                else "FAILED: " + r.get("error", "").splitlines()[0][:120]
            )
            + " |"
        )
    # the executor's own cost per compile: Ray with one worker runs the same compiles one after the other
    ray1 = results[("ray", 1)]
    overhead = max(0.0, (ray1["wall_s"] - sum(task)) / len(task))
    startup = results[("ray", 2)]["startup_s"]
    lines += [
        "",
        "## Projection",
        "",
        f"Model: wall(N) = start-up + LPT(t_i + o, N), where t_i are the {len(task)} measured serial compile times "
        f"(sum {sum(task):.1f} s, longest {max(task):.1f} s), o = {overhead:.2f} s is Ray's measured cost per "
        "compile ((wall of Ray x1 - sum t_i) / compiles: dispatch, argument and result transfer; a worker process "
        f"imports edgec once), start-up = {startup:.1f} s (a local Ray; a running cluster's is a connection), and "
        "LPT the longest-first schedule onto N workers. Compiles are independent and read only the model file "
        "(shared path), so there is no other communication. The model assumes one core per worker, as each "
        "worker here has; a compile's own threads (LLVM, the runtimes' verification) are not counted.",
        "",
        "| workers | projected wall s | projected speed-up | bound |",
        "|---:|---:|---:|---|",
    ]
    base = startup + makespan([t + overhead for t in task], 1)
    for n in [1, 2] + [int(x) for x in args.project.split(",")]:
        w = startup + makespan([t + overhead for t in task], n)
        bound = "the longest compile" if n >= len(task) or abs(w - startup - max(task) - overhead) < 1e-6 else "sum / N"
        lines.append(f"| {n} | {w:.1f} | {base / w:.2f}x | {bound} |")
    measured2 = results[("ray", 1)]["wall_s"] / results[("ray", 2)]["wall_s"]
    lines += [
        "",
        f"Measured Ray 2 vs 1 worker: {measured2:.2f}x (projected "
        f"{makespan([t + overhead for t in task], 1) / makespan([t + overhead for t in task], 2):.2f}x without start-up).",
        "",
        "Not measured here yet (issue 24 item 1): sensitivity and mixed-precision times on SmolLM2 before and after "
        "the per-layer cached-activation evaluation, and their sharding on the executors.",
    ]
    if args.sens_bits:
        lines += sensitivity_rows(work, args.sens_bits, args.sens_samples)
    write_results("RESULTS-scale.md", lines)


if __name__ == "__main__":
    main()
