"""Streaming calibration captures: the model runs forward once, piece by piece, as layers get quantized.

A capture of value ``x`` also records the *frontier* at ``x``: every non-constant value produced up to
``x``'s producer (in node order) that a later node still reads (for a transformer block: the residual
stream, rotary tables, mask). The next capture starts from that frontier instead of the graph inputs, so
quantizing a 30-block decoder runs each block about once per layer group rather than re-running the
whole prefix (quadratic) for every group. Weights quantized after a capture belong to nodes after its
frontier, so the frontier stays valid; a pass that rewrites earlier ops (AWQ folding a scale into the
preceding norm) calls :meth:`Stream.refresh`.

Shared by the passes that need each layer's input on calibration data (quantize, pruning); :func:`trim_heap`
and :func:`fix_mmap_threshold` keep such layer-by-layer passes from growing the process.
"""

from __future__ import annotations

import numpy as np

from ..ir import Model, ReferenceExecutor, Value


def trim_heap() -> None:
    """Hand freed heap pages back to the OS: onnxruntime sessions come and go once per layer group, and
    glibc otherwise keeps their memory, so the process grows block by block."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def fix_mmap_threshold(nbytes: int = 1 << 20) -> None:
    """Serve every allocation of ``nbytes`` or more with its own mmap, returned to the OS when freed.

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), so after the first
    layer-sized temporary is freed the next ones come from the heap, which keeps what it took: quantizing
    ResNet-18 layer by layer then grows the process by about one model size. A fixed threshold stops that
    (setting it turns glibc's dynamic adjustment off)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, int(nbytes))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class Stream:
    def __init__(self, model: Model, samples: list[dict[str, np.ndarray]]):
        self.model = model
        self.samples = [dict(s) for s in samples]
        self.known: list[dict[str, np.ndarray]] = self.samples  # per sample: name -> array
        self._prev: list[dict[str, np.ndarray]] | None = None
        self._last: Value | None = None

    def _frontier(self, x: Value) -> list[str]:
        nodes = list(self.model.graph)
        pos = {id(n): i for i, n in enumerate(nodes)}
        k = pos[id(x.producer)]
        later_reads: set[int] = set()
        for n in nodes[k + 1 :]:
            later_reads.update(id(v) for v in n.inputs if v is not None)
        names = []
        for n in nodes[: k + 1]:
            for o in n.outputs:
                if id(o) in later_reads or o is x:
                    names.append(o.name)
        for v in self.model.graph.inputs:
            if id(v) in later_reads:
                names.append(v.name)
        return names

    def capture(self, x: Value) -> list[np.ndarray]:
        """``x`` on every sample, computed from the last frontier with the model as it is now."""
        if x.is_const:
            return [x.numpy()]
        if x.producer is None:  # a graph input
            return [s[x.name] for s in self.known]
        front = self._frontier(x)
        start = self.known
        if self._last is not None and self._last.producer is not None:
            order = {id(n): i for i, n in enumerate(self.model.graph)}
            if order.get(id(self._last.producer), -1) > order[id(x.producer)]:
                start = self.samples  # asked for an earlier value: start over from the inputs
        todo = [n for n in front if n not in start[0]]
        keep = {n: start[0][n] for n in front if n in start[0]}
        if todo:
            ex = ReferenceExecutor(
                self.model,
                capture=todo,
                capture_only=True,
                keep_quantized=True,
                cut={n: a for n, a in start[0].items() if n not in {v.name for v in self.model.graph.inputs}},
            )
            new = []
            for s in start:
                r = ex.run(s)
                new.append({**{n: s[n] for n in keep}, **{n: r[n] for n in todo}})
            del ex
            trim_heap()
        else:
            new = [{n: s[n] for n in front} for s in start]
        self._prev, self.known, self._last = start, new, x
        return [s[x.name] for s in new]

    def refresh(self) -> None:
        """Recompute the last capture from the frontier before it (an op before it changed)."""
        if self._last is None or self._prev is None:
            return
        last, self.known, self._last = self._last, self._prev, None
        self.capture(last)
