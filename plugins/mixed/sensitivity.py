"""Per-layer sensitivity: quantize one layer at a time and measure how much the model's outputs move.

For every candidate configuration (a ``quantize{...}`` spec, e.g. ``quantize{bits=4}``), the whole model is
quantized once on a copy, which gives every layer's quantized weight under that configuration. Then, layer by
layer, only that layer's weight takes its quantized values in the float model and the reference executor runs
the calibration samples (one onnxruntime session whose float weights are fed per run, so a candidate costs a
run, not a session); the outputs are compared with the float model's:

* ``kl``: mean KL(softmax(float) || softmax(quantized)) over the last axis of the first output (logits);
* ``sqnr``: 10 log10(sum(float^2) / sum((float - quantized)^2)) in dB over all outputs;
* ``cosine``: cosine similarity of all outputs, flattened.

Results are cached under ``$XDG_CACHE_HOME/edgec/sensitivity`` (``~/.cache/...``) keyed by a hash of the
model (structure and weights), the candidates, the sample count and the calibration data: a second run with
the same inputs is a file read.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...errors import EdgecError
from ...ir import Model, QuantizedTensor, ReferenceExecutor
from ...ir.passes import PassContext

METRICS = ("kl", "sqnr", "cosine")
CACHE_VERSION = 2
FLOAT16 = "float16"  # the candidate "keep the layer in float16": weights rounded to half precision, 2 bytes each


def to_float16(arr: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest float16 (saturating at its largest finite value)."""
    return np.clip(arr, -65504.0, 65504.0).astype(np.float16).astype(np.float32)


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgec", "sensitivity")


@dataclasses.dataclass
class Sensitivity:
    """``table[layer][candidate] = {"kl", "sqnr", "cosine", "bytes"}``; ``float_bytes[layer]``; ``params``."""

    candidates: list[str]
    layers: list[str]  # weight names, graph order
    nodes: dict[str, str]  # weight -> node name
    params: dict[str, int]
    float_bytes: dict[str, int]
    table: dict[str, dict[str, dict[str, float]]]
    cached: bool = False

    def cost(self, layer: str, cand: str, metric: str) -> float:
        """An additive 'damage' for the solver: KL as is, 1 - cosine, or the noise power 10^(-sqnr/10)."""
        r = self.table[layer][cand]
        if metric == "kl":
            return max(r["kl"], 0.0)
        if metric == "cosine":
            return max(1.0 - r["cosine"], 0.0)
        return 10.0 ** (-r["sqnr"] / 10.0)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("cached")
        return d


