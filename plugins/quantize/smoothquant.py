"""smoothquant: migrates activation outliers into the weights (Xiao et al. 2022):
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` per input channel, folded as in AWQ.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...errors import UsageError
from ...ir import Model, ReferenceExecutor
from ...ir.passes import Pass, PassContext, option
from .scaling import apply_input_scale, linear_groups


@dataclasses.dataclass(frozen=True)
class SmoothQuant(Pass):
    name: ClassVar[str] = "smoothquant"
    summary: ClassVar[str] = "migrate activation outliers into Linear weights (per-channel scales folded)"
    alpha: float = option(0.5, check=lambda v: 0 <= v <= 1, allowed="0 <= alpha <= 1", help="migration strength")
    samples: int = option(32, check=lambda v: v > 0, allowed="a positive integer", help="calibration samples used")

    def run(self, model: Model, ctx: PassContext) -> bool:
        if ctx.calibration is None:
            raise UsageError("smoothquant needs calibration data: pass --calib")
        linears = [
            n
            for n in model.graph
            if n.qualified_op == "edgec::Linear"
            and n.arg(1).is_const
            and not any(o is n.output for o in model.graph.outputs)
        ]
        groups = [(x, g) for x, g in linear_groups(model, linears) if not x.is_const]
        if not groups:
            return False
        names = [x.name for x, _ in groups if x not in model.graph.inputs]
        ex = ReferenceExecutor(model, capture=names, capture_only=True, keep_quantized=True) if names else None
        amax: dict[str, np.ndarray | None] = {x.name: None for x, _ in groups}
        for s in ctx.calibration.samples[: self.samples]:
            res = ex.run(s) if ex is not None else {}
            for x, _ in groups:
                a = np.asarray(res.get(x.name, s.get(x.name)), np.float32)
                m = np.abs(a.reshape(-1, a.shape[-1])).max(0)
                prev = amax[x.name]
                amax[x.name] = m if prev is None else np.maximum(prev, m)
        changed = False
        for x, group in groups:
            wmax = np.max([np.abs(np.asarray(n.arg(1).numpy())).max(0) for n in group], axis=0)
            xmax = amax[x.name]
            assert xmax is not None  # calibration sets are never empty (and samples > 0)
            a = np.maximum(xmax, 1e-5)
            s = (a**self.alpha / np.maximum(wmax, 1e-5) ** (1 - self.alpha)).astype(np.float32)
            s = np.clip(s, 1e-4, 1e4)
            apply_input_scale(model, x, group, s)
            changed = True
        return changed
