"""Quantization-aware fine-tuning on SmolLM2-135M-Instruct: GGUF bytes, held-out perplexity and tool-call metrics
of edgec's qat recipes against llama.cpp's own quantizer, measured in one run.

Rows (each a GGUF file; perplexity by llama.cpp on the first 20,000 characters of GPL-3, 512-token windows,
stride 256; calibration and training text: Apache-2.0 + MPL-2.0, disjoint):

* F16 (edgec, no pipeline) and llama.cpp's Q3_K_M / Q4_0 / Q4_K_M of that file (``llama_model_quantize``);
* edgec GPTQ alone: ``quantize{gguf=T,method=gptq}``;
* GPTQ + block-wise qat, GPTQ + end-to-end qat, mixed precision + qat (``--rows`` picks).

Tool calls: ``edgec eval FILE --tool-calls examples/toolcalls/toolcalls.jsonl`` on llama.cpp (``--toolcalls N``
prompts, 0 to skip). Every edgec compile runs in its own process: wall time and peak RSS are reported (fp32
weights: 542 MB). The file ends with the recipe lines the issue asks for: the best row at <= 92 MB and <= 80 MB.

    python benchmarks/qat.py [--rows f16,llama,gptq,block,e2e,mixed] [--steps 100] [--out benchmarks/RESULTS-qat.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _results import HERE, write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)
from llm_quality import CALIB_SRC, EVAL_SRC, compile_child, llama_quantize  # noqa: E402

ROOT = os.path.dirname(HERE)
TOOLCALLS = os.path.join(ROOT, "examples", "toolcalls", "toolcalls.jsonl")
LLAMA = ["Q3_K_M", "Q4_0", "Q4_K_M"]


def recipes(steps: int, samples: int, types: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Row group -> [(label, pipeline)]: the edgec recipes measured (GPTQ's calibration: ``samples`` windows;
    GPTQ rows of the GGUF ``types`` only)."""
    g4 = f"quantize{{gguf=Q4_0,method=gptq,samples={samples}}}"
    g3 = f"quantize{{gguf=Q3_K,method=gptq,samples={samples}}}"
    out = {
        "gptq": [("GPTQ Q4_0", g4), ("GPTQ Q3_K", g3)],
        "block": [
            ("GPTQ Q4_0 + qat block", f"{g4},qat{{mode=block,steps={steps}}}"),
            ("GPTQ Q3_K + qat block", f"{g3},qat{{mode=block,steps={steps}}}"),
        ],
        "e2e": [("GPTQ Q4_0 + qat e2e", f"{g4},qat{{mode=e2e,steps={steps}}}")],
        "mixed": [
            (
                "mixed 80 MB + qat block",
                f"mixed-precision{{size_mb=80,types=Q3_K:Q4_0:Q8_0}},qat{{mode=block,steps={steps}}}",
            )
        ],
    }
    return {k: [(lab, p) for lab, p in v if k == "mixed" or lab.split()[1] in types] for k, v in out.items()}


