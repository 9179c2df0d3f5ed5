"""``mixed-precision``: per-layer weight bit widths chosen from measured sensitivities.

The pass measures (or reads from the cache) every layer's sensitivity to each candidate bit width
(:mod:`.sensitivity`), builds the exact Pareto front of total weight bytes against summed sensitivity
(:mod:`.solver`), and then picks:

* ``avg_bits=B``: the least-damaging allocation whose weights (codes, scales and zero points counted) take
  at most ``B`` bits per parameter on average over the quantized layers;
* ``size_mb=S``: the least-damaging allocation for which the whole model's constants take at most ``S`` MB
  (10^6 bytes);
* ``max_drop=D``: the smallest allocation on the front whose measured loss on held-out samples (mean KL of
  the first output for ``metric=kl``, ``1 - cosine`` for ``metric=cosine``) stays within ``D`` and that
  keeps every property check (``checks=top1:0.99``; plugins add more). The report names the check that
  decided.

Only bit widths the compile's target can encode are offered. Each layer is then quantized by the
``quantize`` pass with its chosen width, and the allocation is recorded in the model's metadata.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from typing import ClassVar

import numpy as np

from ...checks import outputs_on
from ...errors import UsageError
from ...ir import Model, Tensor
from ...ir.passes import Pass, PassContext, option
from ...api.executor import task_threads
from .sensitivity import FLOAT16, METRICS, analyse, compare, to_float16, write_temp
from .solver import pareto_front

REPORT_KEY = "edgec.mixed_precision"
DEFAULT_CANDIDATES = "2:3:4:8"


def parse_candidates(text: str) -> list[int | str]:
    """``4:8:f16:p3`` -> [4, 8, 'f16', 'p3'] (widths ascending, then palettes, then f16), or a UsageError."""
    out: list[int | str] = []
    for t in (x.strip() for x in text.split(":")):
        if t.isdigit() and 2 <= int(t) <= 8:
            out.append(int(t))
        elif t == "f16" or (len(t) == 2 and t[0] == "p" and t[1] in "12345678"):
            out.append(t)
        else:
            raise UsageError(
                f"mixed-precision: bits={text!r}: {t!r} is not a candidate; use integer widths 2..8, "
                "pN (an N-bit palette, N in 1..8) or f16, ':'-separated, e.g. 4:8 or 8:f16"
            )
    return sorted(set(out), key=lambda b: (isinstance(b, str), str(b) if isinstance(b, str) else f"{b:02d}"))


@dataclasses.dataclass(frozen=True)
class MixedPrecision(Pass):
    name: ClassVar[str] = "mixed-precision"
    lossy: ClassVar[bool] = True  # changes the numbers on purpose: --verify judges fidelity
    summary: ClassVar[str] = "per-layer weight bits from measured sensitivity: avg_bits, size_mb or max_drop"
    bits: str = option(
        "",
        help="candidates, ':'-separated: integer widths 2..8, pN (an N-bit palette, Core ML), "
        "f16 (the layer kept in float16); default: the target's native mix (2:3:4:8 without one)",
    )
    avg_bits: float = option(
        0.0,
        check=lambda v: v >= 0,
        allowed=">= 0",
        help="average bits per weight (scales counted) over the quantized layers",
    )
    size_mb: float = option(
        0.0, check=lambda v: v >= 0, allowed=">= 0", help="total size of the model's constants in MB (10^6 bytes)"
    )
    max_drop: float = option(
        0.0,
        check=lambda v: v >= 0,
        allowed=">= 0",
        help="largest loss (metric=kl: mean "
        "KL; cosine: 1 - cosine) on held-out samples; the smallest model within it wins",
    )
    metric: str = option("kl", choices=METRICS, help="sensitivity metric (KL on logits, SQNR, cosine)")
    checks: str = option("", help="property checks that must hold, ';'-separated name:arg (e.g. top1:0.99)")
    method: str = option("rtn", choices=("rtn", "mse", "gptq"), help="quantization algorithm per layer")
    group: int = option(
        0,
        check=lambda v: v == 0 or v in (32, 64, 128, 256),
        allowed="0, 32, 64, 128 or 256",
        help="group size (0: per channel)",
    )
    ops: str = option("Linear:Conv", help="op types to quantize, ':'-separated")
    samples: int = option(
        8, check=lambda v: v > 0, allowed="a positive integer", help="calibration samples for the sensitivities"
    )
    seq: int = option(
        128,
        check=lambda v: v >= 0,
        allowed=">= 0",
        help="a language model's sensitivities on the first SEQ tokens of each calibration window (0: whole "
        "windows; the measurement's time is linear in the tokens)",
    )
    holdout: int = option(
        8,
        check=lambda v: v > 0,
        allowed="a positive integer",
        help="max_drop/checks: calibration samples after the first `samples` used to judge",
    )
    cache: bool = option(True, help="reuse cached sensitivities (same model, candidates and calibration)")
    distance: str = option(
        "auto",
        choices=("auto", "full"),
        help="sensitivities of a language model on its 4096 most probable tokens (auto) or on every logit (full)",
    )
    types: str = option(
        "",
        help="GGUF block types as the candidates instead of bits, ':'-separated (e.g. "
        "Q4_0:Q5_0:Q8_0); the default for the gguf target",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [k for k in ("avg_bits", "size_mb", "max_drop") if getattr(self, k)]
        if len(given) != 1:
            raise UsageError(
                "mixed-precision: give exactly one of avg_bits=, size_mb= or max_drop= "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.bits:
            parse_candidates(self.bits)
        if self.max_drop and self.metric == "sqnr":
            raise UsageError("mixed-precision: max_drop= is judged with metric=kl or metric=cosine")

    def widths(self) -> list[int | str]:
        return parse_candidates(self.bits or DEFAULT_CANDIDATES)

    def candidate(self, b: int | str) -> dict | None:
        """quantize's options for one candidate: a width, a palette ``pN``, a GGUF type name; None for f16."""
        if b == "f16":
            return None
        if isinstance(b, str) and b.startswith("p"):
            n = int(b[1:])  # the embedding table (no palette for Gather) keeps a linear width Core ML carries
            return {
                "bits": n,
                "method": "codebook",
                "head_bits": max(n, 2),
                "embedding_bits": 4 if n <= 4 else 8,
                "ops": self.ops,
            }
        if isinstance(b, str):
            # embedding and head follow at the type's nominal width (quantize maps it to llama.cpp's type)
            digit = re.search(r"\d", b)
            assert digit is not None  # a GGUF type (choices checked it): every name holds its width (Q4_K, IQ4_NL)
            nominal = int(digit.group(0))
            out: dict[str, str | int] = {"gguf": b, "method": self.method, "ops": self.ops}
            if nominal in (2, 3, 4, 5, 6, 8):
                out.update(embedding_bits=nominal, head_bits=nominal)
            return out
        return {
            "bits": b,
            "head_bits": b,
            "embedding_bits": b,
            "method": self.method,
            "group": self.group,
            "ops": self.ops,
        }

    def choices(self, ctx: PassContext) -> list[int | str]:
        """The candidates the target can encode: GGUF types (``types=``, or those the target mixes natively), else
        ``bits=`` or the target's native mix (``Capabilities.mixed``), each checked against what it carries."""
        from ...api import gguf as gg

        target = ctx.target
        native_types = [
            b for b in (target.capabilities.mixed if target is not None else ()) if isinstance(b, str) and b in gg.TYPES
        ]  # a target that mixes GGUF types (gguf)
        if self.types or native_types:
            types = self.types.split(":") if self.types else native_types
            unknown = [t for t in types if t not in gg.TYPES]
            if unknown:
                raise UsageError(f"mixed-precision: unknown GGUF types {unknown}; known: {', '.join(sorted(gg.TYPES))}")
            return list(types)  # (as list[int | str])
        if self.bits:
            widths = parse_candidates(self.bits)
        elif target is not None and target.capabilities.mixed:
            widths = list(target.capabilities.mixed)
        else:
            widths = parse_candidates(DEFAULT_CANDIDATES)
        if target is not None:
            can = target.capabilities
            bad = [
                b
                for b in widths
                if not (
                    ("symmetric", b) in can.quant
                    if isinstance(b, int)
                    else b in can.mixed
                    if b == "f16"
                    else ("codebook", int(b[1:])) in can.quant
                )
            ]
            if bad:
                ok = (
                    [b for s, b in sorted(can.quant) if s == "symmetric"]
                    + [f"p{b}" for s, b in sorted(can.quant) if s == "codebook"]
                    + (["f16"] if "f16" in can.mixed else [])
                )
                raise UsageError(
                    f"mixed-precision: target {target.name} cannot encode the candidates "
                    f"{', '.join(map(str, bad))}; it carries {':'.join(map(str, ok))} (its native mix: "
                    f"{':'.join(map(str, can.mixed)) or 'not declared'}): pass bits= with those"
                )
        if all(b == "f16" for b in widths):
            raise UsageError("mixed-precision: bits=f16 alone leaves nothing to choose; add quantized widths")
        return widths

    @staticmethod
    def spec(kwargs: dict | None) -> str:
        if kwargs is None:
            return FLOAT16
        return "quantize{" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + "}"

    def front(self, sens, cands):
        """The exact Pareto front over the measured table: (front, labels[layer][option] = candidate spec)."""
        options, labels = [], []
        for w in sens.layers:
            row = [(sens.table[w][c]["bytes"], sens.cost(w, c, self.metric), c) for c in cands if c in sens.table[w]]
            options.append([(s, c) for s, c, _ in row])
            labels.append([c for _, _, c in row])
        return pareto_front(options), labels

    def run(self, model: Model, ctx: PassContext) -> bool:
        widths = self.choices(ctx)
        cands = {self.spec(self.candidate(b)): b for b in widths}
        sens = analyse(
            model, list(cands), ctx, samples=self.samples, use_cache=self.cache, distance=self.distance, seq=self.seq
        )
        if not sens.layers:
            return False
        front, labels = self.front(sens, cands)
        params = sum(sens.params.values())
        report = {
            "metric": self.metric,
            "distance": sens.distance,
            "candidates": list(cands),
            "cached_sensitivity": sens.cached,
            "front_points": int(len(front.sizes)),
        }
        if self.avg_bits or self.size_mb:
            if self.avg_bits:
                budget = self.avg_bits * params / 8
            else:
                others = model.size_bytes() - sum(sens.float_bytes.values())
                budget = self.size_mb * 1e6 - others
            k = front.best_within(budget)
            if k is None:
                smallest = front.sizes[0]
                raise UsageError(
                    f"mixed-precision: no allocation fits the budget: the smallest takes {8 * smallest / params:.3f} "
                    f"bits per weight ({smallest / 1e6:.3f} MB of quantized weights) against "
                    f"{8 * max(budget, 0) / params:.3f}; add a smaller width to bits= or raise the budget"
                )
            report.update(budget_bytes=int(budget), decided_by="budget")
        else:
            k, report["evaluated"], report["decided_by"] = self._search(model, ctx, front, labels, sens, cands)
        choice = front.choice(k)
        alloc = {w: cands[labels[i][j]] for i, (w, j) in enumerate(zip(sens.layers, choice))}
        size = int(front.sizes[k])
        report.update(
            allocation=alloc,
            bytes=size,
            avg_bits=round(8 * size / params, 4),
            predicted_cost=float(front.costs[k]),
            histogram={str(b): sum(1 for v in alloc.values() if v == b) for b in widths},
        )
        self._apply(model, ctx, alloc, sens.nodes)
        model.reports[REPORT_KEY] = report
        return True

    def _apply(self, model: Model, ctx: PassContext, alloc: dict[str, int | str], nodes: dict[str, str]) -> None:
        """Quantize each layer (weight name -> its node ``nodes[w]``) with its width, palette or GGUF type; f16
        layers keep float weights rounded to float16 values (what a float16 engine stores)."""
        q = ctx.pass_class("quantize")
        for w, b in alloc.items():
            if b == "f16":
                v = model.graph.initializers[w]
                v.const = Tensor(to_float16(np.asarray(v.numpy())))
        for b in sorted(set(alloc.values()) - {"f16"}, key=str):
            names = [nodes[w] for w, v in alloc.items() if v == b]
            inc = "^(" + "|".join(re.escape(n) for n in names) + ")$"
            opts = self.candidate(b)
            assert opts is not None  # only f16 has none, and it is not among these
            q(**opts, include=inc).run(model, ctx)

    def _search(self, model: Model, ctx: PassContext, front, labels, sens, cands: dict[str, int | str]):
        """Binary search over the front (ascending size) for the smallest allocation within max_drop that
        keeps every check; returns (point, evaluations, what decided).

        With an executor of W workers, each round evaluates, at once, the points the serial search could visit
        next (its next levels, breadth first, W points): the search then replays over those results, so it
        decides exactly what the serial search decides, with about log2(W + 1) levels per round."""
        import pickle

        from ...checks import parse_checks
        from ...ir.serde import save

        checks = parse_checks(self.checks, ctx.checks)
        calib = ctx.calibration
        held = list(calib.samples[self.samples : self.samples + self.holdout]) or list(calib.samples[: self.holdout])
        names = [o.name for o in model.graph.outputs]
        ref = outputs_on(model, held, names)
        for c in checks:
            if c.needs_model:
                c.prepare(model)
        work = tempfile.mkdtemp(prefix="edgec-mixed-")
        ex = ctx.executor
        width = ex.workers if ex is not None and ex.fans_out else 1
        lean = dataclasses.replace(ctx, executor=None, _analyses={})
        if width > 1:
            try:  # a check holding something that cannot travel to a worker: judge here
                pickle.dumps((checks, lean))
            except Exception:  # noqa: BLE001 - pickling raises many kinds
                width = 1
        results: dict[int, dict] = {}
        try:
            path = os.path.join(work, "m")
            save(model, path)
            shared: dict = {
                "pass": self,
                "ctx": lean,
                "path": path,
                "held": held,
                "names": names,
                "ref": ref,
                "checks": checks,
                "nodes": sens.nodes,
            }
            if width > 1 and not getattr(ex, "same_machine", True):  # workers elsewhere: the saved model travels
                with open(path, "rb") as f:
                    shared["model"] = f.read()

            def alloc(k):
                choice = front.choice(k)
                return {w: cands[labels[i][j]] for i, (w, j) in enumerate(zip(sens.layers, choice))}

            def evaluate(points: list[int]) -> None:
                todo = [k for k in points if k not in results]
                if width > 1 and todo:  # every judgment on the workers: one thread count for all
                    done = ex.run(_judge_task, [alloc(k) for k in todo], shared=shared)
                    for k, r in zip(todo, done):  # a failure matters only where the search reads it
                        results[k] = r.value if r.ok else {"error": r.error}
                else:
                    for k in todo:
                        results[k] = _judge_task(alloc(k), shared)

            used: list[int] = []

            def judge(k: int, lo: int, hi: int, first: bool):
                if k not in results:
                    evaluate(_next_points(lo, hi, width, first, len(front.sizes)))
                used.append(k)
                r = results[k]
                if "error" in r:
                    raise UsageError(
                        f"mixed-precision: judging an allocation failed on the {ex.name} executor: "
                        f"{r['error']}; run without --workers / --executor to see it alone"
                    )
                return r["passed"], r["failed_by"]

            lo, hi = 0, len(front.sizes) - 1
            ok_hi, why_hi = judge(hi, lo, hi, True)
            if not ok_hi:
                raise UsageError(
                    f"mixed-precision: even the largest candidate allocation fails: {why_hi}; "
                    "add a wider width to bits= or relax max_drop= / checks="
                )
            last_fail = ""
            while lo < hi:
                mid = (lo + hi) // 2
                ok, why = judge(mid, lo, hi, False)
                if ok:
                    hi = mid
                else:
                    lo, last_fail = mid + 1, why
            decided = (
                f"smallest passing allocation; the next smaller one evaluated failed by {last_fail}"
                if last_fail
                else "the smallest allocation passed"
            )
            evaluated = [{"bytes": int(front.sizes[k]), **results[k]} for k in used]
            return hi, evaluated, decided
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _next_points(lo: int, hi: int, width: int, first: bool, n: int) -> list[int]:
    """The points the binary search over [lo, hi] may judge next, in the order it would, up to ``width``: the
    largest point first when it has not been judged, then the midpoints of the search's next levels, breadth
    first (a pass moves hi to mid, a failure lo to mid + 1)."""
    pts = [n - 1] if first else []
    queue = [(lo, hi)]
    while queue and len(pts) < width:
        lo_, hi_ = queue.pop(0)
        if lo_ >= hi_:
            continue
        mid = (lo_ + hi_) // 2
        if mid not in pts:
            pts.append(mid)
        queue += [(lo_, mid), (mid + 1, hi_)]
    return pts


