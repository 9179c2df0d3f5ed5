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

    def __init__(self, gemm_only: bool = False):
        super().__init__()
        self.gemm_only = gemm_only

    @staticmethod
    def _is_gemm_like(info, lanes: int) -> bool:
        kinds = [it.kind for it in info.iters]
        s = [i for i, k in enumerate(kinds) if k == "S"]
        if "R" not in kinds or len(s) < 2 or "O" in kinds:
            return False
        return _pick_lanes(_extent(info.iters[s[-1]].dom), lanes) > 1

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos:
            return None
        lanes = max(llvm_get_vector_width(target) // 32, 4)
        if self.gemm_only and not any(self._is_gemm_like(i, lanes) for i in infos):
            return None
        for info in infos:
            try:
                self._schedule_block(sch, info, lanes)
            except s_tir.schedule.ScheduleError:
                continue  # every primitive preserves semantics: a block left half-scheduled is still correct
        return sch

    @staticmethod
    def _schedule_block(sch: s_tir.Schedule, info, lanes: int) -> None:
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
        lanes = _pick_lanes(exts[s_idx[-1]], lanes)
        if lanes == 1:
            # No clean vector axis: parallelize the outer spatial loops and leave the rest scalar.
            outer = s_loops[:-1] if (r_loops and len(s_loops) > 1) else s_loops
            if outer:
                sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
            return
        vo, vi = sch.split(s_loops[-1], [None, lanes])
        if not r_loops:
            sch.vectorize(vi)
            outer = s_loops[:-1] + [vo]
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
            return
        # Reduction (matmul, conv): a register tile of ROWS x lanes accumulators. The second-innermost
        # spatial loop is split by ROWS (unrolled) so each loaded vector feeds several accumulators.
        rows_loop, rows = None, 1
        ext = exts[s_idx[-2]] if len(s_idx) >= 2 else None
        if ext is not None:
            for cand in (4, 2):
                if ext % cand == 0:
                    rows = cand
                    break
        outer = s_loops[:-2] if rows > 1 else s_loops[:-1]
        if rows > 1:
            ro, rows_loop = sch.split(s_loops[-2], [None, rows])
            outer = outer + [ro]
        outer = outer + [vo]
        tile = ([rows_loop] if rows_loop is not None else []) + [vi]
        sch.reorder(*outer, *r_loops, *tile)
        if len(outer) > 1:
            par = sch.fuse(*outer[:-1]) if len(outer) > 2 else outer[0]
            sch.parallel(par)
        acc = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(acc, outer[-1])
        init = sch.decompose_reduction(block, r_loops[0])
        sch.vectorize(sch.get_loops(init)[-1])
        # TIR refuses to vectorize a spatial loop of a reduction update; unrolled, the constant-indexed
        # accumulator tile is promoted to registers and LLVM's SLP vectorizer emits vector FMAs.
        if rows_loop is not None:
            sch.unroll(rows_loop)
        sch.unroll(vi)
        sch.vectorize(sch.get_loops(acc)[-1])


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


def schedule_pass(target: Target) -> tvm.transform.Pass:
    """Matmul/conv tiling first, then dlight's CPU GEMV and softmax/norm rules, then the generic fallback."""
    return dlight.ApplyDefaultSchedule(
        ParallelVectorize(gemm_only=True),
        Declining(dlight.cpu.GEMV()),
        Declining(dlight.cpu.Reduction()),
        ParallelVectorize(),
    )


def build_pipeline(target: Target) -> tvm.transform.Pass:
    """TVM's CPU pipeline with scheduling inserted between legalization and lowering."""
    from tvm.relax.backend.cpu_generic import pipeline as cg

    @tvm.transform.module_pass(opt_level=0, name="EdgecCpuPipeline")
    def _pipeline(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                cg.library_dispatch_passes(target)
                + cg.legalize_passes(target)
                + [schedule_pass(target)]
                + cg.dataflow_lower_passes(target)
                + cg.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline
