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
import contextlib
import heapq
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

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


def _smollm2(work: str, samples: int):
    from _results import smollm2_bench

    os.makedirs(os.path.join(work, "smol"), exist_ok=True)
    return smollm2_bench(os.path.join(work, "smol"), max_samples=samples, seq_len=128)


def _cands(bits: str, samples: int) -> list[str]:
    from edgec.plugins.mixed.mixed_precision import MixedPrecision

    mp = MixedPrecision(avg_bits=4.0, bits=bits, group=64, samples=samples)
    return [mp.spec(mp.candidate(b)) for b in mp.widths()]


def cost_rows(work: str, samples: int) -> list[str]:
    """Where a (layer, candidate) evaluation's time goes on SmolLM2, old engine against new, measured one part at a
    time on the same calibration windows."""
    import numpy as np

    from edgec.ir import ReferenceExecutor
    from edgec.plugins.mixed import sensitivity as S

    m, base, ctx, _, _ = _smollm2(work, samples)
    calib = list(ctx.calibration.samples[:samples])
    g = m.graph

    def best(f, n=3):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    free = sorted({n.arg(1).name for n in g if n.op_type == "Linear"})
    t0 = time.perf_counter()
    ex_free = ReferenceExecutor(m, free=free)
    t_free_sess = time.perf_counter() - t0
    t_fwd_free = best(lambda: [ex_free.run(x) for x in calib])
    ex = ReferenceExecutor(m)
    t_fwd = best(lambda: [ex.run(x) for x in calib])
    ref = [[np.asarray(ex.run(x)[o.name], np.float64) for o in g.outputs] for x in calib]
    got = [[r[0] + 1e-3] for r in ref]
    t_cmp_old = best(lambda: _old_compare(ref, got), 2)
    src = S._model_hash(m)[1]
    spec = _cands("4", samples)[0]
    old_ctx_copy = best(lambda: _copy_with_calibration(src, spec, ctx), 1)
    t_copy = best(lambda: S._quantized_weights(src, spec, ctx), 1)
    items = [(n.name, 1, n.arg(1).name, {}) for n in g if n.op_type == "Linear"][:-1]
    hd = S.find_head(m)
    plan = S.plan_groups(m, items, hd[0])
    runs = S._batched(m, calib)
    store = S._Store(1 << 40)
    t0 = time.perf_counter()
    S.capture(m, runs, plan.captured(), store)
    t_capture = time.perf_counter() - t0
    head = S._head(hd, runs, store)
    vals = store.arrays
    t0 = time.perf_counter()
    const = [
        ReferenceExecutor(
            m, capture=st.outputs, capture_only=True, cut={f: vals[f"0/{f}"] for f in st.inputs}, threads=1, spin=False
        )
        for st in plan.stages
    ]
    t_sessions = time.perf_counter() - t0
    mid = len(plan.stages) // 2
    st = plan.stages[mid]
    feeds = {f: vals[f"0/{f}"] for f in st.inputs}
    t_stage = best(lambda: const[mid].run(feeds), 5)
    fr = ReferenceExecutor(m, capture=st.outputs, capture_only=True, cut=feeds, free=st.weights, threads=1, spin=False)
    t_stage_free = best(lambda: fr.run(feeds), 5)

    def chain():
        env: dict = {}
        for s, e in zip(plan.stages, const):
            env.update(e.run({f: env[f] if f in env else vals[f"0/{f}"] for f in s.inputs}))
        return env

    t_chain = best(chain)
    h = chain()[hd[1].name]
    t_head_sub = best(lambda: head.logits(h), 5)
    wfull = np.asarray(hd[2].numpy(), np.float32)
    t_head_full = best(lambda: h @ wfull.T, 3)
    z = head.logits(h)
    r = S._Reference([[z]])
    t_dist = best(lambda: r.distance([[z + 1e-3]]), 5)
    big = S._Reference(ref)
    t_dist_full = best(lambda: big.distance(got), 2)
    store.close()
    tok = sum(int(np.prod(x["input_ids"].shape)) for x in calib)
    return [
        "",
        "## Sensitivity: where the time goes (SmolLM2-135M-Instruct)",
        "",
        f"One (layer, candidate) evaluation over {samples} calibration window(s) of 128 tokens ({tok} tokens), each "
        "part timed alone (best of 3-5) in this run, on this machine's "
        f"{len(os.sched_getaffinity(0))} cores. Old engine: onnxruntime's default threads (2). New engine: its stage "
        "sessions are single-threaded and one group runs on each core (two chains at a time here), so its per-run "
        "figures are one core's:",
        "",
        "| part | old engine s | new engine s |",
        "|---|---:|---:|",
        f"| the whole model, every Linear weight fed per run (free, not prepacked) | {t_fwd_free:.3f} | - |",
        f"| the whole model, weights prepacked (for scale) | {t_fwd:.3f} | - |",
        f"| the 30 stage sessions one after another from the captured block inputs, no head (1 thread) | - | "
        f"{t_chain:.3f} |",
        f"| one stage (a transformer block, 1 thread), weights prepacked / its weights fed | - | {t_stage:.4f} / "
        f"{t_stage_free:.4f} |",
        f"| the head: all {wfull.shape[0]} logits / the {len(head.tokens)}-token subset | (in the forward) / "
        f"{t_head_full:.3f} | {t_head_sub:.4f} |",
        f"| KL + SQNR + cosine over all logits, float64 (old: softmax recomputed per call) | {t_cmp_old:.3f} | "
        f"{t_dist_full:.3f} (new code, same logits) |",
        f"| the same on the subset logits | - | {t_dist:.4f} |",
        "",
        "Once per analysis:",
        "",
        "| part | old engine s | new engine s |",
        "|---|---:|---:|",
        f"| one candidate's quantized copy (`quantize{{bits=4,group=64}}`, rtn) | {old_ctx_copy:.2f} | {t_copy:.2f} |",
        f"| session creation | {t_free_sess:.2f} (one, weights free) | {t_sessions:.2f} (30 stages, prepacked) |",
        f"| capturing the float activations at every stage input | - | {t_capture:.2f} |",
        "",
        "Old engine: every evaluation ran the whole model with all weights fed (no prepacking) and then compared the "
        "49k-way logits in float64, recomputing the float softmax each time; a quantized copy also captured "
        "calibration activations for a report nobody read. New engine: a layer's evaluation runs only the stages from "
        "its group on (the float activations at each stage's input captured once), every stage's weights prepacked "
        "except the group's own; the distance is taken on the float model's most probable tokens (the head computed "
        "for those rows only), with the reference's softmax and float64 copy kept; a copy that needs no data runs "
        "without it. A layer in block k costs (30 - k) stages: on average half the model.",
    ]


def _old_compare(ref, got):
    """The distance as the old engine computed it (float64 over all logits, the float softmax per call)."""
    import numpy as np

    kl, n = 0.0, 0
    for r, g in zip(ref, got):
        a, b = r[0], g[0]
        la = a - a.max(-1, keepdims=True)
        lb = b - b.max(-1, keepdims=True)
        pa = np.exp(la)
        pa /= pa.sum(-1, keepdims=True)
        lpa = la - np.log(np.exp(la).sum(-1, keepdims=True))
        lpb = lb - np.log(np.exp(lb).sum(-1, keepdims=True))
        kl += float(np.sum(pa * (lpa - lpb)))
        n += int(np.prod(a.shape[:-1]))
        for x, y in zip(r, g):
            float(np.sum(x * x)), float(np.sum((x - y) ** 2)), float(np.sum(x * y)), float(np.sum(y * y))
    return kl / n


def _copy_with_calibration(src, spec, ctx):
    """A candidate's quantized copy as the old engine made it: with the calibration data (for the report)."""
    from edgec.ir.passes import PassManager, parse_pipeline
    from edgec.ir.serde import load

    m = load(os.path.join(src, "m"))
    PassManager(parse_pipeline(spec, ctx.passes)).run(m, ctx)


def sensitivity_rows(
    work: str, bits: str, samples: int, runs: list[tuple[str, int]], project: str = "4,8,16"
) -> tuple[list[str], dict]:
    """SmolLM2-135M's per-layer sensitivity (rtn, group 64, ``bits`` candidates, ``samples`` calibration windows of
    128 tokens) serially and on each executor; the tables compared with the serial one."""
    from edgec.api.executor import make_executor
    from edgec.ir.serde import load
    from edgec.plugins.mixed.sensitivity import analyse

    _, base, ctx, _, _ = _smollm2(work, samples)
    cands = _cands(bits, samples)
    rows, tables = [], {}
    timing: dict[str, Any] = {}
    for kind, n in runs:
        with make_executor(kind, n) as ex:
            ctx.executor = ex if (kind, n) != ("local", 1) else None
            t0 = time.perf_counter()
            tasks: list[float] = []  # each group task's time as its worker measured it (progress messages)

            def progress(msg: str, tasks: list[float] = tasks) -> None:
                m = re.search(r"task \d+/\d+ done \(([\d.]+) s\)", msg)
                if m:
                    tasks.append(float(m.group(1)))

            with _timed_groups(timing) if (kind, n) == ("local", 1) else contextlib.nullcontext():
                sens = analyse(load(base), cands, ctx, samples=samples, use_cache=False, progress=progress)
            if (kind, n) == ("ray", 2):
                timing["ray2_tasks"] = tasks
            secs = time.perf_counter() - t0
        tables[(kind, n)] = sens
        rows.append((kind, n, secs, len(sens.layers)))
        print(f"sensitivity {kind} x{n}: {secs:.1f} s", flush=True)
    ctx.executor = None
    serial = rows[0][2]
    first = tables[runs[0]]
    out = [
        "",
        "## Sensitivity on SmolLM2-135M-Instruct: time per executor",
        "",
        f"`analyse` over {rows[0][3]} layers x {len(cands)} candidates ({', '.join(cands)}), {samples} calibration "
        f"window(s) of 128 tokens, cache off, distance: {first.distance}. local x1 is edgec's default (this process); with one worker no executor fans "
        "out (Executor.fans_out), so ray x1 measures the same in-process run, after starting Ray. "
        "Time includes quantizing the candidates' copies (in the driver), capturing the float activations and the "
        "workers' start-up; a worker builds the stage sessions it runs once. Goal: <= 300 s on 2 cores (the old "
        "engine: 2751.6 s for the same 6 x 211 x 4 windows, benchmarks/RESULTS-mixed.md's run; 181.5 s for 2 "
        "candidates x 1 window in this file's previous run).",
        "",
        "| executor | workers | s | speed-up | table identical to serial |",
        "|---|---:|---:|---:|---|",
    ]
    for kind, n, secs, _ in rows:
        same = tables[(kind, n)].table == first.table
        out.append(f"| {kind} | {n} | {secs:.1f} | {serial / secs:.2f}x | {'yes' if same else 'NO'} |")
    out += sensitivity_projection(rows, timing, [int(x) for x in project.split(",")])
    return out, {"base": base, "ctx": ctx, "cands": cands, "sens": first, "seconds": serial, "bits": bits}


