"""CPU schedules for the kernels Relax legalization produces.

TVM's default build leaves every kernel as a single-threaded scalar loop nest. Here each PrimFunc is
scheduled by TVM's own dlight CPU rules where they apply (GEMV, softmax/norm reductions) and otherwise
by :class:`ParallelVectorize`: outer spatial loops fused and run in parallel; elementwise kernels
vectorized on their innermost loop; reductions (matmul, conv) computed in a register tile of
``rows x vector-width`` accumulators with the reduction loops outside the tile.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base.common_schedules import try_inline
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width


def _pick_lanes(extent: int | None, lanes: int) -> int:
    """The widest vector (full, half or quarter register, at least 4 floats) dividing ``extent``; 1 if none."""
    if extent is None:
        return 1
    for cand in (lanes, lanes // 2, lanes // 4):
        if cand >= 4 and extent % cand == 0:
            return cand
    return 1


def _extent(dom) -> int | None:
    ext = dom.extent if hasattr(dom, "extent") else dom
    return int(ext) if isinstance(ext, (int, tirx.IntImm)) else None


class ParallelVectorize(CPUScheduleRule):
    """Parallel outer spatial loops, vectorized inner loops, register-tiled reductions.

    Args:
        gemm_only: claim only functions with a matmul/conv-like reduction (two or more spatial axes, a
            vector-width inner axis), leaving softmax/norm reductions to dlight's rule.
    """

    def __init__(self, gemm_only: bool = False, pack: bool = True):
        super().__init__()
        self.gemm_only = gemm_only
        self.pack = pack

    @staticmethod
    def _is_gemm_like(sch: s_tir.Schedule, info, lanes: int) -> bool:
        """A reduction whose innermost spatial axis is a vector-width multiple and the innermost (contiguous)
        index of an input it reads: a matmul's or NHWC convolution's weight columns (a matrix-vector product
        has no second spatial axis once unit loops are dropped). Softmax / norm reductions, which reduce
        along the contiguous axis, are left to dlight's rule."""
        kinds = [it.kind for it in info.iters]
        s = [i for i, k in enumerate(kinds) if k == "S"]
        if "R" not in kinds or not s or "O" in kinds:
            return False
        cols = _extent(info.iters[s[-1]].dom)
        if _pick_lanes(cols, lanes) == 1 and (cols is None or cols < lanes):
            return False
        var = info.iters[s[-1]].var
        block = sch.get(info.block_rv)
        return any(
            r.region and any(v.same_as(var) for v in tirx.analysis.undefined_vars(r.region[-1].min))
            for r in block.reads
        )

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos:
            return None
        lanes = max(llvm_get_vector_width(target) // 32, 4)
        if self.gemm_only and not any(self._is_gemm_like(sch, i, lanes) for i in infos):
            return None
        if not self.gemm_only and len(infos) > 1 and _inline_exact(target) and _pure_chain(sch, infos):
            # an elementwise / injective chain (the float ops around integer kernels, a norm's tail): one loop nest,
            # each value computed where it is used instead of a pass over memory per op. Such kernels are built
            # without FMA (SplitGemm), so the expressions round as the separate ops did.
            try_inline(sch, infos)
            func = sch.mod["main"]
        free = _layout_free(func) if self.pack else []
        # fused first (epilogues, padding, folded copies); where a matmul / convolution block's schedule then
        # stops half-way, the whole function again as it was before fusion
        return self._schedule(func, lanes, free, fuse=True) or self._schedule(func, lanes, free, fuse=False)

    def _schedule(self, func: tirx.PrimFunc, lanes: int, free: list, fuse: bool):
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        epilogues: dict[str, str] = {}
        if fuse:
            changed, epilogues = self._fuse(sch, infos, lanes, free)
            if changed:
                infos = normalize_prim_func(sch)
                if not infos:  # the fused function is beyond the analysis
                    return None
        done = set(epilogues.values())
        for info in infos:
            name = sch.get(info.block_rv).name_hint
            if name in done:
                continue  # computed inside its matmul's register tile
            epilogue = sch.get_sblock(epilogues[name]) if name in epilogues else None
            gemm = fuse and self._is_gemm_like(sch, info, lanes)
            try:
                self._schedule_block(sch, info, lanes, free, epilogue)
            except s_tir.schedule.ScheduleError:
                if gemm:
                    return None
                continue  # every primitive preserves semantics: a block left half-scheduled is still correct
        return sch

    def _fuse(self, sch: s_tir.Schedule, infos, lanes: int, free: list) -> tuple[bool, dict[str, str]]:
        """Fold the copies feeding each matmul / convolution block (a padding of nothing) into its reads, and its
        chain of elementwise consumers (bias, residual, activation) into one block; returns {matmul block: that
        epilogue block}, which :meth:`_schedule_block` computes on the register tile before it is stored, and
        whether any block was folded (the analysis of the blocks is then stale)."""
        out: dict[str, str] = {}
        changed = False
        gemm = [i for i in infos if self._is_gemm_like(sch, i, lanes)]
        for info in gemm:
            padding = _tile_padding(sch, info, lanes)
            if padding is not None:
                try:
                    sch.pad_einsum(info.block_rv, padding)
                    changed = True
                except s_tir.schedule.ScheduleError:
                    pass  # not a plain einsum (a strided convolution): its edge tiles stay predicated
        if changed:  # new blocks (the padded operands, the copy taking the padding off): analyse again
            gemm = [i for i in normalize_prim_func(sch) or [] if self._is_gemm_like(sch, i, lanes)]
        for block in [i.block_rv for i in gemm]:  # before any block goes
            for prod in sch.get_producers(block):
                if _is_copy(sch.get(prod), free):
                    try:
                        sch.compute_inline(prod)
                        changed = True
                    except s_tir.schedule.ScheduleError:
                        pass
            chain, cur = [], block
            while True:
                cons = sch.get_consumers(cur)
                if len(cons) != 1 or not _is_epilogue(sch.get(cons[0]), sch.get(cur)):
                    break
                chain.append(cons[0])
                cur = cons[0]
            try:
                for c in chain[:-1]:
                    sch.compute_inline(c)
                    changed = True
            except s_tir.schedule.ScheduleError:
                continue
            if chain:
                out[sch.get(block).name_hint] = sch.get(chain[-1]).name_hint
        return changed, out

    @staticmethod
    def _schedule_block(sch: s_tir.Schedule, info, lanes: int, free: list | None = None, epilogue=None) -> None:
        kinds = [it.kind for it in info.iters]
        if not kinds or "O" in kinds or kinds[0] != "S":
            return
        block = info.block_rv
        loops = [it.loop_rv for it in info.iters]
        exts = [_extent(it.dom) for it in info.iters]
        stmt = sch.get(block)
        if any(str(getattr(r.source, "dtype", "")) == "bool" for r in list(stmt.reads) + list(stmt.writes)):
            lanes = 1  # TVM's codegen cannot store vectorized bool (i8xN vs bool): keep these scalar
        s_idx = [i for i, k in enumerate(kinds) if k == "S"]
        r_loops = [lp for lp, k in zip(loops, kinds) if k == "R"]
        s_loops = [loops[i] for i in s_idx]
        if r_loops:
            sch.reorder(*s_loops, *r_loops)
        full, lanes = lanes, _pick_lanes(exts[s_idx[-1]], lanes)
        cols = exts[s_idx[-1]]
        if lanes == 1 and r_loops and cols is not None and cols >= full:
            lanes = full  # a matmul over 197 columns (ViT's attention scores): the last vector tile is partial
        if lanes == 1:
            # No clean vector axis: parallelize the outer spatial loops and leave the rest scalar.
            outer = s_loops[:-1] if (r_loops and len(s_loops) > 1) else s_loops
            if outer:
                sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
            return
        if not r_loops:
            vo, vi = sch.split(s_loops[-1], [None, lanes])
            sch.vectorize(vi)
            outer = s_loops[:-1] + [vo]
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
            return
        # Reduction (matmul, conv): a register tile of ROWS x (VECS x lanes) accumulators, the reduction loops
        # outside it. Each loaded weight vector then feeds ROWS accumulators and each broadcast input value VECS.
        ext = exts[s_idx[-2]] if len(s_idx) >= 2 else None
        vecs, rows = _register_tile(exts[s_idx[-1]], ext, lanes)
        _pack_weights(sch, block, info.iters[s_idx[-1]].var, vecs * lanes, free)
        vo, vi = sch.split(s_loops[-1], [None, vecs * lanes])
        rows_loop = None
        outer = s_loops[:-2] if rows > 1 else s_loops[:-1]
        if rows > 1:
            ro, rows_loop = sch.split(s_loops[-2], [None, rows])
            outer = outer + [ro]
        # the column blocks outermost: one packed weight panel stays in cache while every row tile uses it
        outer = [vo] + outer
        tile = ([rows_loop] if rows_loop is not None else []) + [vi]
        sch.reorder(*outer, *r_loops, *tile)
        if len(outer) > 1:
            par = sch.fuse(*outer[:-1]) if len(outer) > 2 else outer[0]
            sch.parallel(par)
        else:  # a matrix-vector product: the column blocks in parallel
            sch.parallel(outer[0])
        acc = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(acc, outer[-1])
        if epilogue is not None:
            # the epilogue reads the accumulator tile (bias, activation, residual applied before the one store)
            try:
                sch.reverse_compute_at(epilogue, outer[-1])
            except s_tir.schedule.ScheduleError:
                # another of its inputs is computed after this loop nest (BERT's attention mask): a pass of its own
                _vectorize_inner(sch, epilogue, lanes)
            else:
                try:
                    sch.compute_inline(acc)
                    acc = epilogue
                except s_tir.schedule.ScheduleError:
                    sch.vectorize(sch.get_loops(epilogue)[-1])
        _pad_per_tile(sch, block, info.iters[s_idx[-1]].var, outer[-1])
        init = sch.decompose_reduction(block, r_loops[0])
        sch.vectorize(sch.get_loops(init)[-1])
        # TIR refuses to vectorize a spatial loop of a reduction update; unrolled, the constant-indexed
        # accumulator tile is promoted to registers and LLVM's SLP vectorizer emits vector FMAs.
        if rows_loop is not None:
            sch.unroll(rows_loop)
        sch.unroll(vi)
        sch.vectorize(sch.get_loops(acc)[-1])


# marks a kernel written and scheduled beside this module (intops.py: integer arithmetic, or a float product /
# quotient then a rounding, nothing an FMA could contract), compiled for the full ISA by SplitGemm
INTEGER_KERNEL = "edgec.integer_kernel"
# marks a float matmul kernel written and scheduled beside this module (gemv.py), compiled with FMA like the matmuls
# this rule schedules
GEMM_KERNEL = "edgec.gemm_kernel"
# Operations whose result an FMA-contracted input can move across an integer boundary (a tie rounding the other
# way, a comparison flipping): an epilogue holding one stays out of the FMA-compiled matmul kernel's tile.
_LOAD = tvm.ir.expr.TensorLoad  # a buffer element read (tirx.BufferLoad builds one)
_INEXACT_OPS = {"tirx.round", "tirx.nearbyint", "tirx.floor", "tirx.ceil", "tirx.trunc", "tirx.fmod"}


def _pointwise_safe(stmt) -> bool:
    """``stmt``'s value computes with float arithmetic, max / min and transcendental functions only: no rounding,
    comparison, selection or cast to an integer (see _INEXACT_OPS)."""

    def safe(e) -> bool:
        if isinstance(e, (tirx.LT, tirx.GT, tirx.LE, tirx.GE, tirx.EQ, tirx.NE, tirx.Select)):
            return False
        if isinstance(e, tirx.Cast):
            return str(e.ty).startswith(("float", "bfloat")) and safe(e.value)
        if isinstance(e, tvm.ir.Call):
            return str(getattr(e.op, "name", "")) not in _INEXACT_OPS and all(safe(a) for a in e.args)
        if isinstance(e, (_LOAD, tirx.FloatImm, tirx.IntImm, tirx.Var)):
            return True
        if hasattr(e, "a") and hasattr(e, "b"):  # Add, Sub, Mul, Div, Max, Min
            return safe(e.a) and safe(e.b)
        return False  # anything else (Let, Ramp, a type added later) is not claimed

    body = stmt.body
    return isinstance(body, tirx.BufferStore) and safe(body.value)


def _positions(indices, shape) -> list | None:
    """The variables of ``indices`` when each index is a plain variable or 0 on an axis of extent 1 (the unit axes
    an N, H, W layout keeps), else None."""
    out = []
    for i, n in zip(indices, shape):
        if isinstance(i, tirx.Var):
            out.append(i)
        elif not (isinstance(i, tirx.IntImm) and int(i) == 0 and isinstance(n, tirx.IntImm) and int(n) == 1):
            return None
    return out


def _store_indices(stmt) -> list | None:
    """The variables indexing a block's single BufferStore when they are exactly its iteration variables, in
    order (unit axes indexed by 0 aside), else None."""
    body = stmt.body
    if not isinstance(body, tirx.BufferStore) or len(stmt.writes) != 1:
        return None
    got = _positions(body.indices, body.buffer.shape)
    vars_ = [
        iv.var for iv in stmt.iter_vars if not (isinstance(iv.dom.extent, tirx.IntImm) and int(iv.dom.extent) == 1)
    ]
    if got is None or len(got) != len(vars_) or not all(a.same_as(b) for a, b in zip(got, vars_)):
        return None
    return got


def _is_epilogue(stmt, producer) -> bool:
    """``stmt`` is an elementwise block on ``producer``'s result: every iteration spatial, it reads the producer's
    buffer at its own output position (the producer's may be padded: pad_einsum's result, the copy taking the
    padding off), and its arithmetic is safe to compile with FMA (:func:`_pointwise_safe`)."""
    if any(int(iv.iter_type) != 0 for iv in stmt.iter_vars) or len(producer.writes) != 1:
        return False
    own = _store_indices(stmt)
    src = producer.writes[0].source
    have, want = list(src.shape), list(stmt.body.buffer.shape)
    if (
        own is None
        or len(have) != len(want)
        or not all(
            isinstance(a, tirx.IntImm) and isinstance(b, tirx.IntImm) and int(a) >= int(b) for a, b in zip(have, want)
        )
        or not _pointwise_safe(stmt)
    ):
        return False
    loads: list = []

    def collect(e) -> None:
        if isinstance(e, _LOAD):
            loads.append(e)
            return
        for name in ("a", "b", "value"):
            if hasattr(e, name):
                collect(getattr(e, name))
        for arg in getattr(e, "args", ()):
            collect(arg)

    collect(stmt.body.value)
    for ld in loads:
        if ld.source.same_as(src):
            got = _positions(ld.indices, ld.source.shape)
            if got is None or len(got) != len(own) or not all(a.same_as(b) for a, b in zip(got, own)):
                return False
    return True


def _is_copy(stmt, free: list) -> bool:
    """``stmt`` copies an activation element for element (a padding of nothing): folded into its reader. Copies of
    constant weights are kept: the weight packing reads them."""
    body = stmt.body
    if _store_indices(stmt) is None or not isinstance(body.value, _LOAD):
        return False
    src = body.value
    return (
        not any(src.source.same_as(p) for p in free)
        and list(src.source.shape) == list(body.buffer.shape)
        and len(src.indices) == len(body.indices)
        and all(
            a.same_as(b) or (isinstance(a, tirx.IntImm) and isinstance(b, tirx.IntImm) and int(a) == int(b))
            for a, b in zip(src.indices, body.indices)
        )
    )


def _vectorize_inner(sch: s_tir.Schedule, block, lanes: int) -> None:
    """An elementwise block left where it is: its outer loops fused and parallel, the innermost vectorized where a
    vector width divides it."""
    loops = sch.get_loops(block)
    ext = _extent(sch.get(loops[-1]).extent)
    n = _pick_lanes(ext, lanes)
    outer = loops[:-1]
    if n > 1 and ext is not None and ext > n:
        vo, vi = sch.split(loops[-1], [None, n])
        sch.vectorize(vi)
        outer = outer + [vo]
    elif n > 1:
        sch.vectorize(loops[-1])
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def _pad_per_tile(sch: s_tir.Schedule, block, col_var, loop) -> None:
    """A depthwise convolution's padded input (read with the output channel, ``col_var``, as its channel) computed
    per tile under ``loop``, vectorized, instead of in a pass of its own over the whole feature map: the tile's
    window is still in cache when the tile reads it. (A dense convolution reads every input channel for each
    output panel: its padding would be recomputed once per panel, and stays a pass of its own.)"""
    stmt = sch.get(block)
    for prod in sch.get_producers(block):
        pstmt = sch.get(prod)
        value = getattr(pstmt.body, "value", None)
        if (
            len(pstmt.writes) != 1
            or "meta_schedule.layout_rewrite_preproc" in pstmt.annotations
            or not isinstance(value, tvm.ir.Call)
            or not value.op.same_as(tvm.ir.Op.get("prim.if_then_else"))
        ):
            continue  # not a padding (a conditional copy): another kernel's result, a weight's packing
        buf = pstmt.writes[0].source
        if not any(r.source.same_as(buf) and r.region and r.region[-1].min.same_as(col_var) for r in stmt.reads):
            continue
        try:
            sch.compute_at(prod, loop)
            sch.vectorize(sch.get_loops(prod)[-1])
        except s_tir.schedule.ScheduleError:
            pass


def _layout_free(func: tirx.PrimFunc) -> list:
    """The parameters of ``func`` that Relax binds to constants (AttachAttrLayoutFreeBuffers marks them): their
    layout may be rewritten, once, when the model is compiled."""
    idx = func.attrs.get("layout_free_buffers") if func.attrs is not None else None
    params = list(func.params)
    return [params[int(i)] for i in idx or () if int(i) < len(params)]


def _pack_weights(sch: s_tir.Schedule, block, col_var, panel: int, free: list | None) -> None:
    """Re-lay out a constant weight that ``block`` reads with ``col_var`` as its innermost index into
    ``[cols / panel, ..., panel]`` panels: the register tile then walks one contiguous panel instead of rows a whole
    matrix width apart (a 12 KB stride put every row on the same L1 sets). The copy is a layout-rewrite block
    (SplitLayoutRewritePreproc moves it out and FoldConstant runs it when the model is compiled)."""
    stmt = sch.get(block)
    for idx, r in enumerate(stmt.reads):
        if not any(r.source.same_as(p) for p in free or ()) or not r.region or not r.region[-1].min.same_as(col_var):
            continue
        shape = list(r.source.ty.shape)
        if not isinstance(shape[-1], tirx.IntImm) or int(shape[-1]) % panel or int(shape[-1]) == panel:
            continue
        nd = len(shape)
        cached = sch.cache_read(block, idx, "global")
        sch.transform_layout(
            block,
            ("read", idx),
            tirx.IndexMap.from_func(lambda *i: (i[-1] // panel, *i[:-1], i[-1] % panel), ndim=nd),
        )
        sch.annotate(cached, "meta_schedule.layout_rewrite_preproc", True)
        return


def _tile_padding(sch: s_tir.Schedule, info, lanes: int) -> list[int] | None:
    """pad_einsum's padding for a matmul whose tiles would not be whole: columns no vector width divides (ViT's 197
    tokens as the columns of its attention scores) to a multiple of two vectors, rows no count from 4 to 8 divides
    (ViT's 197 tokens as the rows of every projection) to a multiple of 8. The edge tiles then compute zeros
    instead of testing each element: 4.3 ms -> 0.9 ms for ViT-B/16's 12 x 197 x 197 x 64 scores, 9.3 -> 6.6 ms
    for its 197 x 3072 x 768 projection, on one core. None where both divide."""
    kinds = [it.kind for it in info.iters]
    s_idx = [i for i, k in enumerate(kinds) if k == "S"]
    pad = {}
    cols = _extent(info.iters[s_idx[-1]].dom)
    if cols is not None and _pick_lanes(cols, lanes) == 1 and cols >= lanes:
        pad[info.iters[s_idx[-1]].var] = 2 * lanes
    if len(s_idx) >= 2:
        rows = _extent(info.iters[s_idx[-2]].dom)
        if rows is not None and rows >= 8 and not any(rows % c == 0 for c in range(4, 9)):
            pad[info.iters[s_idx[-2]].var] = 8
    if not pad:
        return None
    stmt = sch.get(info.block_rv)
    return [next((m for v, m in pad.items() if v.same_as(iv.var)), 1) for iv in stmt.iter_vars]


# Accumulators a register tile may hold: x86-64 with AVX-512 has 32 vector registers, AVX2 / SSE and NEON
# 16 / 32; a few stay free for the broadcast input and the weight vectors.
MAX_ACCUMULATORS = 24


def _register_tile(cols: int | None, rows_ext: int | None, lanes: int) -> tuple[int, int]:
    """(vectors, rows) of a reduction's register tile: up to 4 vectors of ``lanes`` along the last spatial axis
    (``cols``, a multiple of ``lanes``), and the largest divisor (2..8) of the next axis' extent ``rows_ext``
    as rows, with at most MAX_ACCUMULATORS accumulators; more rows are preferred to more vectors (a
    7x7 feature map's 7 output columns are 7 rows)."""
    rows = 1
    if rows_ext is not None:
        for cand in range(8, 1, -1):
            if rows_ext % cand == 0:
                rows = cand
                break
        if rows < 4 and rows_ext >= 8:
            rows = 8  # a prime-like extent (ViT's 197 tokens): 8 rows, the last tile partial (predicated)
    vecs = 1
    if cols is not None:
        for cand in (4, 3, 2):
            if cols % (cand * lanes) == 0 and cand * rows <= MAX_ACCUMULATORS:
                vecs = cand
                break
    return vecs, rows


class Declining(CPUScheduleRule):
    """``rule``, declining (None: the next rule gets the kernel) where it raises instead of declining itself:
    dlight's CPU GEMV rule unpacks four loops from every block it accepts and fails on a 2-bit per-tensor
    weight's dequantize-matmul kernel (a compile that ended in an internal error), and its normalization
    asserts on blocks without spatial loops."""

    def __init__(self, rule: CPUScheduleRule):
        super().__init__()
        self.rule = rule

    def apply(self, func, target: Target, tunable: bool):
        try:
            return self.rule.apply(func, target, tunable)
        except (ValueError, IndexError, RuntimeError, AssertionError):  # InternalError is a RuntimeError;
            return None  # the GEMV analysis asserts on a depthwise-conv-like reduction (MobileNetV2 from dynamo)


def schedule_pass(target: Target, pack: bool = True) -> tvm.transform.Pass:
    """Matmul/conv tiling first (``pack``: constant weights packed into panels), then dlight's CPU GEMV and
    softmax/norm rules, then the generic fallback."""
    return dlight.ApplyDefaultSchedule(
        ParallelVectorize(gemm_only=True, pack=pack),
        Declining(dlight.cpu.GEMV()),
        Declining(dlight.cpu.Reduction()),
        ParallelVectorize(),
    )


def layout_passes() -> list[tvm.transform.Pass]:
    """Convolutions in NHWC with HWIO weights: the output channels, innermost, are the vector axis, each weight
    vector is one contiguous load and each input value one broadcast. ConvertLayout carries the layout through
    the elementwise ops around them and transposes only at the edges; the weights' transposes are constants,
    folded when legalized. A module without 2-D convolutions is left as it is, and so is one ConvertLayout
    cannot convert (it asserts on some ops TVM's ONNX converters emit: Unique, NonZero, a tuple-valued
    Dropout): the layout is a speed-up, never a reason to refuse a model."""
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="EdgecNHWC")
    def _pass(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        conv = tvm.ir.Op.get("relax.nn.conv2d")
        found: list[bool] = []
        for func in mod.functions.values():
            if isinstance(func, relax.Function):
                relax.analysis.post_order_visit(
                    func, lambda e: found.append(True) if isinstance(e, relax.Call) and e.op.same_as(conv) else None
                )
        if not found:
            return mod
        try:
            return relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)
        except (RuntimeError, ValueError):  # TVM raises its errors as RuntimeError (InternalError) or ValueError
            return mod

    return [_pass]


def exact_target(target: Target) -> Target | None:
    """``target`` without fused multiply-add, or None where it has none to turn off.

    TVM's LLVM code generator lets LLVM contract every ``a * b + c`` into one FMA where the CPU has it, and
    compiles every CPU kernel of a module for one target. That is an approximation only where the result is
    compared with a tolerance anyway: in a kernel that floors, rounds or compares a computed coordinate
    (nearest Resize's ``(x + 0.5) * scale - 0.5``, Mod's ``x - trunc(x / y) * y``, ...) the contracted form can
    fall on the other side of a tie and give another integer."""
    from tvm.target import codegen

    if "fma" not in codegen.llvm_get_cpu_features(target):
        return None
    spec = dict(target.export())
    spec["mattr"] = [*list(spec.get("mattr") or []), "-fma"]
    return Target({k: v for k, v in spec.items() if k in ("kind", "mtriple", "mcpu", "mattr", "keys")})


class SplitGemm:
    """Matmul / convolution kernels (the reductions the register-tile rule claims, whose summation order
    differs from the reference's anyway) compiled apart, for the full target with FMA; every other kernel
    stays in the module built for :func:`exact_target`, so its arithmetic rounds as the IR's reference does.

    :meth:`mark` notes those kernels before they are scheduled, :meth:`pass_` then moves each out of the module
    and calls it by name (``call_dps_packed``), and :meth:`library` compiles the kernels moved, for the Relax
    executable to import."""

    def __init__(self, target: Target):
        self.target = target
        self.funcs: dict[str, tirx.PrimFunc] = {}
        self.gemm: set[str] = set()

    def mark(self) -> tvm.transform.Pass:
        """Before scheduling: note which kernels are matmul / convolution reductions."""
        split = self

        @tvm.transform.module_pass(opt_level=0, name="EdgecMarkGemm")
        def _pass(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
            split.gemm.update(gemm_kernels(mod, split.target))
            split.gemm.update(
                gv.name_hint
                for gv, f in mod.functions.items()
                if isinstance(f, tirx.PrimFunc)
                and f.attrs is not None
                and (INTEGER_KERNEL in f.attrs or GEMM_KERNEL in f.attrs)
            )
            return mod

        return _pass

    def pass_(self) -> tvm.transform.Pass:
        from tvm import relax
        from tvm.relax.expr_functor import PyExprMutator, mutator

        split = self

        @mutator
        class _Calls(PyExprMutator):
            def __init__(self, mod, names):
                super().__init__(mod)
                self.names = names

            def visit_call_(self, call):
                call = super().visit_call_(call)
                if (
                    call.op.same_as(tvm.ir.Op.get("relax.call_tir"))
                    and len(call.args) == 2  # no symbolic shape arguments (tir_vars)
                    and call.args[0].name_hint in self.names
                ):
                    return relax.call_dps_packed(
                        relax.ExternFunc(self.names[call.args[0].name_hint]), call.args[1], list(call.ty_args)
                    )
                return call

        @tvm.transform.module_pass(opt_level=0, name="EdgecSplitGemm")
        def _pass(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
            names = {}
            for gv, func in mod.functions.items():
                # SplitLayoutRewritePreproc renames a kernel whose weights it pre-packs to <name>_prepacked
                if isinstance(func, tirx.PrimFunc) and gv.name_hint.removesuffix("_prepacked") in split.gemm:
                    names[gv.name_hint] = f"edgec_gemm_{gv.name_hint}"
            if not names:
                return mod
            calls = _Calls(mod, names)
            for gv, func in list(mod.functions.items()):
                if isinstance(func, relax.Function):
                    calls.builder_.update_func(gv, calls.visit_expr(func))
            mod = calls.builder_.get()
            for gv in [g for g in mod.get_global_vars() if g.name_hint in names]:
                used = any(
                    isinstance(f, relax.Function) and gv in relax.analysis.all_global_vars(f)
                    for f in mod.functions.values()
                )
                if not used:  # every call was rewritten: the kernel leaves this module for the gemm library
                    split.funcs[names[gv.name_hint]] = mod[gv].with_attr("global_symbol", names[gv.name_hint])
                    del mod[gv]
            return mod

        return _pass

    def library(self):
        """The moved kernels compiled for the full target (None when none was moved)."""
        if not self.funcs:
            return None
        return tvm.tirx.build(tvm.IRModule(self.funcs), target=self.target)


def _inline_exact(target: Target) -> bool:
    """True where the kernels this rule schedules are compiled without FMA contraction, so an inlined ``a * b + c``
    still rounds twice: x86 (SplitGemm builds them for :func:`exact_target`, or the CPU has no FMA). Not AArch64,
    where every kernel is built for one target with FMA (LLVM names no feature to turn it off)."""
    return "x86" in str(target.attrs.get("mtriple", "x86_64")) or str(target.kind) != "llvm"


def _pure_chain(sch: s_tir.Schedule, infos) -> bool:
    """True for an elementwise / injective chain safe to inline: every block spatial and without an init (a reduction
    over extent-1 loops is analysed as spatial, and inlining its consumer into it computed LinearAttention wrong),
    each buffer written by one block only, no block reading what it writes (an in-place update sequence)."""
    writers: dict[str, int] = {}
    for info in infos:
        if any(it.kind != "S" for it in info.iters):
            return False
        block = sch.get(info.block_rv)
        if block.init is not None:  # a reduction whose loops have extent 1 (a matmul over K = 1) looks spatial
            return False
        written = {w.source.name for w in block.writes}
        if written & {r.source.name for r in block.reads}:
            return False
        for name in written:
            writers[name] = writers.get(name, 0) + 1
    return all(n == 1 for n in writers.values())


def _gemm_kernel(func: tirx.PrimFunc, lanes: int) -> bool:
    try:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch) or []
        return any(ParallelVectorize._is_gemm_like(sch, i, lanes) for i in infos)
    except (RuntimeError, ValueError, IndexError, AssertionError):
        return False


def front_passes(target: Target) -> list[tvm.transform.Pass]:
    """Relax ops to unscheduled kernels: layouts converted, exp / erf / tanh as vectorizable polynomials
    (fastmath.py), library dispatch, legalization and fusion, constant weights marked layout-free (the kernels
    tuning searches are these)."""
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cg

    from .fastmath import fast_math_pass

    return (
        layout_passes()
        + [fast_math_pass()]
        + cg.library_dispatch_passes(target)
        + cg.legalize_passes(target)
        + [relax.transform.AttachAttrLayoutFreeBuffers()]
    )


def gemm_kernels(mod: tvm.ir.IRModule, target: Target) -> dict[str, tirx.PrimFunc]:
    """The matmul / convolution kernels of a module out of :func:`front_passes`, by name."""
    lanes = max(llvm_get_vector_width(target) // 32, 4)
    return {
        gv.name_hint: f
        for gv, f in mod.functions.items()
        if isinstance(f, tirx.PrimFunc)
        and not (f.attrs is not None and f.attrs.get("tirx.is_scheduled", False))
        and _gemm_kernel(f, lanes)
    }


def kernel_passes(
    target: Target, split: SplitGemm | None = None, tuned: tvm.transform.Pass | None = None
) -> list[tvm.transform.Pass]:
    """From Relax ops to scheduled kernels: :func:`front_passes`, then ``tuned`` (tuning's schedules for the
    kernels it holds), the default schedules for the rest (packing constant weights into panels), the packing
    folded into the constants; with ``split``, the matmul / convolution kernels then leave the module (see
    :class:`SplitGemm`).

    TVM's SplitLayoutRewritePreproc asserts on a module holding a kernel without compute blocks (the scans,
    scatters and sorts TVM writes as plain loops: CumSum, ScatterElements, TopK); such a module is scheduled
    again without packing."""
    from tvm import relax

    back = [relax.transform.DeadCodeElimination()] + ([split.pass_()] if split is not None else [])

    @tvm.transform.module_pass(opt_level=0, name="EdgecScheduleAndPack")
    def _schedule(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        marked = tvm.transform.Sequential(
            ([split.mark()] if split is not None else []) + ([tuned] if tuned is not None else [])
        )(mod)
        try:
            return tvm.transform.Sequential(
                [schedule_pass(target), relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant()]
            )(marked)
        except (RuntimeError, ValueError):  # TVM raises its errors as RuntimeError (InternalError) or ValueError
            return schedule_pass(target, pack=False)(marked)

    return front_passes(target) + [_schedule] + back


def build_pipeline(
    target: Target, split: SplitGemm | None = None, tuned: tvm.transform.Pass | None = None
) -> tvm.transform.Pass:
    """TVM's CPU pipeline with :func:`kernel_passes` in place of its legalization."""
    from tvm.relax.backend.cpu_generic import pipeline as cg

    @tvm.transform.module_pass(opt_level=0, name="EdgecCpuPipeline")
    def _pipeline(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                kernel_passes(target, split, tuned) + cg.dataflow_lower_passes(target) + cg.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline
