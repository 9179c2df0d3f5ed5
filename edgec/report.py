"""``report.html``: a self-contained page (plots inlined as PNG data URIs, no network, no external files)
written next to ``manifest.json`` by every compile.

It shows what the compile did to the model: sizes by layer and by encoding, the histogram of bits per
weight, per-layer quantization error, the mixed-precision decision, the verification results and, for
language models compiled with ``--eval-text``, perplexity before and after. Everything comes from the
manifest, so the page is as deterministic as the manifest: identical inputs give a byte-identical report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import Any

FILE = "report.html"
_MAX_BARS = 40


def _png(fig) -> str:
    """The figure as an <img> with a base64 PNG (no timestamp or software tag, so bytes are reproducible)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, metadata={"Software": None})
    plt.close(fig)
    return f'<img class="plot" alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _num(v: Any) -> float | None:
    """A finite number, else None (the manifest spells an exact layer's infinite SQNR "inf")."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _encoding(row: dict) -> str:
    if "bits" in row and row.get("scheme"):
        s = row["scheme"]
        if s == "vector":
            return f"vq{row.get('vector_dim', '?')}d-{row.get('bits_per_weight', '?')}b"
        return ("palette" if s == "codebook" else "int" if s == "symmetric" else s) + str(row["bits"])
    return row.get("dtype") or "?"


def _bits_per_weight(row: dict) -> float:
    n = 1
    for d in row.get("shape") or [1]:
        n *= int(d)
    return 8.0 * row["bytes"] / max(n, 1)


def _table(rows: list[list[Any]], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return "-" if v is None else str(v)


def plots(manifest: dict) -> dict[str, str]:
    """Section name -> <img> for every plot the manifest has data for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    layers = sorted(manifest.get("layers") or [], key=lambda r: -r["bytes"])
    qw = (manifest.get("quantization") or {}).get("weights") or {}
    if layers:
        out.update(_size_plots(plt, layers, qw))
    errs = [
        (n, q)
        for n, q in qw.items()
        if _num(q.get("sqnr_db")) is not None or _num(q.get("rel_output_error")) is not None
    ]
    if errs:
        out["quantization error"] = _error_plot(plt, errs)
    ev = manifest.get("evaluation") or {}
    ppl = [(k, ev[k]) for k in ("float_perplexity", "compiled_perplexity", "artifact_perplexity") if ev.get(k)]
    if ppl:
        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.bar([k.replace("_perplexity", "") for k, _ in ppl], [v for _, v in ppl], color="#117733")
        for i, (_, v) in enumerate(ppl):
            ax.annotate(f"{v:.3f}", (i, v), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("perplexity")
        ax.set_title(f"perplexity on {ev.get('text')} ({ev.get('tokens')} tokens)")
        fig.tight_layout()
        out["perplexity"] = _png(fig)
    samples = (manifest.get("bench") or {}).get("latency_samples_ms")
    if samples:
        out["latency"] = _latency_plot(plt, manifest["bench"])
    return out


def _latency_plot(plt, rec: dict) -> str:
    """Each timed inference's latency in run order, with the median, p90 and p99 as lines."""
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.plot(range(1, len(rec["latency_samples_ms"]) + 1), rec["latency_samples_ms"], ".", color="#332288")
    for k, style in (("median", "-"), ("p90", "--"), ("p99", ":")):
        v = rec["latency_ms"][k]
        ax.axhline(v, color="#882255", linestyle=style, linewidth=1, label=f"{k} {v:.3f} ms")
    ax.set_xlabel("run")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"latency on {rec.get('runtime')} ({rec.get('threads')} threads, after {rec.get('warmup')} warm-up)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _bench_section(rec: dict, figs: dict[str, str]) -> list[str]:
    """The report's speed section (edgec compile --bench)."""
    if not rec.get("ran", True):
        return ["<h2>Speed</h2>", f"<p>not measured: {html.escape(str(rec.get('reason')))}</p>"]
    skip = {"latency_samples_ms", "latency_ms", "ran"}
    rows = [[k, rec[k]] for k in sorted(rec) if k not in skip]
    rows += [[f"latency {k} (ms)", v] for k, v in (rec.get("latency_ms") or {}).items()]
    return ["<h2>Speed</h2>" + figs.get("latency", ""), _table(rows, ["", ""])]


def _size_plots(plt, layers: list[dict], qw: dict) -> dict[str, str]:
    """Weights by size (largest first), bytes by encoding and the bits histogram."""
    out = {}
    top = layers[:_MAX_BARS][::-1]
    encs = sorted({_encoding(r) for r in layers})
    colors = {e: plt.cm.tab10(i % 10) for i, e in enumerate(encs)}
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.22 * len(top) + 1)))
    before = [next((q["bytes_before"] for n, q in qw.items() if r["name"].startswith(n)), None) for r in top]
    if any(b is not None for b in before):
        ax.barh(range(len(top)), [b or 0 for b in before], color="#dddddd", label="before")
    ax.barh(range(len(top)), [r["bytes"] for r in top], color=[colors[_encoding(r)] for r in top])
    ax.set_yticks(range(len(top)))
    ax.set_yticklabels([r["name"][-40:] for r in top], fontsize=7)
    ax.set_xlabel("bytes")
    ax.set_title(f"weights by size (largest {len(top)} of {len(layers)})")
    for e in encs:
        ax.barh([0], [0], color=colors[e], label=e)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out["sizes by layer"] = _png(fig)

    totals: dict[str, int] = {}
    for r in layers:
        totals[_encoding(r)] = totals.get(_encoding(r), 0) + r["bytes"]
    names = sorted(totals, key=lambda k: -totals[k])
    out["sizes by encoding"] = _bar(
        plt, names, [totals[k] / 1e6 for k in names], [colors[k] for k in names], "bytes by encoding", ylabel="MB"
    )
    hist: dict[float, int] = {}
    for r in layers:
        n = 1
        for d in r["shape"]:
            n *= int(d)
        b = round(_bits_per_weight(r), 2)
        hist[b] = hist.get(b, 0) + n
    keys = sorted(hist)
    out["bits histogram"] = _bar(
        plt,
        [f"{k:g}" for k in keys],
        [hist[k] for k in keys],
        "#4477aa",
        "bits histogram",
        ylabel="weights",
        xlabel="stored bits per weight (scales counted)",
    )
    return out


