"""Core ML benchmark: edgec's compressed .mlpackage against coremltools' own ``coremltools.optimize.coreml``.

For each example model (ResNet-18 and the BERT-style encoder from examples/models), edgec first emits the
float package (fp16 weights). coremltools' compressor is then applied to *that* package, so both sides start
from the same weights and the same program; edgec compiles its own compressed package from the IR:

========================  =======================================================  ==============================
config                    coremltools.optimize.coreml                              edgec pipeline
========================  =======================================================  ==============================
linear int8               OpLinearQuantizerConfig(linear_symmetric, int8,          quantize{bits=8}
                          per_channel)
int4 block 32             OpLinearQuantizerConfig(linear_symmetric, int4,          quantize{bits=4,group=32,
                          per_block, block_size=32)                                conv_group=true}
4-bit palettization       OpPalettizerConfig(kmeans, nbits=4, per_tensor)          quantize{method=codebook,bits=4}
50% pruning               OpMagnitudePrunerConfig(target_sparsity=0.5)             prune{sparsity=0.5,head=true}
                                                                                   (and method=wanda)
========================  =======================================================  ==============================

Both compress the weights of every Conv and Linear (coremltools: ``op_name_configs`` naming each conv / linear
weight const, its default 2048-element threshold, which every such weight here exceeds; edgec:
``head_bits`` = the body's bits, ``embedding_bits=0``, ``scale_dtype=f16``). edgec's rows use ``method=rtn``
(the same rounding as coremltools) and ``method=mse`` (edgec's clipping search), weights only; int4 also with
``method=gptq`` and the palette also with ``objective=output`` (palettes weighted by input energy, codes
assigned GPTQ-style), both calibrated on 8 random inputs (seeds 0-7, disjoint from the evaluation inputs,
seeds 1000+: the same distribution, as real calibration data would be). coremltools prunes every magnitude at
or under the percentile of its fp16 weights, ties included, so it lands above 50%: edgec's pruning row is
repeated at the sparsity coremltools reached, with magnitude and with ``method=wanda`` (|w| x input norm per
output row, calibrated like the rows above).

Size: every file of the saved ``.mlpackage``. Error: each package's saved program re-executed by edgec's
MIL evaluator (check (b); no Core ML runtime on Linux) on 16 seeded inputs, relative L2 error
``||y - y_ref|| / ||y_ref||`` against the fp32 model on onnxruntime.

    python benchmarks/coreml.py [--models resnet18,bert] [--samples 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

from _results import example_ir, write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)

F16 = "scale_dtype=f16,embedding_bits=0"
CONFIGS = [
    # name, coremltools config factory, edgec pipelines (label -> pipeline)
    (
        "linear int8",
        lambda cto: cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel"),
        {"rtn": f"quantize{{bits=8,head_bits=8,{F16}}}", "mse": f"quantize{{bits=8,head_bits=8,method=mse,{F16}}}"},
    ),
    (
        "int4 block 32",
        lambda cto: cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32
        ),
        {
            "rtn": f"quantize{{bits=4,group=32,conv_group=true,head_bits=4,{F16}}}",
            "mse": f"quantize{{bits=4,group=32,conv_group=true,head_bits=4,method=mse,{F16}}}",
            "gptq, calibrated": f"quantize{{bits=4,group=32,conv_group=true,head_bits=4,method=gptq,{F16}}}",
        },
    ),
    (
        "4-bit palettization",
        lambda cto: cto.OpPalettizerConfig(mode="kmeans", nbits=4, granularity="per_tensor"),
        {
            "k-means": "quantize{method=codebook,bits=4,head_bits=4,embedding_bits=0}",
            "k-means, calibrated": "quantize{method=codebook,bits=4,head_bits=4,embedding_bits=0,objective=output}",
        },
    ),
    (
        "50% pruning",
        lambda cto: cto.OpMagnitudePrunerConfig(target_sparsity=0.5),
        {"magnitude": "prune{sparsity=0.5,head=true}"},
    ),
]


def package_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def rel_l2(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    num = sum(float(np.sum((np.asarray(g, np.float64) - r) ** 2)) for g, r in zip(got, ref))
    den = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in ref)
    return float(np.sqrt(num / den))


def run_package(path: str, feeds_list) -> list[np.ndarray]:
    from edgec.targets.coreml import run_package as run

    return [run(path, feeds)[0] for feeds in feeds_list]


def weight_stats(path: str, ref: dict | None = None):
    """The decoded conv / linear weights of a package (by consuming op), and against ``ref``'s: the summed
    squared difference and the count of non-zero weights."""
    from edgec.targets.coreml.evaluate import constexpr_value, load_program

    ws = {}
    for op in load_program(path).functions["main"].operations:
        if op.op_type in ("conv", "linear"):
            w = op.inputs["weight"]
            v = constexpr_value(w.op) if w.op.op_type.startswith("constexpr_") else w.val
            ws[op.name] = np.asarray(v, np.float32)
    if ref is None:
        return ws
    sse = sum(float(np.sum((ws[k].astype(np.float64) - ref[k]) ** 2)) for k in ref)
    return sse, sum(int(np.count_nonzero(w)) for w in ws.values())


def coremltools_package(src: str, dst: str, make_cfg) -> float:
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    from edgec.targets.coreml.evaluate import load_program

    cfg = make_cfg(cto)
    # The weight consts of every conv / linear, by name (op_type_configs would also claim their biases, which
    # coremltools may have merged with a LayerNorm's beta, and then refuse the conflict).
    ops = load_program(src).functions["main"].operations
    names = {op.inputs["weight"].op.name for op in ops if op.op_type in ("conv", "linear")}
    config = cto.OptimizationConfig(op_name_configs={n: cfg for n in sorted(names)})
    m = ct.models.MLModel(src, skip_model_load=True)
    t0 = time.perf_counter()
    fn = {
        cto.OpLinearQuantizerConfig: cto.linear_quantize_weights,
        cto.OpPalettizerConfig: cto.palettize_weights,
        cto.OpMagnitudePrunerConfig: cto.prune_weights,
    }[type(cfg)]
    out = fn(m, config=config)
    dt = time.perf_counter() - t0
    out.save(dst)
    return dt


def edgec_package(model_name: str, work: str, pipe: str, dst: str) -> float:
    from edgec.host import host
    from edgec.ir.passes import PassContext, PassManager, parse_pipeline
    from edgec.targets.coreml import CoreMLTarget

    m = example_ir(model_name, work)
    t0 = time.perf_counter()
    ctx = PassContext()
    if any(t in pipe for t in ("objective=output", "gptq", "wanda")):  # 8 random inputs (seeds 0-7; the
        # evaluation uses 1000+)
        from edgec.calibration import load_calibration

        ctx = PassContext(calibration=load_calibration("random", m, seed=0))
    if pipe:
        PassManager(parse_pipeline(pipe, host().passes.as_dict())).run(m, ctx)
    os.makedirs(dst, exist_ok=True)
    CoreMLTarget().emit(m, dst, PassContext())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,bert")
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import coremltools as ct

    from edgec import ir

    km = (
        "coremltools' palettizer clusters fp16 weights of 10,000+ elements with its bundled optimal 1-D "
        "k-means (kmeans1d), smaller ones with scikit-learn; edgec with its exact 1-D k-means on the float16 "
        "histogram"
    )
    rows = []
    work = tempfile.mkdtemp(prefix="edgec-coreml-bench-")
    try:
        for name in args.models.split(","):
            base = example_ir(name, work)
            feeds_list = [ir.random_inputs(base, seed=1000 + s) for s in range(args.samples)]
            ex = ir.ReferenceExecutor(base)
            ref = [ex.run(f)[base.graph.outputs[0].name] for f in feeds_list]
            fp16_dir = os.path.join(work, name, "fp16")
            edgec_package(name, work, "", fp16_dir)
            fp16_pkg = os.path.join(fp16_dir, "model.mlpackage")
            fp16 = (package_bytes(fp16_pkg), rel_l2(run_package(fp16_pkg, feeds_list), ref))
            wref = weight_stats(fp16_pkg)
            rows.append(
                (
                    name,
                    "fp16 (no compression)",
                    "edgec",
                    "",
                    fp16[0],
                    fp16[1],
                    None,
                    (0.0, sum(int(np.count_nonzero(w)) for w in wref.values())),
                )
            )
            print(rows[-1], flush=True)
            for cname, make_cfg, pipes in CONFIGS:
                dst = os.path.join(work, name, cname.replace(" ", "_") + "-ct.mlpackage")
                dt = coremltools_package(fp16_pkg, dst, make_cfg)
                rows.append(
                    (
                        name,
                        cname,
                        "coremltools",
                        "",
                        package_bytes(dst),
                        rel_l2(run_package(dst, feeds_list), ref),
                        dt,
                        weight_stats(dst, wref),
                    )
                )
                print(rows[-1], flush=True)
                pipes = dict(pipes)
                if cname == "50% pruning":
                    # coremltools prunes every magnitude <= the percentile of its fp16 weights, ties included, so
                    # it lands above the target: edgec also at the sparsity coremltools reached.
                    total = sum(w.size for w in wref.values())
                    reached = 1.0 - rows[-1][7][1] / total
                    pipes[f"magnitude at coremltools' {reached:.6f}"] = f"prune{{sparsity={reached:.6f},head=true}}"
                    pipes[f"wanda, calibrated, at {reached:.6f}"] = (
                        f"prune{{method=wanda,sparsity={reached:.6f},head=true}}"
                    )
                for label, pipe in pipes.items():
                    d = os.path.join(work, name, cname.replace(" ", "_") + "-" + label)
                    dt = edgec_package(name, work, pipe, d)
                    pkg = os.path.join(d, "model.mlpackage")
                    rows.append(
                        (
                            name,
                            cname,
                            "edgec " + label,
                            pipe,
                            package_bytes(pkg),
                            rel_l2(run_package(pkg, feeds_list), ref),
                            dt,
                            weight_stats(pkg, wref),
                        )
                    )
                    print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "## Core ML: edgec vs coremltools.optimize.coreml",
        "",
        f"`python benchmarks/coreml.py --models {args.models} --samples {args.samples}` "
        f"(coremltools {ct.__version__}; {km}). Same fp16 starting package; sizes are whole .mlpackage "
        "directories; error: relative L2 of the package's outputs, re-executed by edgec's MIL evaluator "
        f"(no Core ML runtime on Linux), against the fp32 model on onnxruntime, over {args.samples} "
        "seeded inputs. Compression time: the compressor only (coremltools) / passes + emission (edgec).",
        "",
        "Weight SSE: summed squared difference of the decoded Conv/Linear weights from the fp16 package's; "
        "non-zeros: of those weights.",
        "",
        "| model | config | tool | package bytes | vs coremltools | rel. L2 error | vs coremltools | weight SSE "
        "| vs coremltools | non-zeros | time s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ct_rows = {(r[0], r[1]): r for r in rows if r[2] == "coremltools"}
    verdicts = []
    for r in rows:
        c = ct_rows.get((r[0], r[1]))
        size_ratio = f"{r[4] / c[4]:.4f}" if c and r[2] != "coremltools" else ""
        err_ratio = f"{r[5] / c[5]:.4f}" if c and r[2] != "coremltools" and c[5] > 0 else ""
        t = f"{r[6]:.2f}" if r[6] is not None else ""
        sse_ratio = f"{r[7][0] / c[7][0]:.4f}" if c and r[2] != "coremltools" and c[7][0] > 0 else ""
        lines.append(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[4]} | {size_ratio} | {r[5]:.3e} | {err_ratio} | "
            f"{r[7][0]:.4g} | {sse_ratio} | {r[7][1]} | {t} |"
        )
        if c and r[2] != "coremltools":
            verdicts.append(
                f"- {r[0]}, {r[1]}, {r[2]}: size {'no larger' if r[4] <= c[4] else 'LARGER'} "
                f"({r[4]} vs {c[4]} bytes), error {'no worse' if r[5] <= c[5] else 'WORSE'} "
                f"({r[5]:.4e} vs {c[5]:.4e})"
            )
    lines += [
        "",
        "Goal: edgec's package no larger and its error no worse than coremltools' for the same config.",
        "",
    ] + verdicts
    write_results("RESULTS-coreml.md", lines)


if __name__ == "__main__":
    sys.exit(main())
