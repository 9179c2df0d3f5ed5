"""The memory budget: how much memory one edgec process may plan to use, and the estimates checked against
it *before* anything is allocated.

A model can ask for far more memory than the machine has without any single tensor being absurd: a
batch of 100000 images is 1.2 GB of input and tens of GB of activations, a folder of safetensors can
declare 40 GB of weights in a sparse file. Rather than be killed by the kernel (or by a Rust panic inside
a library), edgec adds up what a step will hold at its peak and refuses, with the numbers and the way to
raise the budget, when that exceeds it.

The budget is ``$EDGEC_MAX_MEMORY`` (bytes, or with a unit: ``30GB``, ``12GiB``) when set, else 75% of
the machine's physical memory. The estimates are lower bounds of what a step needs (weights, inputs and
the activations alive at once when a graph runs in order), so a refusal is never a false alarm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from .core import Model

from ..memory import BUDGET_ENV, budget_source, memory_budget, parse_bytes, physical_memory  # noqa: F401


def gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def over_budget(what: str, parts: Mapping[str, int], budget: int | None = None, fix: str = "") -> str | None:
    """A message when the parts add up beyond the budget (None when they fit)."""
    budget = memory_budget() if budget is None else budget
    need = sum(parts.values())
    if need <= budget:
        return None
    detail = ", ".join(f"{k} {gib(v)}" for k, v in parts.items() if v)
    return (
        f"{what} needs at least {gib(need)} ({detail}), beyond the memory budget of {gib(budget)} "
        f"({budget_source()}); {fix + '; ' if fix else ''}set {BUDGET_ENV} (e.g. {BUDGET_ENV}="
        f"{max(1, math.ceil(need * 1.25 / 2**30))}GiB) to raise the budget"
    )


def _itemsize(v: Any) -> int:
    try:
        return cast(int, np.dtype(v.dtype.numpy).itemsize)
    except Exception:  # noqa: BLE001 - unknown or sub-byte type: count 4 bytes per element
        return 4


def _resolve(shape: Any, symbols: Mapping[str, int]) -> int | None:
    """Elements of ``shape`` with symbolic dims looked up in ``symbols`` (None when one is unknown)."""
    if shape is None:
        return None
    n = 1
    for d in shape:
        if isinstance(d, int):
            n *= max(d, 0)
        elif str(d) in symbols:
            n *= symbols[str(d)]
        else:
            return None
    return n


def run_estimate(
    model: Model, input_shapes: Mapping[str, tuple[int, ...]], symbols: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Bytes that running ``model`` once on inputs of ``input_shapes`` holds at its peak: float weights,
    inputs, and the largest set of activations alive at once in graph order. Symbolic dims of the graph
    (a dynamic batch ``N``) are taken from ``symbols`` and from the inputs' concrete shapes; unknown sizes
    count as zero."""
    g = model.graph
    symbols = dict(symbols or {})
    inputs = 0
    for v in g.inputs:
        shape = input_shapes.get(v.name)
        if shape is None:
            continue
        for d, extent in zip(v.shape or (), shape):
            if not isinstance(d, int):
                symbols.setdefault(str(d), int(extent))
        inputs += int(np.prod(shape, dtype=object)) * _itemsize(v)
    weights = 0
    for v in g.initializers.values():
        size = _resolve(v.shape, {})
        weights += (size or 0) * (4 if v.dtype is None or v.dtype.is_float else _itemsize(v))
    nodes = list(g)
    last: dict[int, int] = {}
    for i, node in enumerate(nodes):
        for x in node.inputs:
            if x is not None:
                last[id(x)] = i
    for o in g.outputs:
        last[id(o)] = len(nodes)
    live, peak = 0, 0
    sizes: dict[int, int] = {}
    dying: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for o in node.outputs:
            k = _resolve(o.shape, symbols)
            s = (k or 0) * _itemsize(o)
            sizes[id(o)] = s
            live += s
            dying.setdefault(last.get(id(o), i), []).append(id(o))
        peak = max(peak, live)
        for vid in dying.pop(i, ()):
            live -= sizes[vid]
    return {"weights": weights, "inputs": inputs, "activations": peak}