def _bar(plt, names, values, color, title: str, ylabel: str, xlabel: str | None = None) -> str:
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.bar(names, values, color=color)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def _error_plot(plt, errs: list) -> str:
    """Per-layer quantization error: the output error on calibration data (bars) and the weight SQNR (dots)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 3.4))
    x = list(range(len(errs)))
    rel = [_num(q.get("rel_output_error")) for _, q in errs]
    if any(r is not None for r in rel):
        ax.bar(x, [r or 0 for r in rel], color="#cc6677")
        ax.set_ylabel("relative output error (bars)")
        ax2 = ax.twinx()
        sqnr = [_num(q.get("sqnr_db")) for _, q in errs]
        ax2.plot(x, [np.nan if v is None else v for v in sqnr], "k.", ms=5)
        ax2.set_ylabel("weight SQNR dB (dots)")
        ax.set_title("per-layer quantization error (layer output on calibration data; weight SQNR)")
    else:
        ax.bar(x, [_num(q.get("sqnr_db")) or 0 for _, q in errs], color="#cc6677")
        ax.set_ylabel("weight SQNR dB")
        ax.set_title("per-layer quantization error (weight SQNR; --calib adds the output error)")
    ax.set_xticks(x)
    ax.set_xticklabels([n[-24:] for n, _ in errs], rotation=90, fontsize=6)
    fig.tight_layout()
    return _png(fig)


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.ok{color:#117733;font-weight:bold}.bad{color:#bb2222;font-weight:bold}
img.plot{max-width:100%;display:block;margin:.5em 0 1.5em}code{background:#f3f3f3;padding:0 3px}"""

