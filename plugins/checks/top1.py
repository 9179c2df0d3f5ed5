"""``top1:X``: the candidate's top-1 agrees with the float model's on at least a fraction X of rows."""

from __future__ import annotations

import numpy as np

from ...checks import Check, CheckResult
from ...errors import UsageError


class Top1Agreement(Check):
    """The candidate's argmax over the last axis of the first output agrees with the float model's on at
    least the given fraction of rows."""

    name = "top1"
    summary = "top-1 agreement with the float model >= X (first output, last axis), e.g. top1:0.99"

    def __init__(self, arg: str):
        super().__init__(arg)
        try:
            self.min = float(arg)
        except ValueError:
            raise UsageError(f"check top1:{arg}: the argument must be a fraction, e.g. top1:0.99") from None
        if not 0 < self.min <= 1:
            raise UsageError(f"check top1:{arg}: the fraction must lie in (0, 1]")

    def evaluate(self, reference, candidate) -> CheckResult:
        agree = total = 0
        for r, c in zip(reference, candidate):
            a, b = np.asarray(r[0]), np.asarray(c[0])
            agree += int(np.sum(a.argmax(-1) == b.argmax(-1)))
            total += int(np.prod(a.shape[:-1]))
        frac = agree / max(total, 1)
        return CheckResult(frac >= self.min, frac, f"top-1 agreement {frac:.4f} (need >= {self.min})")
