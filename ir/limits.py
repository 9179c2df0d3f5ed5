"""Guards against models whose declared sizes would exhaust memory.

A hostile or corrupt model can declare an input of 2^60 elements, a ``ConstantOfShape`` / ``Expand`` /
``Tile`` / ``Range`` with constant arguments that produce terabytes, or a shape that only looks small until
it is materialized. :func:`check_sizes` finds every tensor whose size is known before anything runs (static
shapes after shape inference, and the outputs of those generator ops from their constant arguments) and
reports the ones beyond the limit, so edgec refuses the model instead of being killed by the kernel.

The limit is ``$EDGEC_MAX_TENSOR_BYTES`` when set, else half the machine's physical memory (at most 64 GiB).
"""

from __future__ import annotations

import os
from typing import cast

import numpy as np

from .core import ConstData, Model, Node


def max_tensor_bytes() -> int:
    env = os.environ.get("EDGEC_MAX_TENSOR_BYTES")
    if env:
        return int(env)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 << 30
    return min(ram // 2, 64 << 30)


def _ints(n: Node, i: int) -> np.ndarray | None:
    v = n.inputs[i] if len(n.inputs) > i else None
    if v is None or not v.is_const:
        return None
    try:
        return np.asarray(cast(ConstData, v.const).numpy()).reshape(-1)  # is_const: const is set
    except Exception:  # noqa: BLE001 - a quantized or odd constant: no estimate
        return None


def generated_elements(n: Node) -> int | None:
    """Elements a generator op will produce from its constant arguments (None when unknown)."""
    op = n.qualified_op
    if op == "ConstantOfShape":
        s = _ints(n, 0)
        return None if s is None else int(cast(int, np.prod([max(int(x), 0) for x in s], dtype=object)))
    if op in ("Expand", "Tile"):
        s = _ints(n, 1)
        x = n.inputs[0].shape if n.inputs and n.inputs[0] is not None else None
        if s is None or x is None or not all(isinstance(d, int) for d in x):
            return None
        x = cast("tuple[int, ...]", x)  # every dim checked int above
        if op == "Tile":
            return int(cast(int, np.prod([int(a) * max(int(b), 0) for a, b in zip(x, s)], dtype=object)))
        r = max(len(x), len(s))
        xs = [1] * (r - len(x)) + list(x)
        ss = [1] * (r - len(s)) + [int(v) for v in s]
        return int(cast(int, np.prod([max(a, b) for a, b in zip(xs, ss)], dtype=object)))
    if op == "Range":
        a, b, d = (_ints(n, i) for i in range(3))
        if a is None or b is None or d is None or not (a.size == b.size == d.size == 1) or float(d[0]) == 0:
            return None
        return max(int(np.ceil((float(b[0]) - float(a[0])) / float(d[0]))), 0)
    return None


def check_generators(model: Model, limit: int | None = None) -> list[str]:
    """Generator ops whose constant arguments ask for more than ``limit`` bytes (checked before shape
    inference, which itself materializes some of them)."""
    limit = limit or max_tensor_bytes()
    out = []
    for n in model.graph:
        k = generated_elements(n)
        if k is not None and k * 4 > limit:
            out.append(
                f"node {n.name or n.op_type!r} ({n.op_type}) would produce {k:,} elements from its constant arguments"
            )
    return out


def check_sizes(model: Model, limit: int | None = None) -> list[str]:
    """Every tensor of ``model`` known to exceed ``limit`` bytes, one message each."""
    limit = limit or max_tensor_bytes()
    out = []
    seen = set()
    for v in list(model.graph.inputs) + [o for n in model.graph for o in n.outputs]:
        shape = v.shape
        if shape is None or not all(isinstance(d, int) for d in shape) or id(v) in seen:
            continue
        shape = cast("tuple[int, ...]", shape)  # every dim checked int above
        seen.add(id(v))
        try:
            item = np.dtype(v.dtype.numpy).itemsize  # type: ignore[union-attr]  # None: caught below
        except Exception:  # noqa: BLE001 - unknown or sub-byte type: count 4 bytes per element
            item = 4
        size = int(cast(int, np.prod([max(d, 0) for d in shape], dtype=object))) * item
        if size > limit:
            out.append(f"{v.name!r} has shape {list(shape)}: {size / 2**30:.3g} GiB")
    return out + check_generators(model, limit)
