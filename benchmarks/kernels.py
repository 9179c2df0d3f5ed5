"""Artifact speed against onnxruntime, measured by ``edgec bench`` (issue 22's yardstick).

For each model, each target row is compiled once, then timed by :func:`edgec.bench.bench_artifact` with
``compare="onnxruntime"``: the artifact and the original ONNX file on onnxruntime's CPU provider run in one fresh
process, in alternating blocks, at the same thread count (1, then 2). The ratio is the artifact's median latency
over onnxruntime's. GFLOP/s counts 2 x multiply-accumulates of Conv / Gemm / MatMul (from onnx's shape
inference) over the artifact's median latency.

    python benchmarks/kernels.py [--models resnet50,mobilenetv2,bert-base,vit-b16,decoder,matmul-decode]
                                 [--runs 20] [--targets cpu,openvino] [--tune N] [--quant PIPELINES]
                                 [--static PIPELINE] [--static-models MODELS]

Models (issue 22's set), built offline from transformers configurations with seeded random weights and exported
by torch's TorchScript-based exporter (opset 17, sdpa attention): ResNet-50 and MobileNetV2 (224x224 images,
1000 classes), a BERT-base encoder (hidden 768, 12 layers, sequence 128), a ViT-B/16 encoder (224x224) and a
4-layer Llama-style decoder (hidden 1024, 16 heads, 4 key/value heads, MLP 2816, vocabulary 32000) on a
128-token prompt. Writes benchmarks/RESULTS-kernels.md.
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
TARGETS = ("cpu", "openvino")
SEQ = 128

# name -> (transformers config class, model class, config keywords, input kind)
MODELS = {
    "resnet50": ("ResNetConfig", "ResNetForImageClassification", {"num_labels": 1000}, "image"),
    "mobilenetv2": ("MobileNetV2Config", "MobileNetV2ForImageClassification", {"num_labels": 1000}, "image"),
    "bert-base": ("BertConfig", "BertModel", {}, "text"),
    "vit-b16": ("ViTConfig", "ViTModel", {}, "image"),
    "decoder": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {
            "hidden_size": 1024,
            "intermediate_size": 2816,
            "num_hidden_layers": 4,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
            "vocab_size": 32000,
            "max_position_embeddings": 512,
        },
        "tokens",
    ),
}


# A decode-style matmul: one token through a Llama-7B-like MLP's up projection (hidden 2048 -> 5632), the weight a
# constant. Weight-only quantized rows (--quant) are measured on it: at batch 1 the kernel reads each weight once.
MATMUL_DECODE = (2048, 5632)


def export_matmul(work: str) -> str:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = MATMUL_DECODE
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32) / k**0.5, "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["out"])],
        "matmul_decode",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, n])],
        [w],
    )
    path = os.path.join(work, "matmul-decode.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def export(name: str, work: str) -> str:
    """``name`` built with random weights (seed 0) and exported to ONNX; returns the file's path."""
    if name == "matmul-decode":
        return export_matmul(work)
    import torch
    import transformers as tf

    cfg_cls, model_cls, kw, kind = MODELS[name]
    torch.manual_seed(0)
    extra = {} if cfg_cls in ("ResNetConfig", "MobileNetV2Config") else {"attn_implementation": "sdpa"}
    model = getattr(tf, model_cls)._from_config(getattr(tf, cfg_cls)(**kw), **extra).eval()
    g = torch.Generator().manual_seed(0)
    if kind == "image":
        args, names = (torch.randn(1, 3, 224, 224, generator=g),), ["pixel_values"]
    elif kind == "text":
        args, names = (
            (torch.randint(0, 1000, (1, SEQ), generator=g), torch.ones(1, SEQ, dtype=torch.int64)),
            [
                "input_ids",
                "attention_mask",
            ],
        )
    else:  # the decoder's prompt, with its mask (without one, transformers' mask code calls aten::diff,
        # which the TorchScript exporter cannot export)
        args, names = (
            (torch.randint(0, 1000, (1, SEQ), generator=g), torch.ones(1, SEQ, dtype=torch.int64)),
            [
                "input_ids",
                "attention_mask",
            ],
        )

    class First(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, *a):
            out = self.m(**dict(zip(names, a)), **({"use_cache": False} if kind == "tokens" else {}))
            return out[0] if isinstance(out, (tuple, list)) else next(iter(out.values()))

    path = os.path.join(work, f"{name}.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            First().eval(), args, path, dynamo=False, opset_version=17, input_names=names, output_names=["out"]
        )
    return path


