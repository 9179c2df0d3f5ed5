"""Quantization benchmark: rtn / mse / gptq / awq at 8, 4 and 3 bits on a transformer encoder and a CNN.

For each model and setting: weight bytes, output error of the whole model against fp32 on held-out
inputs (SQNR in dB and cosine similarity, through the reference executor), the wall time of the
quantize pass (in a fresh process, without tracemalloc), and its peak Python-heap allocation (tracemalloc,
which sees numpy buffers) relative to the model's fp32 weight size. All settings run in this one process on the same inputs.

    python benchmarks/quantization.py [--calib-samples 8]

Writes benchmarks/RESULTS-quantization.md and prints the same table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc

import numpy as np

from _results import example_ir, write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)


METHODS = ("rtn", "mse", "gptq", "awq")
BITS = (8, 4, 3)


def prepare(name: str, work: str, n_calib: int):
    from edgec import ir
    from edgec.calibration import CalibrationSet

    model = example_ir(name, work)
    rng = np.random.default_rng(0)

    def sample():
        if name == "bert":
            return {"input_ids": rng.integers(0, 1000, (1, 16)), "attention_mask": np.ones((1, 16), np.int64)}
        return {"image": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}

    calib = CalibrationSet([sample() for _ in range(n_calib)], "seeded synthetic")
    held = [sample() for _ in range(4)]
    text = ir.print_model(model)
    return text, calib, held


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def evaluate(text: str, pipeline: str, calib, held, ref_outs):
    from edgec import ir
    from edgec.host import host
    from edgec.ir.passes import PassContext, PassManager, parse_pipeline

    model = ir.parse_model(text)
    fp32_bytes = model.size_bytes()
    tracemalloc.start()
    t = time.perf_counter()
    PassManager(parse_pipeline(pipeline, host().passes.as_dict())).run(model, PassContext(calibration=calib))
    wall = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ex = ir.ReferenceExecutor(model)
    out = model.graph.outputs[0].name
    num = den = dot = n1 = n2 = 0.0
    for feeds, ref in zip(held, ref_outs):
        y = ex.run(feeds)[out].astype(np.float64).ravel()
        r = ref.astype(np.float64).ravel()
        num += np.sum((y - r) ** 2)
        den += np.sum(r**2)
        dot += y @ r
        n1 += y @ y
        n2 += r @ r
    return {
        "bytes": model.size_bytes(),
        "sqnr": 10 * np.log10(den / num) if num > 0 else float("inf"),
        "cos": dot / np.sqrt(n1 * n2),
        "wall": wall,
        "peak_x_fp32": peak / fp32_bytes,
    }


def _warm_up(ir_path: str, calib) -> None:
    """Touch the libraries' one-time, model-independent memory before the baseline: OpenBLAS's per-thread
    GEMM buffers, LAPACK, and an onnxruntime session (its kernels and thread pools), on a tiny problem."""
    from scipy.linalg import blas, lapack

    from edgec import ir
    from edgec.api.capture import Stream, trim_heap

    a = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    h = blas.sgemm(1.0, a, a, trans_a=True)
    h[np.diag_indices(512)] += 1.0
    lapack.spotrf(h)
    m = ir.load(ir_path)
    Stream(m, calib.samples[:1]).capture(list(m.graph)[0].outputs[0])  # the first node only
    del a, h, m
    trim_heap()


def child(ir_path: str, calib_path: str, pipeline: str) -> None:
    """In a fresh process: peak RSS rise of loading the model (memory-mapped) and running the pass, over an
    interpreter that has already imported everything and warmed up BLAS and onnxruntime."""
    import json

    import onnxruntime  # noqa: F401  (imported before the baseline, like every other library)
    import scipy.linalg  # noqa: F401

    from edgec import ir
    from edgec.calibration import CalibrationSet
    from edgec.host import host
    from edgec.ir.passes import PassContext, PassManager, parse_pipeline

    reg = host().passes.as_dict()
    with np.load(calib_path) as z:
        arrays = {k: z[k] for k in z.files}
    n = len(next(iter(arrays.values())))
    calib = CalibrationSet([{k: v[i] for k, v in arrays.items()} for i in range(n)], "bench")
    _warm_up(ir_path, calib)
    rss0 = _rss_kb("VmRSS")
    model = ir.load(ir_path)
    fp32 = model.size_bytes()
    t = time.perf_counter()
    PassManager(parse_pipeline(pipeline, reg)).run(model, PassContext(calibration=calib))
    wall = time.perf_counter() - t
    print(json.dumps({"rss_x_fp32": (_rss_kb("VmHWM") - rss0) * 1024 / fp32, "wall_s": wall}))


def rss_in_child(text: str, calib, pipeline: str, work: str) -> dict:
    import json
    import subprocess

    from edgec import ir

    path = os.path.join(work, "model.edgec")
    if not os.path.exists(path):
        ir.save(ir.parse_model(text), path)
        np.savez(
            os.path.join(work, "calib.npz"), **{k: np.stack([s[k] for s in calib.samples]) for k in calib.samples[0]}
        )
    r = subprocess.run(
        [sys.executable, __file__, "--child", path, os.path.join(work, "calib.npz"), pipeline],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(f"child failed for {pipeline}:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib-samples", type=int, default=8)
    ap.add_argument("--models", default="bert,resnet18")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from edgec import ir

    lines = [
        "# Quantization benchmark",
        "",
        f"`python benchmarks/quantization.py --calib-samples {args.calib_samples}`: random-weight models "
        "(examples/models), seeded synthetic calibration and held-out inputs (4).",
        "Output SQNR / cosine: whole-model output vs fp32 on held-out inputs (reference executor). Bits apply to",
        "conv/linear layers (8/4: per channel; 4/3 bits on Linear: groups of 32); the embedding and output head",
        "stay 8-bit (defaults). Peak = tracemalloc peak during the pass / fp32 weight bytes (numpy and Python",
        "buffers); RSS = in a fresh process with every library imported and warmed up (OpenBLAS buffers, LAPACK,",
        "an onnxruntime session on the first node: one-time costs that do not grow with the",
        "model), the rise of peak resident memory from loading the model (memory-mapped .edgec) through the end",
        "of the pass / fp32 weight bytes: it counts the model itself, the quantized codes, GPTQ's K x K Hessian",
        "and onnxruntime's copies while capturing activations. Pass s = wall time of the pass in that fresh",
        "process (no tracemalloc, which slows every numpy allocation).",
        "",
        "| model | bits | method | weights MB | output SQNR dB | cosine | pass s | peak / fp32 | RSS / fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            os.makedirs(os.path.join(work, name))
            text, calib, held = prepare(name, work, args.calib_samples)
            base = ir.parse_model(text)
            ex = ir.ReferenceExecutor(base)
            ref = [ex.run(f)[base.graph.outputs[0].name] for f in held]
            lines.append(f"| {name} | 32 | fp32 | {base.size_bytes() / 1e6:.2f} | | | | | |")
            for bits in BITS:
                for method in METHODS:
                    group = ",group=32" if bits < 8 and name == "bert" else ""
                    pipe = f"quantize{{bits={bits},method={method}{group}}}"
                    r = evaluate(text, pipe, calib, held, ref)
                    child_r = rss_in_child(text, calib, pipe, os.path.join(work, name))
                    # The pass's wall time is the child's: tracemalloc (on during evaluate) slows every
                    # numpy allocation and would bill that to the method.
                    r["rss_x_fp32"], r["wall"] = child_r["rss_x_fp32"], child_r["wall_s"]
                    lines.append(
                        f"| {name} | {bits} | {method} | {r['bytes'] / 1e6:.2f} | {r['sqnr']:.2f} | "
                        f"{r['cos']:.6f} | {r['wall']:.1f} | {r['peak_x_fp32']:.2f} | "
                        f"{r['rss_x_fp32']:.2f} |"
                    )
                    print(lines[-1], file=sys.stderr)
    write_results("RESULTS-quantization.md", lines)


if __name__ == "__main__":
    main()