@contextlib.contextmanager
def _timed_groups(timing: dict):
    """Records the wall time of the in-process run's group phase (the rest of its wall is the driver's serial
    part)."""
    import edgec.plugins.mixed.sensitivity as sens_mod

    run_groups = sens_mod._run_groups

    def timed_run_groups(*a, **k):
        t = time.perf_counter()
        try:
            return run_groups(*a, **k)
        finally:
            timing["groups_wall"] = time.perf_counter() - t

    sens_mod._run_groups = timed_run_groups
    try:
        yield
    finally:
        sens_mod._run_groups = run_groups


def sensitivity_projection(rows: list, timing: dict, project: list[int]) -> list[str]:
    """The sensitivity's time at N workers from Ray x2's measured group tasks, the in-process run's serial part
    and Ray x2's remaining overhead."""
    walls = {(kind, n): secs for kind, n, secs, _ in rows}
    t = timing.get("ray2_tasks") or []
    if not t or "groups_wall" not in timing or ("ray", 2) not in walls:
        return []
    serial_part = walls[("local", 1)] - timing["groups_wall"]
    over = walls[("ray", 2)] - serial_part - makespan(t, 2)
    out = [
        "",
        "### Projection beyond 2 workers",
        "",
        f"Model: wall(N) = S + C + LPT(t_j, N). t_j: the {len(t)} group tasks' times as Ray x2's workers measured "
        f"them (one core each: sum {sum(t):.1f} s, longest {max(t):.1f} s; a task is one group, its layers x "
        "candidates through the stages after it, the worker's session builds included); S = "
        f"{serial_part:.1f} s, the driver's serial part (quantized copies, float capture, the head's token subset: "
        f"the in-process wall minus its group phase); C = {over:.1f} s, the rest of Ray x2's wall (its wall - S - "
        "LPT(t_j, 2): Ray's start-up, the model and the captured values sent once, the schedule's idle ends), taken "
        "as constant in N; LPT the longest-first schedule (the order the tasks are submitted in).",
        "",
        "| workers (one core each) | projected wall s | projected speed-up vs 1 worker | bound |",
        "|---:|---:|---:|---|",
    ]
    one = serial_part + over + makespan(t, 1)
    for n in [1, 2, *project]:
        w = serial_part + over + makespan(t, n)
        bound = "the longest group" if abs(makespan(t, n) - max(t)) < 1e-9 else "sum / N"
        out.append(f"| {n} | {w:.1f} | {one / w:.2f}x | {bound} |")
    out += [
        "",
        f"The longest group ({max(t):.1f} s: the first transformer block's layers, through all the later stages) "
        "bounds the speed-up; splitting a group's layers across tasks (each task building the same stage sessions) "
        "would lift it at the cost of more session builds.",
    ]
    return out