def _model_hash(model: Model) -> tuple[str, str]:
    """(sha256 of the model's saved form, the temporary folder it was saved to) - the folder also serves as
    the source of copies."""
    from ...ir.serde import save

    d = tempfile.mkdtemp(prefix="edgec-sens-")
    save(model, os.path.join(d, "m"))
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(d)):
        for f in sorted(files):
            h.update(f.encode())
            with open(os.path.join(root, f), "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest(), d


def _outputs(ex: ReferenceExecutor, model: Model, samples, extra=None) -> list[list[np.ndarray]]:
    names = [o.name for o in model.graph.outputs]
    res = []
    for s in samples:
        r = ex.run({**s, **(extra or {})})
        res.append([np.asarray(r[n], np.float64) for n in names])
    return res


def compare(ref: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> dict[str, float]:
    """KL on the first output's last axis, SQNR and cosine over all outputs."""
    kl, n = 0.0, 0
    num = den = dot = na = nb = 0.0
    for r_outs, g_outs in zip(ref, got):
        a, b = r_outs[0], g_outs[0]
        if a.ndim >= 1 and a.shape[-1] > 1:
            la = a - a.max(-1, keepdims=True)
            lb = b - b.max(-1, keepdims=True)
            pa = np.exp(la)
            pa /= pa.sum(-1, keepdims=True)
            lpa = la - np.log(np.exp(la).sum(-1, keepdims=True))
            lpb = lb - np.log(np.exp(lb).sum(-1, keepdims=True))
            kl += float(np.sum(pa * (lpa - lpb)))
            n += int(np.prod(a.shape[:-1]))
        for x, y in zip(r_outs, g_outs):
            num += float(np.sum(x * x))
            den += float(np.sum((x - y) ** 2))
            dot += float(np.sum(x * y))
            na += float(np.sum(x * x))
            nb += float(np.sum(y * y))
    sqnr = 10 * np.log10(num / den) if den > 0 else 200.0
    cos = dot / np.sqrt(na * nb) if na > 0 and nb > 0 else 1.0
    return {"kl": kl / max(n, 1), "sqnr": float(min(sqnr, 200.0)), "cosine": float(cos)}


def _quantized_weights(src_dir: str, spec: str, ctx: PassContext) -> dict[str, tuple[int, QuantizedTensor]]:
    """Quantize a copy of the model with ``spec``; node name -> (weight input index, quantized weight)."""
    from ...ir.passes import PassManager, parse_pipeline
    from ...ir.serde import load

    m = load(os.path.join(src_dir, "m"))
    PassManager(parse_pipeline(spec, ctx.passes)).run(m, ctx)
    out = {}
    for n in m.graph:
        for i, v in enumerate(n.inputs):
            if v is not None and v.is_const and isinstance(v.const, QuantizedTensor):
                out[n.name] = (i, v.const)
    return out


def _measure(
    model: Model,
    calib: list,
    free: list[str],
    items: list[tuple[str, int, str, dict[str, QuantizedTensor | None]]],
    say: Callable[[str], None] = lambda m: None,
    threads: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """The metrics of each (layer, candidate) of ``items`` (node name, weight input, weight name, candidate ->
    quantized weight, None for float16): that layer's weight replaced, the calibration samples run, the outputs
    compared with the float model's."""
    g = model.graph
    nodes = {n.name: n for n in g}
    ex = ReferenceExecutor(model, free=free, threads=threads)
    ref = _outputs(ex, model, calib)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for k, (nname, idx, wname, cands) in enumerate(items):
        n = nodes[nname]
        w = n.arg(idx)
        wshape = w.static_shape
        assert wshape is not None  # a constant weight: its shape is its tensor's
        row = out.setdefault(wname, {})
        for c, q in cands.items():
            if q is None:  # float16
                half = to_float16(np.asarray(w.numpy()))
                got = _outputs(ex, model, calib, {w.name: half})
                row[c] = {**compare(ref, got), "bytes": 2 * int(np.prod(wshape))}
                continue
            if w.name in free:
                got = _outputs(ex, model, calib, {w.name: q.dequantize()})
            else:
                tmp = g.add_const(g.unique_name(w.name + "_sens"), q)
                n.replace_input_with(idx, tmp)
                try:
                    got = _outputs(ReferenceExecutor(model, threads=threads), model, calib)
                finally:
                    n.replace_input_with(idx, w)
                    g.remove_const(tmp.name)
            row[c] = {**compare(ref, got), "bytes": int(q.nbytes)}
        say(f"sensitivity: layer {k + 1}/{len(items)} {wname}")
    return out


_MODELS: dict[str, str] = {}  # in a worker: model digest -> the file it was written to (once per process)


def _measure_shard(items: list, shared: dict) -> dict[str, dict[str, dict[str, float]]]:
    """One shard of layers, in a worker: the model read from the file the analysis saved (a worker on this
    machine), else from the saved bytes the executor sent once (``shared["model"]``: Ray's object store), written
    to a file once per worker process."""
    from ...ir.serde import load

    path = shared.get("path")
    if path is None or not os.path.exists(path):
        path = _MODELS.get(shared["digest"])
        if path is None:
            fd, path = tempfile.mkstemp(prefix="edgec-sens-", suffix=".edgec")
            with os.fdopen(fd, "wb") as f:
                f.write(shared["model"])
            atexit.register(os.remove, path)  # when the worker process ends
            _MODELS[shared["digest"]] = path
    # the executor gives each worker its share of the cores (OMP_NUM_THREADS); onnxruntime does not read it
    threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
    return _measure(load(path), shared["calib"], shared["free"], items, threads=threads)


def analyse(
    model: Model,
    candidates: Sequence[str],
    ctx: PassContext,
    *,
    samples: int = 8,
    use_cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Sensitivity:
    """Measure every quantizable layer's sensitivity to each candidate ``quantize{...}`` spec."""
    import shutil

    say = progress or (lambda m: None)
    if ctx.calibration is None:
        from ...errors import UsageError

        raise UsageError(
            "sensitivity analysis needs calibration data: pass --calib (a .npz, a folder of samples, "
            "or 'random' for a smoke test)"
        )
    calib = list(ctx.calibration.samples[:samples])
    digest, src = _model_hash(model)
    try:
        h = hashlib.sha256(f"v{CACHE_VERSION}|{digest}|{list(candidates)}|{len(calib)}".encode())
        for s in calib:
            for k in sorted(s):
                a = np.ascontiguousarray(s[k])
                h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
        key = h.hexdigest()
        path = os.path.join(cache_dir(), key[:32] + ".json")
        if use_cache and os.path.exists(path):
            with open(path) as f:
                d = json.load(f)
            say(f"sensitivity: cached ({path})")
            return Sensitivity(**d, cached=True)
        g = model.graph
        per_cand = {}
        for c in candidates:
            if c == FLOAT16:
                continue
            say(f"sensitivity: quantizing a copy with {c}")
            per_cand[c] = _quantized_weights(src, c, ctx)
        nodes = {n.name: n for n in g}
        layer_nodes = [n.name for n in g if any(n.name in q for q in per_cand.values())]
        weights = {}
        for nname in layer_nodes:
            idx = next(q[nname][0] for q in per_cand.values() if nname in q)
            weights[nname] = (idx, nodes[nname].arg(idx))
        # One session for everything: the float32 weights under study are fed on every run, so each
        # (layer, candidate) is one run with that weight's dequantized values, not a new session. Every shard
        # makes the same weights free, so each runs the same session (the same kernels, the same numbers).
        free = sorted(
            {
                w.name
                for _, w in weights.values()
                if w.dtype is not None and w.dtype.numpy == np.float32 and not isinstance(w.const, QuantizedTensor)
            }
        )
        params: dict[str, int] = {}
        fbytes: dict[str, int] = {}
        wnames: dict[str, str] = {}
        items: list[tuple[str, int, str, dict[str, QuantizedTensor | None]]] = []
        seen: set[tuple[str, str]] = set()
        for nname in layer_nodes:
            idx, w = weights[nname]
            wnames.setdefault(w.name, nname)
            wshape = w.static_shape
            assert wshape is not None  # a constant weight: its shape is its tensor's
            params[w.name] = int(np.prod(wshape))
            fbytes[w.name] = int(np.asarray(w.numpy()).nbytes)
            cands: dict[str, QuantizedTensor | None] = {}
            for c in candidates:
                if c == FLOAT16:
                    if w.name in free and (w.name, c) not in seen:
                        cands[c] = None
                elif nname in per_cand[c] and (w.name, c) not in seen:
                    cands[c] = per_cand[c][nname][1]
                seen.update((w.name, c2) for c2 in cands)
            if cands:  # a weight shared by several layers is measured at its first one
                items.append((nname, idx, w.name, cands))
        ex = getattr(ctx, "executor", None)
        if ex is not None and ex.workers > 1 and len(items) > 1:
            shards = [items[k :: ex.workers] for k in range(ex.workers)]
            say(f"sensitivity: {len(items)} layers in {len(shards)} shards on {ex.name} x{ex.workers}")
            saved = os.path.join(src, "m")
            shared: dict[str, Any] = {"calib": calib, "free": free, "digest": digest, "path": saved}
            if not getattr(ex, "same_machine", True):  # workers elsewhere: the saved model travels, once
                with open(saved, "rb") as f:
                    shared["model"] = f.read()
                shared["path"] = None
            done = ex.run(
                _measure_shard,
                shards,
                shared=shared,
                on_done=lambda r: say(f"sensitivity: shard {r.index + 1}/{len(shards)} done ({r.seconds:.0f} s)"),
            )
            parts: dict[str, dict[str, dict[str, float]]] = {}
            for r in done:
                if not r.ok:
                    raise EdgecError(
                        f"sensitivity: shard {r.index + 1} of {len(shards)} failed on the {ex.name} executor: "
                        f"{r.error}; measure in this process (no --workers / --executor) to see it alone"
                    )
                parts.update(r.value)  # each weight is measured in one item, so in one shard
        else:
            parts = _measure(model, calib, free, items, say)
        # every layer's weight in graph order, whatever order the shards finished in (a row may be empty: no
        # candidate quantizes that layer)
        table = {wname: parts.get(wname, {}) for wname in wnames}
        sens = Sensitivity(list(candidates), list(table), wnames, params, fbytes, table)
        if use_cache:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp_path = path + f".{os.getpid()}.tmp"
            with open(tmp_path, "w") as f:
                json.dump(sens.to_json(), f)
            os.replace(tmp_path, path)
        return sens
    finally:
        shutil.rmtree(src, ignore_errors=True)


def label(spec: str) -> str:
    """A short name for a candidate spec: '4 bit', 'palette 3 bit', 'Q4_K', 'float16'."""
    if spec == FLOAT16:
        return "float16"
    gg = re.search(r"gguf=(\w+)", spec)
    if gg:
        return gg.group(1)
    bits = re.search(r"bits=(\d+)", spec)
    if not bits:
        return spec
    return ("palette " if "method=codebook" in spec else "") + f"{bits.group(1)} bit"


def plot(sens: Sensitivity, path: str, metric: str = "kl") -> str:
    """A PNG of every layer's sensitivity per candidate (log scale for kl / 1 - cosine); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(sens.layers) + 2), 4.2))
    x = np.arange(len(sens.layers))
    for c in sens.candidates:
        ys = [sens.table[w][c][metric] if c in sens.table[w] else np.nan for w in sens.layers]
        if metric == "cosine":
            ys = [1 - y for y in ys]
        ax.plot(x, ys, marker="o", ms=3, lw=1, label=label(c))
    if metric != "sqnr":
        ax.set_yscale("log")
    ax.set_ylabel({"kl": "KL(float || quantized)", "cosine": "1 - cosine", "sqnr": "SQNR (dB)"}[metric])
    ax.set_xticks(x)
    ax.set_xticklabels([sens.nodes.get(w, w)[-28:] for w in sens.layers], rotation=90, fontsize=6)
    ax.set_title("per-layer sensitivity (one layer quantized at a time)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
