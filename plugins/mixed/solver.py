"""Exact per-layer bit allocation: the Pareto front of (total size, total cost) over every combination of
per-layer options, built layer by layer with dominated points dropped (a multiple-choice knapsack solved
exactly; the front stays small because only non-dominated partial sums survive each step)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass
class Front:
    """The Pareto front: ``sizes`` ascending, ``costs`` strictly descending, and back-pointers to recover the
    choice of every layer for any point."""

    sizes: np.ndarray
    costs: np.ndarray
    _parents: list[np.ndarray]
    _options: list[np.ndarray]

    def choice(self, point: int) -> list[int]:
        """The option index of every layer for front point ``point``."""
        out = []
        for parents, options in zip(reversed(self._parents), reversed(self._options)):
            out.append(int(options[point]))
            point = int(parents[point])
        return out[::-1]

    def best_within(self, budget: float) -> int | None:
        """The lowest-cost point whose size is at most ``budget`` (None if even the smallest is larger)."""
        k = int(np.searchsorted(self.sizes, budget, side="right")) - 1
        return k if k >= 0 else None


def pareto_front(options: Sequence[Sequence[tuple[int, float]]]) -> Front:
    """``options[l]`` lists layer l's (size, cost) choices. Exact: every (size, cost) point not dominated by
    another combination is on the front."""
    sizes = np.zeros(1, np.int64)
    costs = np.zeros(1, np.float64)
    parents, opts = [], []
    for layer in options:
        s = np.array([o[0] for o in layer], np.int64)
        c = np.array([o[1] for o in layer], np.float64)
        ns = (sizes[:, None] + s[None, :]).reshape(-1)
        nc = (costs[:, None] + c[None, :]).reshape(-1)
        par = np.repeat(np.arange(len(sizes)), len(s))
        opt = np.tile(np.arange(len(s)), len(sizes))
        order = np.lexsort((nc, ns))  # by size, then cost
        ns, nc, par, opt = ns[order], nc[order], par[order], opt[order]
        # keep a point only if it is cheaper than every smaller-or-equal-size point before it
        prev_min = np.minimum.accumulate(np.concatenate([[np.inf], nc[:-1]]))
        keep = nc < prev_min
        sizes, costs = ns[keep], nc[keep]
        parents.append(par[keep])
        opts.append(opt[keep])
    return Front(sizes, costs, parents, opts)


def allocate(options: Sequence[Sequence[tuple[int, float]]], budget: float) -> tuple[list[int], int, float]:
    """The minimum-cost choice with total size <= ``budget``: (choices, size, cost). Raises ValueError when
    no combination fits."""
    front = pareto_front(options)
    k = front.best_within(budget)
    if k is None:
        raise ValueError(f"no allocation fits: the smallest is {int(front.sizes[0])} against a budget of {int(budget)}")
    return front.choice(k), int(front.sizes[k]), float(front.costs[k])