# After load, the page records how many plots decoded (used by the headless-browser test; harmless otherwise).
_JS = """window.addEventListener('load',function(){var n=0;document.querySelectorAll('img.plot').forEach(
function(i){if(i.complete&&i.naturalWidth>0)n++;});document.body.setAttribute('data-plots-loaded',n);});"""


def render(manifest: dict) -> str:
    """The report page for ``manifest`` (a compile's manifest.json contents)."""
    t = manifest.get("target") or {}
    src = manifest.get("source") or {}
    sizes = manifest.get("sizes") or {}
    figs = plots(manifest)
    parts = [
        f"<h1>edgec report: {html.escape(str(src.get('path') or 'model'))} &rarr; "
        f"{html.escape(str(t.get('spec') or t.get('name')))}</h1>"
    ]
    before, after = sizes.get("weights_bytes_before"), sizes.get("weights_bytes_after")
    parts.append(
        _table(
            [
                ["edgec", manifest.get("edgec_version")],
                ["source sha256", src.get("sha256")],
                ["pipeline", " → ".join(manifest.get("pipeline") or [])],
                ["parameters", sizes.get("parameters")],
                [
                    "weights",
                    f"{before} → {after} bytes" + (f" ({before / after:.2f}× smaller)" if before and after else ""),
                ],
                ["files", ", ".join(f"{f['path']} ({f['bytes']} B)" for f in manifest.get("files") or [])],
                ["calibration", manifest.get("calibration")],
            ],
            ["", ""],
        )
    )
    parts.extend(_verification_section(manifest.get("verification")))
    for name in ("sizes by layer", "sizes by encoding", "bits histogram"):
        if name in figs:
            parts.append(f"<h2>{name.capitalize()}</h2>{figs[name]}")
    qw = (manifest.get("quantization") or {}).get("weights") or {}
    if qw:
        parts.append("<h2>Quantization</h2>" + figs.get("quantization error", ""))
        cols = ["method", "scheme", "bits", "group_size", "bytes_before", "bytes_after", "rel_output_error", "sqnr_db"]
        parts.append(_table([[n] + [q.get(c) for c in cols] for n, q in qw.items()], ["weight"] + cols))
    mp = manifest.get("mixed_precision")
    if mp:
        parts.append("<h2>Mixed precision</h2>")
        parts.append(
            _table([[k, mp.get(k)] for k in ("avg_bits", "bytes", "metric", "decided_by", "histogram")], ["", ""])
        )
        parts.append(_table(sorted([w, b] for w, b in (mp.get("allocation") or {}).items()), ["weight", "choice"]))
    ev = manifest.get("evaluation")
    if ev:
        parts.append("<h2>Language model evaluation</h2>" + figs.get("perplexity", ""))
        parts.append(_table([[k, ev[k]] for k in sorted(ev)], ["", ""]))
    if manifest.get("bench"):
        parts.extend(_bench_section(manifest["bench"], figs))
    notes = manifest.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>edgec report</title>'
        f'<style>{_CSS}</style><script>{_JS}</script></head>\n<body data-plots="{len(figs)}">\n'
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _verification_section(v: dict | None) -> list[str]:
    """The report's verification section: the verdict, its summary and the per-output figures."""
    parts = ["<h2>Verification</h2>"]
    if v is None:
        parts.append("<p>not run (compile with <code>--verify</code>)</p>")
    else:
        cls = "ok" if v.get("passed") else "bad"
        parts.append(
            f'<p class="{cls}">{"passed" if v.get("passed") else "FAILED"}</p>'
            f"<p>{html.escape(str(v.get('summary', '')))} &mdash; runtime: "
            f"{html.escape(str(v.get('runtime', '?')))}</p>"
        )
        outs = v.get("outputs") or []
        keys = sorted({k for o in outs for k in o if k not in ("output",)})
        parts.append(
            _table([[k] + [o.get(k) for o in outs] for k in keys], ["output"] + [o.get("output") for o in outs])
        )
    return parts


def write(manifest: dict, path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(manifest))
    return path
