"""round-float-weights: the gguf target's own pass, run after the user's pipeline, so that the reference executor
computes what the GGUF file stores (float weight matrices rounded to F16 / BF16 values)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...api.gguf import FLOAT_TYPES
from ...ir import Model, Tensor
from ...ir.passes import Pass, PassContext, option


def round_float(arr: np.ndarray, ftype: str) -> np.ndarray:
    if ftype == "F16":
        return arr.astype(np.float16).astype(np.float32)
    if ftype == "BF16":
        import ml_dtypes

        return arr.astype(ml_dtypes.bfloat16).astype(np.float32)
    return arr


@dataclasses.dataclass(frozen=True)
class RoundFloatWeights(Pass):
    """Round float weight matrices to the storage float type (values stay float32 in the IR)."""

    name: ClassVar[str] = "round-float-weights"
    lossy: ClassVar[bool] = True  # changes the numbers on purpose: --verify judges fidelity
    summary: ClassVar[str] = "round float 2-D weights to f16/bf16 values (what a target will store)"
    dtype: str = option("F16", choices=FLOAT_TYPES, help="storage type")

    def run(self, model: Model, ctx: PassContext) -> bool:
        if self.dtype == "F32":
            return False
        changed = False
        for v in list(model.graph.initializers.values()):
            if isinstance(v.const, Tensor) and v.rank == 2 and v.dtype is not None and v.dtype.is_float:
                arr = np.asarray(v.numpy(), np.float32)
                r = round_float(arr, self.dtype)
                if not np.array_equal(r, arr):
                    v.const = Tensor(r)
                    changed = True
        return changed
