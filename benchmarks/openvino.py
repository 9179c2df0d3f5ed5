"""OpenVINO benchmark: latency and size of edgec's weight-compressed OpenVINO artifacts, side by side.

Models: a weight-heavy MLP (4 x Linear 1024x1024 with ReLU, seeded random weights) and the BERT-style
encoder from examples/models. Variants, all emitted by edgec's ``openvino`` target from the same IR:

* fp32: float weights;
* int8: ``quantize{bits=8,scheme=asymmetric,scale_dtype=f16}`` (per output channel -> u8 codes and zero
  points, f16 scales: the CPU plugin's fastest int8 path, as NNCF's INT8_ASYM default);
* int4: ``quantize{bits=4,group=128,scale_dtype=f16}`` (symmetric groups of 128 -> i4 codes, f16 scales);
* int8 (decompression=f16): the int8 IR emitted with ``openvino{decompression=f16}`` (NNCF-style f16
  decompression: faster, weights rounded to float16);
* nncf-int8 / nncf-int4: the fp32 artifact compressed by NNCF's ``compress_weights`` (INT8_ASYM, and
  INT4_SYM with group 128 and ratio 1.0), when nncf is installed.

Latency: the CPU plugin with 1 inference thread, 1 stream, LATENCY hint, runtime defaults otherwise (what
a deployment gets); median of interleaved rounds, so every variant sees the same machine state. Sizes:
``model.bin`` against the theoretical size (code bits x weights + scales (2 bytes when float16) + zero points + the
float parameters).

    python benchmarks/openvino.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from _results import HERE, example_ir, write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)

# This file is named like the library it measures: drop its own folder from the path so `import openvino`
# finds OpenVINO, not this script.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]


def mlp(batch: int):
    from edgec import ir

    rng = np.random.default_rng(0)
    g = ir.Graph("mlp")
    h = g.add_input("x", ir.DType.FLOAT32, (batch, 1024))
    for i in range(4):
        w = (rng.standard_normal((1024, 1024)) / 32).astype(np.float32)
        b = (0.01 * rng.standard_normal(1024)).astype(np.float32)
        h = g.op("Linear", [h, g.add_const(f"w{i}", w), g.add_const(f"b{i}", b)], domain="edgec", name=f"fc{i}").output
        if i < 3:
            h = g.op("Relu", [h], name=f"relu{i}").output
    g.outputs.append(h)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def theoretical_bytes(model) -> int:
    """Code bits x weights + float32 parameters of every quantized weight, 4 bytes per float parameter."""
    from edgec.ir import QuantizedTensor

    total = 0
    for v in model.graph.initializers.values():
        if not v.uses:
            continue
        q = v.const
        if isinstance(q, QuantizedTensor):
            bits = 4 if q.bits <= 4 else 8
            total += (int(np.prod(q.shape)) * bits + 7) // 8
            s = np.asarray(q.scales, np.float32)
            total += s.size * (2 if np.array_equal(s.astype(np.float16).astype(np.float32), s) else 4)
            if q.zero_points is not None:
                total += (np.asarray(q.zero_points).size * bits + 7) // 8
            if q.offsets is not None:
                total += np.asarray(q.offsets).size * 4
        else:
            total += v.const.numpy().nbytes
    return total


def emit(model, pipeline: str, out: str, **target_options) -> int:
    from edgec import ir
    from edgec.host import host
    from edgec.ir.passes import PassContext, PassManager, parse_pipeline
    from edgec.targets.openvino import OpenVINOTarget

    m = ir.parse_model(ir.print_model(model))
    if pipeline:
        PassManager(parse_pipeline(pipeline, host().passes.as_dict())).run(m, PassContext())
    os.makedirs(out, exist_ok=True)
    OpenVINOTarget(**target_options).emit(m, out, PassContext())
    return theoretical_bytes(m)


def nncf_variants(src: str, work: str, tag: str) -> dict[str, str]:
    try:
        import nncf
        import openvino as ov
    except ImportError:
        return {}
    out = {}
    for name, kw in (
        ("nncf-int8", {"mode": nncf.CompressWeightsMode.INT8_ASYM}),
        ("nncf-int4", {"mode": nncf.CompressWeightsMode.INT4_SYM, "group_size": 128, "ratio": 1.0, "all_layers": True}),
    ):
        m = ov.Core().read_model(os.path.join(src, "model.xml"))
        try:
            c = nncf.compress_weights(m, **kw)
        except TypeError:  # older nncf without all_layers
            kw.pop("all_layers", None)
            c = nncf.compress_weights(m, **kw)
        d = os.path.join(work, f"{tag}-{name}")
        os.makedirs(d, exist_ok=True)
        ov.save_model(c, os.path.join(d, "model.xml"), compress_to_fp16=False)
        out[name] = d
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--models", default="mlp,bert")
    args = ap.parse_args()
    import openvino as ov

    core = ov.Core()
    base_cfg = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    configs = {"default": base_cfg, "f32": {**base_cfg, "INFERENCE_PRECISION_HINT": "f32"}}
    default_precision = str(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
    try:
        import nncf

        nncf_version = nncf.__version__
    except ImportError:
        nncf_version = None
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            for batch in (1, 16):
                base = mlp(batch) if name == "mlp" else example_ir("bert", work, batch)
                # The MLP's last Linear is its output head: 4-bit too (edgec keeps heads at 8 bits by default).
                # int8: asymmetric (u8 + zero points), the CPU plugin's fastest int8 decompression here
                # (symmetric i8 measured 5-10% slower); int4: symmetric i4.
                variants = {
                    "fp32": "",
                    "int8": "quantize{bits=8,scheme=asymmetric,scale_dtype=f16}",
                    "int4": "quantize{bits=4,group=128,scale_dtype=f16"
                    + (",head_bits=4}" if name == "mlp" else ",embedding_bits=4}"),
                }
                dirs, theo = {}, {}
                for v, pipe in variants.items():
                    d = os.path.join(work, f"{name}{batch}-{v}")
                    theo[v] = emit(base, pipe, d)
                    dirs[v] = d
                # int8 decompressed in float16 like NNCF (openvino{decompression=f16}: faster, weights rounded)
                d = os.path.join(work, f"{name}{batch}-int8-f16dec")
                theo["int8 (decompression=f16)"] = emit(base, variants["int8"], d, decompression="f16")
                dirs["int8 (decompression=f16)"] = d
                dirs.update(nncf_variants(dirs["fp32"], work, f"{name}{batch}"))
                from edgec import ir

                feeds = ir.random_inputs(base, seed=0)
                res = {}
                for cname, cfg in configs.items():
                    reqs = {
                        v: core.compile_model(os.path.join(d, "model.xml"), "CPU", cfg).create_infer_request()
                        for v, d in dirs.items()
                    }
                    for r in reqs.values():
                        for _ in range(5):
                            r.infer(feeds)
                    times = {v: [] for v in reqs}
                    for _ in range(args.rounds):  # interleaved: every variant sees the same machine state
                        for v, r in reqs.items():
                            t = time.perf_counter()
                            r.infer(feeds)
                            times[v].append(time.perf_counter() - t)
                    res[cname] = {v: float(np.median(x)) for v, x in times.items()}
                    del reqs
                for v, d in dirs.items():
                    size = os.path.getsize(os.path.join(d, "model.bin"))
                    rows.append(
                        (
                            name,
                            batch,
                            v,
                            [(res[c][v] * 1e3, res[c]["fp32"] / res[c][v]) for c in configs],
                            size / 1e6,
                            (size / theo[v]) if v in theo else None,
                        )
                    )
                    print(rows[-1], file=sys.stderr)
    lines = [
        "# OpenVINO weight compression (`python benchmarks/openvino.py`)",
        "",
        f"OpenVINO {ov.__version__}, CPU plugin, 1 inference thread, 1 stream, LATENCY hint; median of "
        f"{args.rounds} interleaved rounds after 5 warm-up runs, all variants in one process, for two "
        f"configurations: the runtime default (inference precision {default_precision} on this CPU: "
        "float layers, the fp32 model's included, compute in that type) and INFERENCE_PRECISION_HINT=f32 "
        "(the fp32 model computes in fp32). MLP: 4 x Linear "
        "1024x1024 (+bias, ReLU). BERT: the BERT-style encoder from examples/models, sequence 16. int8: "
        "edgec `quantize{bits=8,scheme=asymmetric,scale_dtype=f16}` (u8 per channel); int4: "
        "`quantize{bits=4,group=128,scale_dtype=f16}` "
        "(i4, groups of 128; the MLP's last layer and BERT's embedding table at 4 bits too, `head_bits=4` / "
        "`embedding_bits=4`, like NNCF's all_layers; edgec's embedding rows have one scale each). Edgec's "
        "decompression multiplies in float16 where that is exact (4-bit grids with scale_dtype=f16) and in "
        "float32 otherwise, so its weights are exactly the IR's; NNCF's always multiplies in float16. The "
        "`int8 (decompression=f16)` row is edgec's int8 emitted with `openvino{decompression=f16}`, which "
        "also always multiplies in float16 (faster, weights rounded to float16). "
        + (
            f"NNCF {nncf_version} `compress_weights` on edgec's fp32 artifact: INT8_ASYM, and INT4_SYM group "
            "128 ratio 1.0 all_layers."
            if nncf_version
            else "NNCF is not installed: no NNCF rows."
        )
        + " size / theory: model.bin over code bits x weights + scales (2 bytes when float16) + zero points "
        "+ 4 bytes per float parameter.",
        "",
        "| model | batch | variant | ms (default) | vs fp32 (default) | ms (f32) | vs fp32 (f32) | model.bin MB "
        "| size / theory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, batch, v, lat, mb, ratio in rows:
        (ms_d, sp_d), (ms_f, sp_f) = lat
        lines.append(
            f"| {name} | {batch} | {v} | {ms_d:.3f} | {sp_d:.2f}x | {ms_f:.3f} | {sp_f:.2f}x | {mb:.3f} | "
            f"{'' if ratio is None else f'{ratio:.4f}'} |"
        )
    write_results("RESULTS-openvino.md", lines)


if __name__ == "__main__":
    main()
