"""quantize-activations: activation quantization for int8-compute targets.

``quantize-activations`` observes the inputs of Conv / Linear / MatMul (and residual Adds) on the
calibration data and annotates each with a per-tensor :class:`ActivationQuant`. Observers:

* ``minmax``: the observed range;
* ``percentile``: the given percentile of |x| (outliers clipped);
* ``entropy``: TensorRT's KL-divergence threshold on a 2048-bin histogram of |x|;
* ``mse``: the threshold minimising the expected quantization MSE under the histogram.

The reference executor simulates the annotations exactly (QuantizeLinear/DequantizeLinear), so a
model's accuracy with int8 activations is measurable before any target runs it.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import ClassVar

import numpy as np

from ...errors import UsageError
from ...ir import ActivationQuant, Model, ReferenceExecutor, Value
from ...ir.passes import Pass, PassContext, option
from ...ir.schemes import SCHEMES

BINS = 2048
MAX_RANGE = 1e30  # a value observed at or beyond this magnitude is not quantized


def _targets(model: Model, ops: set[str]) -> list[Value]:
    out, seen = [], set()
    for n in model.graph:
        op = n.qualified_op
        if op not in ops:
            continue
        if op in ("Conv", "edgec::Linear"):
            cands = [n.inputs[0]]
        elif op in ("MatMul", "Add"):
            cands = [v for v in n.inputs if v is not None and not v.is_const]
            if op == "Add" and len(cands) < 2:
                continue  # only residual adds (two activations) are quantized
        else:
            continue
        for v in cands:
            if v is not None and not v.is_const and v.dtype is not None and v.dtype.is_float and id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def kl_threshold(hist: np.ndarray, width: float, levels: int = 128, step: int = 16) -> float:
    """TensorRT-style entropy calibration on a histogram of |x| (bin width ``width``)."""
    hist = hist.astype(np.float64)
    best_i, best_kl = len(hist), np.inf
    for i in range(levels, len(hist) + 1, step):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        # Merge the i bins into `levels` quantized bins, then spread each back over its nonzero bins.
        idx = (np.arange(i) * levels) // i
        nz = (hist[:i] > 0).astype(np.float64)
        qsum = np.bincount(idx, weights=hist[:i], minlength=levels)
        qcnt = np.bincount(idx, weights=nz, minlength=levels)
        q = np.where(nz > 0, (qsum / np.maximum(qcnt, 1))[idx], 0.0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        p /= ps
        q /= qs
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * width


def mse_threshold(hist: np.ndarray, width: float, qmax: int = 127) -> float:
    """Threshold minimising E[(x - Q(x))^2] for |x| distributed as the histogram."""
    centers = (np.arange(len(hist)) + 0.5) * width
    best_t, best_e = centers[-1], np.inf
    for t in np.linspace(centers[-1] * 0.2, centers[-1], 100):
        s = t / qmax
        clip_err = np.where(centers > t, (centers - t) ** 2, 0.0)
        err = float(np.sum(hist * (clip_err + np.where(centers <= t, s * s / 12.0, 0.0))))
        if err < best_e:
            best_e, best_t = err, t
    return float(best_t)


@dataclasses.dataclass(frozen=True)
class QuantizeActivations(Pass):
    name: ClassVar[str] = "quantize-activations"
    lossy: ClassVar[bool] = True  # changes the numbers on purpose: --verify judges fidelity
    summary: ClassVar[str] = "calibrate per-tensor int8 activation scales (minmax/percentile/entropy/mse)"
    observer: str = option("minmax", choices=("minmax", "percentile", "entropy", "mse"), help="range estimator")
    percentile: float = option(
        99.99,
        check=lambda v: 50 < v <= 100,
        allowed="50 < percentile <= 100",
        help="percentile observer's percentile of |x|",
    )
    scheme: str = option("symmetric", choices=("symmetric", "asymmetric"), help="int8 or uint8 with zero point")
    ops: str = option("Conv:Linear:MatMul:Add", help="ops whose activation inputs are quantized, ':'-separated")
    samples: int = option(32, check=lambda v: v > 0, allowed="a positive integer", help="calibration samples used")

    def __post_init__(self) -> None:
        super().__post_init__()
        if SCHEMES[self.scheme].has_zero_point and self.observer in ("entropy", "mse"):
            raise UsageError(
                f"quantize-activations: observer={self.observer} is symmetric; use scheme=symmetric "
                "or observer=minmax/percentile"
            )

    def run(self, model: Model, ctx: PassContext) -> bool:
        if ctx.calibration is None:
            raise UsageError("quantize-activations needs calibration data: pass --calib")
        ops = {{"Linear": "edgec::Linear"}.get(o, o) for o in self.ops.split(":")}
        values = _targets(model, ops)
        if not values:
            return False
        samples = ctx.calibration.samples[: self.samples]
        names = [v.name for v in values if v not in model.graph.inputs]
        ex = ReferenceExecutor(model, capture=names, capture_only=bool(names), keep_quantized=True) if names else None
        lo = {v.name: np.inf for v in values}
        hi = {v.name: -np.inf for v in values}

        def observe(fn):
            for s in samples:
                res = ex.run(s) if ex is not None else {}
                for v in values:
                    fn(v.name, np.asarray(res[v.name] if v.name in res else s[v.name], np.float32))

        def rng(name, a):
            lo[name] = min(lo[name], float(a.min()))
            hi[name] = max(hi[name], float(a.max()))

        observe(rng)
        # an additive attention mask (-inf, or float32's lowest, where a token is masked) has no int8 grid: one step
        # would be ~1e36, and the scores added to it would all round to zero. Such values stay float.
        wild = [v.name for v in values if not max(abs(lo[v.name]), abs(hi[v.name])) < MAX_RANGE]
        if wild:
            warnings.warn(
                f"quantize-activations: {len(wild)} value(s) left in float, their calibrated range reaching "
                f"{MAX_RANGE:g} or infinity (an additive attention mask?): {', '.join(wild[:5])}"
                + (" ..." if len(wild) > 5 else ""),
                stacklevel=2,
            )
            values = [v for v in values if v.name not in wild]
            if not values:
                return False
        amax = {k: max(abs(lo[k]), abs(hi[k]), 1e-12) for k in lo if k not in wild}
        thresholds = dict(amax)
        if self.observer != "minmax":
            hists = {k: np.zeros(BINS) for k in amax}

            def hist(name, a):
                hists[name] += np.histogram(np.abs(a), bins=BINS, range=(0, amax[name]))[0]

            observe(hist)
            for k, h in hists.items():
                width = amax[k] / BINS
                if self.observer == "percentile":
                    cdf = np.cumsum(h) / max(h.sum(), 1)
                    thresholds[k] = (np.searchsorted(cdf, self.percentile / 100.0) + 1) * width
                elif self.observer == "entropy":
                    thresholds[k] = kl_threshold(h, width)
                else:
                    thresholds[k] = mse_threshold(h, width)
        for v in values:
            t = max(min(thresholds[v.name], amax[v.name]), 1e-12)
            if SCHEMES[self.scheme].signed:
                v.quant = ActivationQuant(
                    scale=float(np.float32(t / 127.0)), zero_point=0, bits=8, signed=True, observer=self.observer
                )
            else:
                frac = t / amax[v.name]
                a, b = min(lo[v.name] * frac, 0.0), max(hi[v.name] * frac, 0.0)
                scale = float(np.float32(max(b - a, 1e-12) / 255.0))
                zp = int(np.clip(round(-a / scale), 0, 255))
                v.quant = ActivationQuant(scale=scale, zero_point=zp, bits=8, signed=False, observer=self.observer)
        return True


@dataclasses.dataclass(frozen=True)
class FloatActivations(Pass):
    """Drops every activation quantization annotation: activations are computed in float, the weights keep their
    grids. For a target that carries quantized weights but not int8 activations (Core ML) and a model whose
    activations were quantized elsewhere (a QAT or post-training Q/DQ export) or by quantize-activations."""

    name: ClassVar[str] = "float-activations"
    lossy: ClassVar[bool] = True  # the activations are no longer rounded: --verify judges fidelity to the original
    summary: ClassVar[str] = "compute activations in float: drop int8 activation quantization, keep weight grids"

    def run(self, model: Model, ctx: PassContext) -> bool:
        values = [v for v in model.graph.values() if v.quant is not None]
        for v in values:
            v.quant = None
        return bool(values)
