"""The memory budget edgec plans within: ``$EDGEC_MAX_MEMORY`` (bytes, or with a unit: ``30GB``, ``12GiB``)
when set, else 75% of the machine's physical memory.

A leaf module (standard library only) below every layer, like :mod:`edgec.quiet`: the compile cache consults
it on the hit path without importing the IR, and :mod:`edgec.ir.budget` builds its estimates on it.
"""

from __future__ import annotations

import math
import os
import re

BUDGET_ENV = "EDGEC_MAX_MEMORY"
DEFAULT_FRACTION = 0.75

_UNITS = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "KB": 10**3,
    "M": 10**6,
    "MB": 10**6,
    "G": 10**9,
    "GB": 10**9,
    "T": 10**12,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_bytes(text: str) -> int:
    """'30GB', '12GiB', '500MB', '1000000' -> bytes; ValueError naming the accepted forms otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(
            f"{text!r} is not a size: expected a number with an optional unit (B, KB, MB, GB, TB, "
            "KiB, MiB, GiB, TiB), e.g. 30GB"
        )
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return int(value)


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def memory_budget() -> int:
    """The budget in bytes (``$EDGEC_MAX_MEMORY``, else 75% of physical memory)."""
    env = os.environ.get(BUDGET_ENV)
    if env:
        try:
            return parse_bytes(env)
        except ValueError as e:
            raise ValueError(f"${BUDGET_ENV}: {e}") from None
    return int(physical_memory() * DEFAULT_FRACTION)


def budget_source() -> str:
    return (
        f"${BUDGET_ENV}" if os.environ.get(BUDGET_ENV) else f"{int(DEFAULT_FRACTION * 100)}% of this machine's memory"
    )
