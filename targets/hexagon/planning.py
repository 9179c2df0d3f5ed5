"""Memory planning for the hexagon driver: the tensors that ``main``'s kernel calls pass (inputs, constants,
intermediates, outputs) with their live ranges, the static arena the intermediates share, and the static
workspace the kernels' own buffers need."""

from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import UnsupportedError
from ...ir import Model


@dataclasses.dataclass
class PlannedTensor:
    """One tensor of the driver: where it lives (``kind``) and, for an intermediate, when it is alive."""

    name: str
    shape: list[int]
    dtype: str
    kind: str  # "input", "const", "temp", "output"
    index: int = 0  # input/output position, or const number
    offset: int = 0  # arena / blob offset in bytes
    first: int = 0
    last: int = 0
    data: np.ndarray | None = None  # a constant's values

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def c_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def plan_arena(temps: list[PlannedTensor], align: int = 128) -> int:
    """Offsets for the intermediate tensors so that two tensors alive at once never overlap (greedy by size,
    first fit among the live ranges already placed). Returns the arena size in bytes."""
    placed: list[PlannedTensor] = []
    size = 0
    for t in sorted(temps, key=lambda t: (-t.nbytes, t.first)):
        n = -(-t.nbytes // align) * align
        busy = sorted(
            (p.offset, p.offset + -(-p.nbytes // align) * align)
            for p in placed
            if not (p.last < t.first or t.last < p.first)
        )
        off = 0
        for lo, hi in busy:
            if off + n <= lo:
                break
            off = max(off, hi)
        t.offset = off
        placed.append(t)
        size = max(size, off + n)
    return size


# ---- the workspace --------------------------------------------------------------------------------------------
def allocated_buffers(func):
    """Every buffer the PrimFunc ``func`` allocates, in program order: an ``SBlock``'s ``alloc_buffers`` and the
    ``AllocBuffer`` statements (TVM 0.27's TIR: ``tvm.tirx`` statements, ``tvm.s_tir`` blocks). A statement
    of another kind is refused, so that nothing allocated is missed."""
    from tvm import s_tir, tirx

    leaves = (
        tirx.Bind,
        tirx.AssertStmt,
        tirx.BufferStore,
        tirx.DeclBuffer,
        tirx.Evaluate,
        tirx.ScopeIdDefStmt,
        tirx.Break,
        tirx.Continue,
        tirx.Return,
        tirx.TilePrimitiveCall,
    )
    stack = [func.body]
    while stack:
        s = stack.pop()
        if s is None or isinstance(s, leaves):
            continue
        if isinstance(s, tirx.AllocBuffer):
            yield s.buffer
        elif isinstance(s, s_tir.SBlock):
            yield from s.alloc_buffers
            stack += [s.body, s.init]
        elif isinstance(s, s_tir.SBlockRealize):
            stack.append(s.block)
        elif isinstance(s, tirx.SeqStmt):
            stack += reversed(list(s.seq))
        elif isinstance(s, (tirx.For, tirx.While, tirx.AttrStmt)):
            stack.append(s.body)
        elif isinstance(s, tirx.IfThenElse):
            stack += [s.else_case, s.then_case]
        else:
            raise UnsupportedError(
                f"the hexagon target cannot size the workspace of a kernel holding a TIR "
                f"{type(s).__name__} statement (it knows TVM 0.27's statements)"
            )


def buffer_bytes(kernel: str, buf) -> int:
    """The bytes of a TIR buffer of static shape (sub-byte elements take a byte each)."""
    from tvm import tirx

    n = 1
    for d in buf.shape:
        if not isinstance(d, tirx.IntImm):
            raise UnsupportedError(
                f"kernel {kernel}: buffer {buf.name} has the symbolic shape "
                f"{[str(x) for x in buf.shape]}; the hexagon target sizes its static workspace "
                "from static shapes only (give --input-shape)"
            )
        n *= int(d)
    return n * buf.dtype.lanes * max(buf.dtype.bits, 8) // 8


def workspace_bytes(kernels) -> int:
    """The static workspace the kernels (an IRModule of PrimFuncs) need: TVM turns every global-scope buffer a
    fused kernel allocates (padded inputs, dequantized weights, fused intermediates) into a LIFO workspace
    allocation, so the largest kernel's sum of them (each rounded up to 128 bytes) bounds it; local-scope
    buffers (accumulators) live on the stack. At least 1 MiB."""
    need = 0
    for gv, f in kernels.functions.items():
        total = 0
        for buf in allocated_buffers(f):
            if buf.scope() == "global":
                total += (buffer_bytes(gv.name_hint, buf) + 127) // 128 * 128
        need = max(need, total)
    return max(need, 1 << 20)


# ---- main's calls ---------------------------------------------------------------------------------------------
def _flat(v) -> list[PlannedTensor]:
    return [x for y in v for x in _flat(y)] if isinstance(v, tuple) else [v]


class _MainWalk:
    """The tensors of ``main``, keyed by the Relax variable itself (Relax reuses name hints: two different
    "lv4"s in one function). A value is a PlannedTensor, or a tuple of values for a tuple-typed variable."""

    def __init__(self):
        import tvm
        from tvm import relax

        self.tvm, self.relax = tvm, relax
        self.tensors: dict = {}
        self.every: list[PlannedTensor] = []
        self.calls: list[tuple[str, list[PlannedTensor]]] = []
        self.n_consts = 0
        self.call_tir = tvm.ir.Op.get("relax.call_tir")

    def params(self, fn) -> None:
        for i, p in enumerate(fn.params):
            if not isinstance(p.ty, self.relax.TensorType) or p.ty.shape is None:
                raise UnsupportedError(f"main's parameter {p.name} is not a tensor of static shape: {p.ty!s:.80}")
            self.tensors[p] = PlannedTensor(
                f"in{i}_{c_name(p.name)}", [int(s) for s in p.ty.shape], str(p.ty.dtype), "input", i
            )
            self.every.append(self.tensors[p])

    def const(self, a, step: int) -> PlannedTensor:
        arr = a.value.numpy()
        t = PlannedTensor(
            f"c{self.n_consts}",
            list(arr.shape),
            str(arr.dtype),
            "const",
            self.n_consts,
            data=arr,
            first=step,
            last=step,
        )
        self.n_consts += 1
        self.every.append(t)
        return t

    def value(self, e, step: int):
        """The tensor (or tuple of them) a non-call expression names."""
        relax = self.relax
        if isinstance(e, self.tvm.ir.GenericConst):
            return self.const(e, step)
        if isinstance(e, relax.Tuple):
            return tuple(self.value(f, step) for f in e.fields)
        if isinstance(e, relax.TupleGetItem):
            v = self.value(e.tuple_value, step)
            if not isinstance(v, tuple):
                raise UnsupportedError(f"main takes an item of a non-tuple: {e!s:.120}")
            return v[e.index]
        if isinstance(e, relax.Var) and e in self.tensors:
            return self.tensors[e]
        raise UnsupportedError(
            f"the hexagon target lowers only kernel calls, tuples and their items; main has {e!s:.120}"
        )

    def temp(self, name: str, ty, step: int) -> PlannedTensor:
        if not isinstance(ty, self.relax.TensorType) or ty.shape is None:
            raise UnsupportedError(f"kernel result {name} is not a tensor of static shape: {ty!s:.80}")
        t = PlannedTensor(
            f"t{step}_{len(self.every)}_{c_name(name)}",
            [int(s) for s in ty.shape],
            str(ty.dtype),
            "temp",
            first=step,
            last=step,
        )
        self.every.append(t)
        return t

    def bind(self, b, step: int) -> None:
        """One binding of main: a kernel call (its arguments live until ``step``, its results are new
        intermediates), or a name for tensors that already exist."""
        call = b.value
        if not (isinstance(call, self.relax.Call) and call.op == self.call_tir):
            self.tensors[b.var] = self.value(call, step)
            return
        if len(call.args) > 2:
            raise UnsupportedError(f"kernel {call.args[0].name_hint} takes symbolic shape arguments")
        args = []
        for a in call.args[1].fields:
            for t in _flat(self.value(a, step)):
                t.last = step
                args.append(t)
        ty = b.var.ty
        outs: PlannedTensor | tuple[PlannedTensor, ...]
        if isinstance(ty, self.relax.TupleType):  # a kernel with several results: they follow its inputs
            outs = tuple(self.temp(f"{b.var.name}_{k}", f, step) for k, f in enumerate(ty.fields))
        else:
            outs = self.temp(b.var.name, ty, step)
        self.tensors[b.var] = outs
        self.calls.append((call.args[0].name_hint, args + _flat(outs)))

    def outputs(self, model: Model, results, end: int) -> list[tuple[int, PlannedTensor]]:
        """Mark the kernel results main returns as the caller's output buffers; the copies [(output number,
        tensor)] for outputs that are an input, a constant or another output's tensor."""
        outs = list(results) if isinstance(results, tuple) else [results]
        if len(outs) != len(model.graph.outputs):
            raise UnsupportedError(f"main returns {len(outs)} values; the model has {len(model.graph.outputs)} outputs")
        copies = []
        for k, (t, v) in enumerate(zip(outs, model.graph.outputs)):
            if isinstance(t, tuple):
                raise UnsupportedError(f"output {v.name!r} is a nested tuple in main")
            want = list(v.static_shape or ()), (v.dtype.numpy.name if v.dtype else "float32")
            if (t.shape, t.dtype) != want and not (
                int(np.prod(t.shape)) == int(np.prod(want[0])) and t.dtype == want[1]
            ):
                raise UnsupportedError(
                    f"output {v.name!r}: main computes {t.dtype}{t.shape}, the model declares {want[1]}{want[0]}"
                )
            if t.kind == "temp":  # the kernel writes straight into the caller's output buffer
                t.kind, t.index = "output", k
            else:  # an input, a constant or another output: copied after the kernels
                t.last = end
                copies.append((k, t))
        return copies


def walk_main(model: Model, mod) -> tuple[list, list[PlannedTensor], list[tuple[int, PlannedTensor]]]:
    """main's bindings as kernel calls [(kernel, [tensor...])], every tensor with its live range, and the
    copies [(output number, tensor)] for outputs that are an input, a constant or another output's tensor.

    Besides kernel calls, main may bind a variable to another variable, to a tuple of them or to an item
    of such a tuple (a model with several outputs returns a tuple): these only name existing tensors."""
    fn = mod["main"]
    w = _MainWalk()
    w.params(fn)
    bindings = [b for blk in fn.body.blocks for b in blk.bindings]
    for step, b in enumerate(bindings):
        w.bind(b, step)
    copies = w.outputs(model, w.value(fn.body.body, len(bindings)), len(bindings))
    return w.calls, w.every, copies
