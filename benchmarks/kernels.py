"""Artifact speed against onnxruntime, measured by ``edgec bench`` (issue 22's yardstick).

For each model, each target row is compiled once, then timed by :func:`edgec.bench.bench_artifact` with
``compare="onnxruntime"``: the artifact and the original ONNX file on onnxruntime's CPU provider run in one fresh
process, in alternating blocks, at the same thread count (1, then 2). The ratio is the artifact's median latency
over onnxruntime's. GFLOP/s counts 2 x multiply-accumulates of Conv / Gemm / MatMul (from onnx's shape
inference) over the artifact's median latency.

    python benchmarks/kernels.py [--models resnet18,mobilenetv3-small,bert] [--image-size 224] [--runs 30]

Models are edgec's example architectures (examples/models, random weights): ResNet-18 and MobileNetV3-Small at
``--image-size``, the BERT-style encoder at sequence 16. The issue's larger set (ResNet-50, MobileNetV2,
BERT-base at 128, ViT-B/16, a 4-layer decoder) is not built here yet. Writes benchmarks/RESULTS-kernels.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings

from _results import write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)

HERE = os.path.dirname(os.path.abspath(__file__))
# this folder holds openvino.py and coreml.py (benchmarks): it must not shadow the packages of those names
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(HERE, "..", "examples", "models"))
TARGETS = ("cpu", "cpu{mcpu=native}", "openvino")


def export(name: str, work: str, image_size: int) -> str:
    import torch

    import architectures

    m, ex, names = architectures.build(name, image_size=image_size)
    path = os.path.join(work, f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, ex, path, dynamo=False, opset_version=17, input_names=names, output_names=["out"])
    return path


def gflop(path: str) -> float:
    """2 x the multiply-accumulates of the model's Conv, Gemm and MatMul nodes, in GFLOP (shapes inferred,
    dynamic dims 1)."""
    import numpy as np
    import onnx

    m = onnx.shape_inference.infer_shapes(onnx.load(path))
    shapes = {}
    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        # a dynamic dim (the exported batch) counts as 1: edgec compiles it at 1, and bench feeds 1
        shapes[v.name] = [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    macs = 0
    for n in m.graph.node:
        out = shapes.get(n.output[0])
        if not out:
            continue
        if n.op_type == "Conv":
            w = shapes[n.input[1]]  # [Cout, Cin/group, kh, kw]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("MatMul", "Gemm"):
            a = shapes.get(n.input[0])
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            if a:
                macs += int(np.prod(out)) * (a[-2] if trans_a else a[-1])
    return 2 * macs / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenetv3-small,bert")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    import edgec
    from edgec.bench import bench_artifact
    from edgec.output import read_json

    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            src = export(name, work, args.image_size)
            flops = gflop(src)
            for target in TARGETS:
                out = os.path.join(work, f"{name}.{len(rows)}")
                t0 = time.perf_counter()
                edgec.compile(src, target=target, output=out, use_cache=False)
                t_compile = time.perf_counter() - t0
                manifest = read_json(os.path.join(out, "manifest.json"))
                for threads in (1, 2):
                    rec = bench_artifact(
                        out, manifest, runs=args.runs, threads=threads, compare="onnxruntime", source=src
                    )
                    rows.append((name, target, threads, flops, t_compile, rec))
                    print(f"{name} {target} {threads}t: {rec['compare']['median_ratio']}x", file=sys.stderr)
    lines = [
        "# Artifact speed against onnxruntime",
        "",
        f"`python benchmarks/kernels.py --models {args.models} --image-size {args.image_size} --runs {args.runs}` "
        f"on {platform.machine()} ({os.cpu_count()} cores), in {time.perf_counter() - t_all:.0f} s. Each row: "
        "`edgec bench`'s measurement (`edgec.bench.bench_artifact`, `compare='onnxruntime'`): the artifact and "
        "the original ONNX file on onnxruntime's CPU provider in one fresh process, alternating blocks of runs, the "
        f"same thread count; medians of {args.runs} runs after 5 warm-up. Images 1x3x{args.image_size}x"
        f"{args.image_size}; the BERT-style encoder: sequence 16, hidden 256, 4 layers. ratio = artifact median / "
        "onnxruntime median (issue 22's goal: at most 1.5). GFLOP/s = 2 x MACs of Conv/Gemm/MatMul over the "
        "median; this VM does not expose the core's clock, so no peak is quoted.",
        "",
        "| model | target | threads | compile s | artifact ms | onnxruntime ms | ratio | GFLOP | artifact GFLOP/s | "
        "onnxruntime GFLOP/s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, target, threads, flops, t_compile, rec in rows:
        a, o = rec["latency_ms"]["median"], rec["compare"]["latency_ms"]["median"]
        lines.append(
            f"| {name} | `{target}` | {threads} | {t_compile:.1f} | {a:.3f} | {o:.3f} | "
            f"{rec['compare']['median_ratio']:.2f}x | {flops:.3f} | {flops / a * 1e3:.1f} | {flops / o * 1e3:.1f} | "
            f"{rec['peak_rss_mb']} |"
        )
    lines += [
        "",
        "`cpu` is built for the arch's generic baseline (portable: no AVX2 / AVX-512 assumed), `cpu{mcpu=native}` for",
        "this machine's CPU; both use edgec's generic schedules (targets/cpu/schedule.py), no tuning. `openvino` is",
        "OpenVINO's CPU plugin at f32 inference precision. Ratios are as measured, not rounded.",
    ]
    write_results("RESULTS-kernels.md", lines)


if __name__ == "__main__":
    main()
