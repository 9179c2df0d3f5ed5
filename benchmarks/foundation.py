"""Foundation benchmark: import + compile wall time and peak RSS, and artifact latency beside onnxruntime.

For ResNet-18, MobileNetV3-Small and the BERT-style encoder (random weights, examples/models):
  * each compile runs in its own process (ONNX and PyTorch .pt2 inputs), so its peak RSS is its own;
  * latency: the cpu target's TVM library and onnxruntime on the original ONNX file, same inputs,
    measured in this one process, interleaved, median over repeats.

    python benchmarks/foundation.py [--image-size 224] [--repeats 30]

Writes benchmarks/RESULTS-foundation.md and prints the same table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

from _results import write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples", "models"))


def child(src: str, out: str) -> None:
    """Compile one model (in a fresh process) and print timings and peak RSS as JSON."""
    t0 = time.perf_counter()
    import edgec

    t_imp = time.perf_counter() - t0
    res = edgec.compile(src, target="cpu{mcpu=native}", output=out, use_cache=False)
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tm = res.timings_s
    print(
        json.dumps(
            {
                "python_import_s": t_imp,
                "model_import_s": tm["import"],
                "passes_s": tm["passes"],
                "emit_s": tm["emit"],
                "total_s": total,
                "peak_rss_mb": rss,
            }
        )
    )


def export(name: str, workdir: str, image_size: int):
    import torch

    import architectures

    m, ex, names = architectures.build(name, image_size=image_size)
    onnx_path = os.path.join(workdir, f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, ex, onnx_path, dynamo=False, opset_version=17, input_names=names, output_names=["out"])
    pt2 = os.path.join(workdir, f"{name}.pt2")
    torch.export.save(torch.export.export(m, ex), pt2)
    return onnx_path, pt2, {n: t.numpy() for n, t in zip(names, ex)}


def latency(lib_dir: str, onnx_path: str, feeds: dict, repeats: int) -> tuple[float, float]:
    import numpy as np
    import onnxruntime as ort

    from edgec.targets.cpu import use_all_cores

    use_all_cores()  # the same thread count onnxruntime uses
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(os.path.join(lib_dir, "model.so")), tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(v)) for v in feeds.values()]
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    for _ in range(3):  # warm-up
        vm["main"](*args)
        sess.run(None, feeds)
    t_tvm, t_ort = [], []
    # Alternating blocks, not alternating calls: both runtimes keep their thread pools spinning for a
    # while after a call, so call-by-call interleaving makes each one fight the other's idle threads.
    for _ in range(3):
        for fn, acc in ((lambda: vm["main"](*args), t_tvm), (lambda: sess.run(None, feeds), t_ort)):
            fn()
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t)
    return statistics.median(t_tvm) * 1e3, statistics.median(t_ort) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--child", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    import platform

    import architectures

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in architectures.NAMES:
            onnx_path, pt2, feeds = export(name, work, args.image_size)
            comp = {}
            for kind, src in (("onnx", onnx_path), ("torch", pt2)):
                out = os.path.join(work, f"{name}.{kind}.cpu")
                r = subprocess.run([sys.executable, __file__, "--child", src, out], capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(f"compile of {src} failed:\n{r.stderr[-3000:]}")
                comp[kind] = json.loads(r.stdout.strip().splitlines()[-1])
            tvm_ms, ort_ms = latency(os.path.join(work, f"{name}.onnx.cpu"), onnx_path, feeds, args.repeats)
            rows.append((name, comp, tvm_ms, ort_ms))
            print(f"{name}: done", file=sys.stderr)
    shape = f"images 1x3x{args.image_size}x{args.image_size}; BERT seq 16, hidden 256, 4 layers"
    lines = [
        "# Foundation benchmark",
        "",
        f"`python benchmarks/foundation.py --image-size {args.image_size} --repeats {args.repeats}` on "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {shape}.",
        "Compile = `edgec.compile(..., target='cpu{mcpu=native}')` in a fresh process (import + cleanup passes + TVM build);",
        "peak RSS is that process's maximum resident set. Latency = median over 3 alternating blocks of runs, same inputs,",
        "TVM library from edgec vs onnxruntime (default graph optimizations) on the original ONNX file.",
        "",
        "| model | from | model import s | passes s | TVM build s | total s | peak RSS MB | edgec/TVM ms | onnxruntime ms | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, comp, tvm_ms, ort_ms in rows:
        for kind, c in comp.items():
            lat = f"{tvm_ms:.2f} | {ort_ms:.2f} | {tvm_ms / ort_ms:.2f}x" if kind == "onnx" else "| |"
            lines.append(
                f"| {name} | {kind} | {c['model_import_s']:.2f} | {c['passes_s']:.2f} | {c['emit_s']:.2f} | "
                f"{c['total_s']:.2f} | {c['peak_rss_mb']:.0f} | {lat} |"
            )
    lines += [
        "",
        "The cpu target uses edgec's generic schedules (parallel outer loops, register-tiled matmul/conv,",
        "vectorized elementwise; targets/cpu/schedule.py), no per-model tuning. Ratios are as measured.",
    ]
    write_results("RESULTS-foundation.md", lines)


if __name__ == "__main__":
    main()