def gptq_rows(work: str, samples: int, runs: list[tuple[str, int]]) -> list[str]:
    """GPTQ and vq on SmolLM2 in this process and with the solves of each input group's layers as tasks."""
    import hashlib

    from edgec.api.executor import make_executor
    from edgec.ir.passes import PassManager, parse_pipeline
    from edgec.ir.serde import load, save

    _, base, ctx, _, _ = _smollm2(work, samples)
    pipes = [
        f"quantize{{bits=4,group=64,method=gptq,samples={samples}}}",
        f"vq{{dim=2,bits_per_weight=2,samples={samples}}}",
    ]
    res = []
    for pipe in pipes:
        for kind, n in runs:
            with make_executor(kind, n) as ex:
                ctx.executor = ex if (kind, n) != ("local", 1) else None
                m = load(base)
                t0 = time.perf_counter()
                PassManager(parse_pipeline(pipe, ctx.passes)).run(m, ctx)
                secs = time.perf_counter() - t0
            path = os.path.join(work, "layer-tasks.edgec")
            save(m, path)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            res.append((pipe, kind, n, secs, digest))
            print(f"{pipe} {kind} x{n}: {secs:.1f} s", flush=True)
    ctx.executor = None
    out = [
        "",
        "## GPTQ and vq with the layers of one input group as tasks (SmolLM2-135M-Instruct)",
        "",
        f"Each pass on the float model ({samples} windows of 128 tokens). Groups stay in order (each group's input "
        "is captured from the model with the earlier groups quantized, as GPTQ requires); the layers of one group "
        "(q/k/v: 3, gate/up: 2; o and down alone, solved in the driver) are solved at the same time, one task each, "
        "on the executor. A task ships its weight and its Hessian (built in the driver, like the captures and each "
        "layer's report: the serial part). In this process, BLAS already uses both cores for the solves' matrix "
        "products; a worker's solve uses one. Time includes the executors' start-up.",
        "",
        "| pass | executor | workers | s | speed-up | model bytes identical to serial |",
        "|---|---|---:|---:|---:|---|",
    ]
    for pipe in pipes:
        mine = [r for r in res if r[0] == pipe]
        for _, kind, n, secs, digest in mine:
            same = "yes" if digest == mine[0][4] else "NO"
            out.append(f"| `{pipe}` | {kind} | {n} | {secs:.1f} | {mine[0][3] / secs:.2f}x | {same} |")
    return out