def toolcall_metrics(path: str, limit: int) -> dict:
    """``edgec eval --tool-calls`` on a GGUF file (llama.cpp); {} when skipped or unavailable."""
    if not limit or not os.path.exists(TOOLCALLS):
        return {}
    p = subprocess.run(
        [sys.executable, "-m", "edgec.cli", "eval", path, "--tool-calls", TOOLCALLS, "--limit", str(limit), "--json"],
        capture_output=True,
        text=True,
    )
    if p.returncode:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    out = json.loads(p.stdout)
    return out.get("tool_calls", out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="f16,llama,gptq,block,e2e,mixed")
    ap.add_argument("--steps", type=int, default=100, help="qat steps (per block in mode=block)")
    ap.add_argument("--samples", type=int, default=16, help="GPTQ calibration windows of 512 tokens")
    ap.add_argument("--types", default="Q4_0,Q3_K", help="GGUF types of the GPTQ (+ qat) rows")
    ap.add_argument("--toolcalls", type=int, default=0, help="tool-call prompts per row (0: skip)")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS-qat.md"))
    args = ap.parse_args()
    want = set(args.rows.split(","))
    from edgec.api.llama_cpp import llama_cpp_engine
    from edgec.api.tokenizer import LlamaCppTokenizer
    from edgec.plugins.llm.bundled import smollm2_path
    from edgec.plugins.llm.perplexity import perplexity

    work = tempfile.mkdtemp(prefix="edgec-qat-bench-")
    eval_txt, calib_txt = os.path.join(work, "eval.txt"), os.path.join(work, "calib.txt")
    with open(EVAL_SRC, encoding="utf-8") as f:
        open(eval_txt, "w", encoding="utf-8").write(f.read()[:20000])
    with open(calib_txt, "w", encoding="utf-8") as out:
        for p in CALIB_SRC:
            out.write(open(p, encoding="utf-8").read())
    src = smollm2_path()
    ids = None
    rows: list[dict] = []

    def add(name: str, pipeline: str, path: str, stats: dict | None = None) -> None:
        nonlocal ids
        if ids is None:
            ids = LlamaCppTokenizer(path).encode(open(eval_txt, encoding="utf-8").read(), add_bos=True)
        ppl = perplexity(ids, llama_cpp_engine(path, 512), ctx=512, stride=256, engine="llama.cpp", progress=False)
        row = {
            "row": name,
            "pipeline": pipeline,
            "size_mb": os.path.getsize(path) / 1e6,
            "ppl": ppl.perplexity,
            **(stats or {}),
            "toolcalls": toolcall_metrics(path, args.toolcalls),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    f16_dir = os.path.join(work, "f16")
    f16 = os.path.join(f16_dir, "model.gguf")
    add("F16", "", f16, compile_child(src, "", f16_dir, None))
    if "llama" in want:
        for t in LLAMA:
            dst = os.path.join(work, f"llama-{t}.gguf")
            t0 = time.perf_counter()
            llama_quantize(f16, dst, t)
            add(f"llama.cpp {t}", "(llama_model_quantize)", dst, {"wall_s": time.perf_counter() - t0})
            os.unlink(dst)
    for group, items in recipes(args.steps, args.samples, set(args.types.split(","))).items():
        if group not in want:
            continue
        for label, pipe in items:
            out = os.path.join(work, label.replace(" ", "_").replace("+", "p"))
            try:
                st = compile_child(src, pipe, out, calib_txt)
            except RuntimeError as e:
                print(f"{label}: FAILED {e}", flush=True)
                rows.append({"row": label, "pipeline": pipe, "error": str(e).splitlines()[-1]})
                continue
            add(label, pipe, os.path.join(out, "model.gguf"), st)
            subprocess.run(["rm", "-rf", out])
    write(args, rows)


def write(args, rows: list[dict]) -> None:
    base = rows[0]["ppl"]
    lines = [
        "# Quantization-aware fine-tuning: SmolLM2-135M-Instruct (`python benchmarks/qat.py`)",
        "",
        f"Command: `python benchmarks/qat.py --rows {args.rows} --types {args.types} --steps {args.steps} "
        f"--samples {args.samples} --toolcalls {args.toolcalls}`. Evaluation text: first 20,000 characters of GPL-3 (llama.cpp, 512-token "
        "windows, stride 256); calibration and qat training text: Apache-2.0 + MPL-2.0 (`--calib`, 512-token "
        "windows; qat cuts them to 128 tokens). Times and peak RSS: the whole `edgec compile` process (fp32 "
        "weights 542 MB).",
        "",
        "| row | file MB | perplexity | Δ vs F16 | compile s | peak RSS MB | tool calls (name / args exact) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | - | - | - | - | - | failed: {r['error']} |")
            continue
        tc = r.get("toolcalls") or {}
        tcs = (
            f"{tc['name_accuracy']:.3f} / {tc['argument_exact_match']:.3f}"
            if "name_accuracy" in tc
            else (tc.get("error", "not measured") if tc else "not measured")
        )
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        lines.append(
            f"| {r['row']} | {r['size_mb']:.2f} | {r['ppl']:.4f} | {r['ppl'] - base:+.4f} | "
            f"{r.get('wall_s', 0):.1f} | {rss} | {tcs} |"
        )
    lines += ["", "Pipelines:", ""]
    lines += [f"- {r['row']}: `{r['pipeline'] or '(none)'}`" for r in rows]
    lines.append("")
    for cap in (92, 80):
        fit = [
            r
            for r in rows[1:]
            if "error" not in r and r["size_mb"] <= cap and r["pipeline"].startswith(("quant", "mix"))
        ]
        if fit:
            best = min(fit, key=lambda r: r["ppl"])
            lines.append(
                f"recipe-{cap}MB: `{best['pipeline']}` with `--calib` Apache-2.0 + MPL-2.0 "
                f"({best['size_mb']:.2f} MB, perplexity {best['ppl'] - base:+.4f} vs F16)"
            )
        else:
            lines.append(f"recipe-{cap}MB: none of the measured edgec rows fits {cap} MB")
    write_results(os.path.relpath(args.out, HERE), lines)


if __name__ == "__main__":
    main()