def gflop(path: str) -> float:
    """2 x the multiply-accumulates of the model's Conv, Gemm and MatMul nodes, in GFLOP (shapes inferred by
    onnxruntime's symbolic shape inference, dynamic dims 1)."""
    import numpy as np
    import onnx

    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # onnxruntime's symbolic inference follows shape arithmetic (the Pad amounts of TensorFlow-style padding in
    # transformers' MobileNetV2) that onnx's own inference leaves unknown
    m = SymbolicShapeInference.infer_shapes(onnx.load(path), auto_merge=True)
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
    ap.add_argument("--models", default=",".join([*MODELS, "matmul-decode"]))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tune", type=int, default=0, help="also a cpu{tune=N} row (MetaSchedule, N trials per kernel)")
    ap.add_argument("--tune-models", default="bert-base", help="the models that get the tuned row")
    ap.add_argument(
        "--quant",
        default="quantize{bits=8},quantize{bits=4;group=32;head_bits=4}",
        help="weight-only pipelines ('quantize{...}', ';' between options), each a cpu row on --quant-models",
    )
    ap.add_argument("--quant-models", default="matmul-decode", help="the models that get the --quant rows")
    ap.add_argument(
        "--static",
        default="quantize{bits=8};quantize-activations",
        help="static int8 pipeline (';' between passes and options), a cpu row on --static-models (random calibration)",
    )
    ap.add_argument(
        "--static-models",
        default="resnet50,mobilenetv2,bert-base,vit-b16,decoder",
        help="the models that get the --static row",
    )
    args = ap.parse_args()
    import edgec
    from edgec.bench import bench_artifact
    from edgec.output import read_json

    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            src = export(name, work)
            flops = gflop(src)
            targets = [(t, "") for t in args.targets.split(",")]
            if args.tune and name in args.tune_models.split(","):
                targets.append((f"cpu{{tune={args.tune}}}", ""))
            if args.quant and name in args.quant_models.split(","):
                targets += [("cpu", p.replace(";", ",")) for p in args.quant.split(",")]
            if args.static and name in args.static_models.split(","):
                targets.append(("cpu", args.static.replace(";", ",")))
            for target, pipeline in targets:
                out = os.path.join(work, f"{name}.{len(rows)}")
                t0 = time.perf_counter()
                # a fresh cache folder: a tuned row's compile time includes the whole search
                edgec.compile(
                    src,
                    target=target,
                    pipeline=pipeline,
                    output=out,
                    use_cache=False,
                    cache_dir=os.path.join(work, "cache"),
                    # static int8's activation ranges: random inputs are enough to time the kernels
                    calib="random" if "quantize-activations" in pipeline else None,
                )
                t_compile = time.perf_counter() - t0
                manifest = read_json(os.path.join(out, "manifest.json"))
                for threads in [int(t) for t in args.threads.split(",")]:
                    rec = bench_artifact(
                        out, manifest, runs=args.runs, threads=threads, compare="onnxruntime", source=src
                    )
                    label = f"{target} -p {pipeline}" if pipeline else target
                    rows.append((name, label, threads, flops, t_compile, rec))
                    print(f"{name} {label} {threads}t: {rec['compare']['median_ratio']}x", file=sys.stderr)
    from edgec.targets.cpu import CpuTarget

    cpu = str(CpuTarget().tvm_target().attrs.get("mcpu", ""))
    lines = [
        "# Artifact speed against onnxruntime",
        "",
        f"`python benchmarks/kernels.py --models {args.models} --targets {args.targets} --runs {args.runs} "
        f"--threads {args.threads} --tune {args.tune} --tune-models {args.tune_models} --quant '{args.quant}' "
        f"--quant-models {args.quant_models} --static '{args.static}' --static-models {args.static_models}` on "
        f"{platform.machine()} ({os.cpu_count()} cores, LLVM CPU `{cpu}`), in "
        f"{time.perf_counter() - t_all:.0f} s. Each row: `edgec bench`'s measurement (`edgec.bench.bench_artifact`, "
        "`compare='onnxruntime'`): the artifact and the original ONNX file on onnxruntime's CPU provider in one "
        "fresh process, alternating blocks of runs, the same thread count; medians of "
        f"{args.runs} runs after 5 warm-up. Models: transformers configurations with random weights (see the "
        "script's docstring); images 1x3x224x224, text and the decoder's prompt 128 tokens. ratio = artifact median "
        "/ onnxruntime median (issue 22's goal: at most 1.5 untuned). GFLOP/s = 2 x MACs of Conv/Gemm/MatMul over "
        "the median; this VM does not expose the core's clock, so no peak is quoted.",
        "",
        "| model | target | threads | compile s | artifact ms | onnxruntime ms | ratio | speed-up over edgec fp32 | "
        "GFLOP | artifact GFLOP/s | onnxruntime GFLOP/s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {(n, th): r["latency_ms"]["median"] for n, t, th, _, _, r in rows if t == "cpu"}
    for name, target, threads, flops, t_compile, rec in rows:
        a, o = rec["latency_ms"]["median"], rec["compare"]["latency_ms"]["median"]
        speedup = f"{base[(name, threads)] / a:.2f}x" if " -p " in target and (name, threads) in base else ""
        lines.append(
            f"| {name} | `{target}` | {threads} | {t_compile:.1f} | {a:.3f} | {o:.3f} | "
            f"{rec['compare']['median_ratio']:.2f}x | {speedup} | {flops:.3f} | {flops / a * 1e3:.1f} | "
            f"{flops / o * 1e3:.1f} | {rec['peak_rss_mb']} |"
        )
    lines += [
        "",
        "`cpu` is the default: built for this machine's CPU (`mcpu=auto`: AVX-512 here), convolutions in NHWC and",
        "register-tiled matmul / convolution kernels with FMA (targets/cpu/schedule.py), no tuning. `openvino` is",
        "OpenVINO's CPU plugin at f32 inference precision. `cpu{tune=N}` adds TVM's MetaSchedule search, N",
        "candidates per matmul / convolution kernel (its compile time includes the search, from an empty database;",
        "without xgboost installed the candidates are drawn at random). `cpu -p quantize{...}` rows quantize the",
        "weights only (round to nearest; int4 in groups of 32 along K; `head_bits=4`, since the quantizer keeps a",
        "model's last Linear, here the only one, at 8 bits by default) and run the packed codes in the kernel",
        "(at 1..4 rows targets/cpu/gemv.py: codes in column tiles, a group's scale applied once per group);",
        "their onnxruntime column is the float original, and the speed-up column compares with the `cpu` row of",
        "the same model and threads. `matmul-decode` is one token through a 2048 -> 5632 projection (batch 1).",
        "`cpu -p quantize{bits=8},quantize-activations` rows are static int8 (int8 weights per channel, int8",
        "activations calibrated on random inputs): each int8 Conv / Linear runs as an integer kernel",
        "(targets/cpu/intops.py: AVX-512 VNNI vpdpbusd, int32 accumulation, fixed-point requantization),",
        "bit-exact with edgec.ir.integer; softmax, norms and GELU stay float32. Their onnxruntime column is the",
        "float original.",
        "Ratios are as measured, not rounded.",
    ]
    write_results("RESULTS-kernels.md", lines)


if __name__ == "__main__":
    main()