_SAVED: dict[str, str] = {}  # in a worker: the driver's saved-model path -> the file written from its bytes


def _judge_task(alloc: dict, shared: dict) -> dict:
    """One allocation judged (in this process or a worker): the saved model quantized with it, the held-out
    samples run, the loss and every check against the float model's."""
    from ...ir.serde import load

    mp: MixedPrecision = shared["pass"]
    path = shared["path"]
    if not os.path.exists(path) and "model" in shared:  # a worker on another machine: the bytes, once per process
        if path not in _SAVED:
            _SAVED[path] = write_temp(shared["model"])
        path = _SAVED[path]
    m = load(path)
    mp._apply(m, shared["ctx"], alloc, shared["nodes"])
    got = outputs_on(m, shared["held"], shared["names"], task_threads())
    stats = compare(shared["ref"], got)
    loss = stats["kl"] if mp.metric == "kl" else 1.0 - stats["cosine"]
    verdicts = [(c.describe(), c.judge(m, shared["ref"], got)) for c in shared["checks"]]
    failed = [d for d, r in verdicts if not r.passed]
    ok = loss <= mp.max_drop and not failed
    why = (
        f"max_drop ({mp.metric} loss {loss:.4g} > {mp.max_drop})"
        if loss > mp.max_drop
        else f"check {failed[0]}"
        if failed
        else ""
    )
    return {
        "loss": loss,
        "passed": ok,
        "failed_by": why,
        "checks": {d: {"passed": r.passed, "value": r.value, "detail": r.detail} for d, r in verdicts},
    }