def validation_rows(info: dict, samples: int) -> list[str]:
    """The logit-subset distance against KL over the whole vocabulary (the same engine, distance=full): rank
    agreement, and whether the solver picks the same widths at the uniform widths' budgets."""
    import numpy as np
    from scipy.stats import spearmanr

    from edgec.ir.serde import load
    from edgec.plugins.mixed.mixed_precision import MixedPrecision
    from edgec.plugins.mixed.sensitivity import analyse

    t0 = time.perf_counter()
    full = analyse(load(info["base"]), info["cands"], info["ctx"], samples=samples, use_cache=False, distance="full")
    t_full = time.perf_counter() - t0
    sub = info["sens"]
    cands = info["cands"]
    keys = [(w, c) for w in full.layers for c in cands if c in full.table[w]]
    a = np.array([full.table[w][c]["kl"] for w, c in keys])
    b = np.array([sub.table[w][c]["kl"] for w, c in keys])
    rho_all = spearmanr(a, b).statistic
    per_c = []
    for c in cands:
        ws = [w for w in full.layers if c in full.table[w]]
        per_c.append(spearmanr([full.table[w][c]["kl"] for w in ws], [sub.table[w][c]["kl"] for w in ws]).statistic)
    same_order = sum(
        1
        for w in full.layers
        if sorted(full.table[w], key=lambda c: full.table[w][c]["kl"])
        == sorted(sub.table[w], key=lambda c: sub.table[w][c]["kl"])
    )
    out = [
        "",
        "### The logit subset against the whole vocabulary",
        "",
        f"The same analysis with `distance=full` (KL over all the logits: {t_full:.1f} s) against the "
        f"subset ({sub.distance}): Spearman rank correlation of the {len(keys)} (layer, candidate) KL values "
        f"{rho_all:.4f}; per candidate across layers {', '.join(f'{r:.4f}' for r in per_c)}; layers whose "
        f"candidates rank in the same order: {same_order} of {len(full.layers)}. The solver on each table at the "
        "uniform widths' budgets (predicted damage of each allocation on the full-vocabulary table):",
        "",
        "| avg bits budget | layers with the same width | full-table optimum | subset's allocation on the full table | "
        "regret |",
        "|---:|---:|---:|---:|---:|",
    ]
    for avg in (3.406433, 4.406433, 5.406433):
        mp = MixedPrecision(avg_bits=avg, bits=info["bits"], group=64, samples=samples)
        cd = {mp.spec(mp.candidate(b)): b for b in mp.widths()}
        params = sum(full.params.values())
        picks = []
        for t in (full, sub):
            front, labels = mp.front(t, cd)
            k = front.best_within(avg * params / 8)
            if k is not None:
                picks.append({w: labels[i][j] for i, (w, j) in enumerate(zip(t.layers, front.choice(k)))})
        if len(picks) < 2:
            out.append(f"| {avg:.4f} | no allocation fits | | | |")
            continue
        cost = [sum(full.cost(w, p[w], "kl") for w in full.layers) for p in picks]
        same = sum(1 for w in full.layers if picks[0][w] == picks[1][w])
        out.append(
            f"| {avg:.4f} | {same} of {len(full.layers)} | {cost[0]:.4f} | {cost[1]:.4f} | "
            f"{100 * (cost[1] / cost[0] - 1):.2f}% |"
        )
    return out


def mixed_rows(info: dict, samples: int) -> list[str]:
    """``mixed-precision{avg_bits=...}`` end to end on SmolLM2, cache off: sensitivity, solver, quantization."""
    from edgec.ir.passes import PassManager, parse_pipeline
    from edgec.ir.serde import load

    pipe = f"mixed-precision{{avg_bits=3.406433,bits=2:3:4:5:6:8,group=64,samples={samples},cache=false}}"
    m = load(info["base"])
    t0 = time.perf_counter()
    PassManager(parse_pipeline(pipe, info["ctx"].passes)).run(m, info["ctx"])
    secs = time.perf_counter() - t0
    from edgec.plugins.mixed.mixed_precision import REPORT_KEY

    rep = m.reports.get(REPORT_KEY, {})
    print(f"mixed-precision end to end: {secs:.1f} s", flush=True)
    return [
        "",
        "## mixed-precision end to end (SmolLM2-135M-Instruct)",
        "",
        f"`{pipe}` on the float model, in this process: **{secs:.1f} s** (goal <= 600 s; the old engine: 4257.7 s, "
        f"benchmarks/RESULTS-mixed.md). Widths used: {rep.get('histogram')}, {rep.get('avg_bits')} bits per weight.",
    ]


def gguf_cli_rows(work: str) -> list[str]:
    """The command a new user tried (issue 24: killed after 50 minutes at 7.1 GB): ``edgec compile SmolLM2 -t gguf
    -p mixed-precision{size_mb=92,cache=false} --calib TEXT`` in its own process, with GNU time's wall, CPU and
    peak RSS; the file's bytes and the mix chosen."""
    import json
    import shutil
    import subprocess

    from edgec.plugins.llm.bundled import smollm2_path

    from _results import smol_texts

    _, calib = smol_texts(work)
    out_dir = os.path.join(work, "gguf-92")
    pipe = "mixed-precision{size_mb=92,cache=false}"
    cmd = ["edgec", "compile", smollm2_path(), "--target", "gguf", "-p", pipe, "--calib", calib, "-o", out_dir]
    timing = os.path.join(work, "gguf-time.txt")
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", "-o", timing, *cmd, "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    stats = dict(line.strip().rsplit(": ", 1) for line in open(timing) if ": " in line)
    man = json.loads(p.stdout)["manifest"]
    mp = man["mixed_precision"]
    size = sum(f["bytes"] for f in man["files"] if f["path"].endswith(".gguf"))
    shutil.rmtree(out_dir, ignore_errors=True)
    rss_gb = int(stats["Maximum resident set size (kbytes)"]) / 1e6
    print(f"gguf size_mb=92 from the CLI: {wall:.1f} s, {rss_gb:.2f} GB", flush=True)
    return [
        "",
        "## The gguf command a user tried: `mixed-precision{size_mb=92}` on SmolLM2",
        "",
        f"`edgec compile SmolLM2-135M-Instruct.Q4_1.gguf --target gguf -p '{pipe}' --calib "
        "Apache-2.0+MPL-2.0.txt` (the CLI's calibration: 32 windows of 512 tokens), in its own process: "
        f"**{wall:.1f} s** wall ({float(stats['User time (seconds)']):.1f} s user, "
        f"{float(stats['System time (seconds)']):.1f} s system, {stats['Percent of CPU this job got']} of a core: "
        "other jobs on the 2 cores lengthen the wall time, not the CPU time), peak RSS "
        f"**{rss_gb:.2f} GB**. Before: killed "
        "after 1500 s at 7.2 GB (the sensitivities on whole 512-token windows, then the quantizer's output-error "
        "report on all 32 windows); now the sensitivities take each window's first 128 tokens (`seq=128`) and the "
        f"report the sensitivities' windows. File: {size / 1e6:.2f} MB (budget 92 MB); types "
        f"{mp['histogram']}, {mp['avg_bits']} bits per weight.",
    ]


def build_rows(args, work: str) -> list[str]:
    """The edgec build runs on each executor and the projection."""
    t_start = time.time()
    models = args.models.split(",")
    targets = args.targets.split(",")
    lines: list[str] = []
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
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenetv3-small,bert")
    ap.add_argument("--targets", default="cpu,openvino,tensorrt,coreml")
    ap.add_argument("--project", default="4,8,16", help="worker counts to project to")
    ap.add_argument("--sens-bits", default="2:3:4:5:6:8", help="SmolLM2 sensitivity: candidate widths ('' to skip)")
    ap.add_argument("--sens-samples", type=int, default=4, help="SmolLM2 sensitivity: 128-token samples")
    ap.add_argument(
        "--sens-executors", default="localx1,localx2,rayx1,rayx2", help="SmolLM2 sensitivity: executor x workers"
    )
    ap.add_argument("--no-validate", dest="validate", action="store_false", help="skip the distance=full comparison")
    ap.add_argument("--no-mixed", dest="mixed", action="store_false", help="skip mixed-precision end to end")
    ap.add_argument("--no-build", dest="build", action="store_false", help="skip the edgec build runs")
    ap.add_argument("--no-cost", dest="cost", action="store_false", help="skip the sensitivity's cost model")
    ap.add_argument(
        "--no-gguf-cli", dest="gguf_cli", action="store_false", help="skip the gguf size_mb=92 command-line run"
    )
    ap.add_argument(
        "--keep-previous",
        action="store_true",
        help="keep the sections of RESULTS-scale.md this run skips (said at the top of the file)",
    )
    ap.add_argument(
        "--gptq-executors", default="localx1,localx2,rayx2", help="SmolLM2 GPTQ: executor x workers ('' to skip)"
    )
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edgec-scale-")
    sections: dict[str, list[str]] = {}
    if args.build:
        sections["build"] = build_rows(args, work)
    if args.sens_bits:
        sens_runs = [(k, int(n)) for k, n in (r.split("x") for r in args.sens_executors.split(","))]
        rows, info = sensitivity_rows(work, args.sens_bits, args.sens_samples, sens_runs, args.project)
        sections["sensitivity"] = rows
        if args.validate:
            sections["validation"] = validation_rows(info, args.sens_samples)
        if args.mixed:
            sections["mixed"] = mixed_rows(info, args.sens_samples)
        if args.cost:
            sections["cost"] = cost_rows(work, args.sens_samples)
    if args.gguf_cli:
        sections["gguf-cli"] = gguf_cli_rows(work)
    if args.gptq_executors:
        runs = [(k, int(n)) for k, n in (r.split("x") for r in args.gptq_executors.split(","))]
        sections["layer-tasks"] = gptq_rows(work, args.sens_samples, runs)
    lines = ["# Scale: sensitivity, mixed precision and edgec build per executor", ""]
    kept = previous_sections() if args.keep_previous else {}
    if kept:
        lines += [
            f"Sections measured in the last run: {', '.join(sections)}; kept from the file's previous version "
            f"(git log has the commit each was measured at): "
            f"{', '.join(k for k in SECTIONS if k in kept and k not in sections)}.",
            "",
        ]
    for name in SECTIONS:
        if name in sections:
            lines += sections[name]
        elif name in kept:
            lines += kept[name]
    write_results("RESULTS-scale.md", lines)


# RESULTS-scale.md's sections in order, each found by the line it starts with ("" for the build section, which
# follows the title)
SECTIONS = {
    "build": "",
    "sensitivity": "## Sensitivity on SmolLM2-135M-Instruct: time per executor",
    "validation": "### The logit subset against the whole vocabulary",
    "mixed": "## mixed-precision end to end",
    "gguf-cli": "## The gguf command a user tried",
    "cost": "## Sensitivity: where the time goes",
    "layer-tasks": "## GPTQ and vq with the layers of one input group as tasks",
}


def previous_sections() -> dict[str, list[str]]:
    """The sections of the RESULTS-scale.md on disk, by name (for --keep-previous)."""
    path = os.path.join(HERE, "RESULTS-scale.md")
    if not os.path.exists(path):
        return {}
    text = open(path, encoding="utf-8").read().splitlines()
    body = text[2:] if text and text[0].startswith("# ") else text
    if body and body[0].startswith("Sections measured in the last run"):
        body = body[2:]
    starts = []
    for name, head in SECTIONS.items():
        if not head:
            starts.append((0, name))
            continue
        at = next((i for i, line in enumerate(body) if line.startswith(head)), None)
        if at is not None:
            starts.append((at - 1 if at > 0 and body[at - 1] == "" else at, name))
    starts.sort()
    out = {}
    for (a, name), (b, _) in zip(starts, starts[1:] + [(len(body), "")]):
        out[name] = body[a:b]
    return out


if __name__ == "__main__":
    main()
