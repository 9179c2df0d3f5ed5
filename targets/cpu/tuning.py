"""``cpu{tune=N}``: TVM's MetaSchedule searches N schedules for each matmul / convolution kernel, on this machine.

The kernels tuned are the ones the default rule register-tiles (:func:`schedule.gemm_kernels`); every other kernel
keeps its default schedule. Results go to a persistent database (MetaSchedule's JSON database) in the compile
cache's ``tuning/`` folder, one per CPU: a kernel is keyed by its TIR (structural hash), so a later compile with the
same layer shapes on the same CPU reuses what was found instead of searching again. Each kernel's default schedule
is timed the same way and recorded beside the candidates, so the schedule a compile gets is the fastest measured:
tuning never makes a kernel slower than not tuning. MetaSchedule's schedules transform loops only, so a tuned
kernel computes what the default one computes (``--verify`` still checks it).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
from typing import Any

import tvm
from tvm.target import Target

from ...api import TUNING_DIR, default_cache_dir


# MetaSchedule's workers time out after 30 s by default. Building one candidate (a fresh process that imports TVM,
# then LLVM) takes longer than that on a loaded machine (a 2-core build server running other jobs), and a timed-out
# default schedule is left out of the database. A candidate that is truly slow still fails, just later.
BUILD_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 300.0


def _build(mod, target, _params):
    """MetaSchedule's default build without its first step, ``import tvm.s_tir.tensor_intrin``: that registers
    every tensor intrinsic TVM has (CUDA's alone take 16 s) in each fresh build worker, and a scheduled module
    needs none of them (tensorization already put the intrinsics' bodies in it)."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _builder():
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S, f_build=_build)


def _runner():
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S)


@contextlib.contextmanager
def _cpu_intrinsics():
    """While MetaSchedule searches: ``tvm.s_tir.tensor_intrin`` with only its CPU intrinsics registered (x86, Arm,
    RISC-V). TuneContext imports the whole package, whose CUDA, ROCm and Hexagon intrinsics take 20 s to register
    and serve no CPU schedule. The package entry is put back afterwards, so a later import in this process (a GPU
    plugin's search) still registers everything (the CPU submodules stay imported, not registered twice)."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    sys.modules[name] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    try:
        for sub in ("x86", "arm_cpu", "riscv_cpu"):
            importlib.import_module(f"{name}.{sub}")
        yield
    finally:
        del sys.modules[name]


def tuning_target(target: Target) -> Target:
    """``target`` with the core count MetaSchedule needs to sample parallel schedules."""
    return Target({**target.export(), "num-cores": len(os.sched_getaffinity(0))})


def database_dir(cache_dir: str | None, target: Target) -> str:
    """``<cache>/tuning/<CPU>-<hash of the target>``: a database per CPU model and target (a kernel tuned on one
    CPU is no guide to another). ``cache_dir`` is the compile cache's root (None: the default one, as a compile
    without --cache-dir uses)."""
    spec = {k: v for k, v in target.export().items() if k in ("mtriple", "mcpu", "mattr")}
    digest = hashlib.sha256(repr(sorted(spec.items())).encode()).hexdigest()[:12]
    return os.path.join(cache_dir or default_cache_dir(), TUNING_DIR, f"{spec.get('mcpu') or 'generic'}-{digest}")


def open_database(path: str):
    from tvm.s_tir import meta_schedule as ms

    os.makedirs(path, exist_ok=True)
    return ms.database.JSONDatabase(
        os.path.join(path, "workloads.json"), os.path.join(path, "records.json"), allow_missing=True
    )


def tune(kernels: dict[str, Any], target: Target, trials: int, path: str, seed: int = 0):
    """Search ``trials`` schedules for each kernel (name -> unscheduled PrimFunc) not yet in the database at
    ``path``; returns the database. A progress bar (tqdm, on a terminal) counts the trials and shows each
    kernel's best latency."""
    from tvm.s_tir import meta_schedule as ms

    db = open_database(path)
    ttarget = tuning_target(target)
    todo = {n: f for n, f in sorted(kernels.items()) if not _tuned(db, f, ttarget)}
    if not todo:
        return db
    with _cpu_intrinsics():
        from tqdm import tqdm

        bar = tqdm(total=trials * len(todo), desc="tuning", unit="trial", leave=False, disable=None)
        names = list(todo)
        quiet = logging.getLogger("edgec.tuning")
        quiet.setLevel(logging.ERROR)
        tasks = [
            ms.TuneContext(
                mod=f,
                target=ttarget,
                space_generator="post-order-apply",
                search_strategy="evolutionary",
                task_name=n,
                rand_state=seed + i,
                num_threads=len(os.sched_getaffinity(0)),
                logger=quiet,
            ).clone()
            for i, (n, f) in enumerate(todo.items())
        ]
        try:
            import xgboost  # noqa: F401

            cost_model = "xgb"
        except ImportError:  # MetaSchedule's learned model needs xgboost; without it candidates are drawn at random
            cost_model = "random"
        failed = []
        with tempfile.TemporaryDirectory(prefix="edgec-tune-") as work:
            # one search per kernel: MetaSchedule asserts on some kernels (an attention-mask kernel's compute_at in
            # its design space), and such a kernel keeps its default schedule instead of failing the compile
            for task, name in zip(tasks, names):
                try:
                    ms.tune_tasks(
                        tasks=[task],
                        task_weights=[1.0],
                        work_dir=work,
                        max_trials_global=trials,
                        max_trials_per_task=trials,
                        num_trials_per_iter=min(trials, 64),
                        database=db,
                        builder=_builder(),
                        runner=_runner(),
                        cost_model=cost_model,
                        measure_callbacks=[*ms.MeasureCallback.create("default"), _progress(bar, {0: name})],
                    )
                except (RuntimeError, ValueError) as e:
                    failed.append(f"{name} ({type(e).__name__}: {str(e).strip().splitlines()[-1][:160]})")
        # after the search (an evolutionary search seeded from a database record of another design space fails)
        _record_defaults(db, todo, target, ttarget)
        if failed:
            import warnings

            warnings.warn(
                f"MetaSchedule could not search {len(failed)} of {len(tasks)} kernels; they keep the default "
                "schedules: " + "; ".join(failed),
                stacklevel=2,
            )
    bar.close()
    return db


def _record_defaults(db, kernels: dict[str, Any], target: Target, ttarget: Target) -> None:
    """Build and time each kernel's default schedule (schedule.py's register tiles) as MetaSchedule times a
    candidate, and record it in the database: the schedule the database then gives a kernel is the fastest
    measured, the default included, so tuning never makes a kernel slower than not tuning. A default that does
    not build or run here is simply not recorded."""
    from tvm.s_tir import meta_schedule as ms

    from .schedule import ParallelVectorize

    items = []
    for f in kernels.values():
        wl_mod = ms.tune_context._normalize_mod(f)
        try:
            with target:
                sch = ParallelVectorize(gemm_only=True).apply(wl_mod["main"], target, False)
        except (RuntimeError, ValueError):
            continue
        if sch is not None:
            items.append((wl_mod, sch))
    if not items:
        return
    built = _builder().build([ms.builder.BuilderInput(sch.mod, ttarget) for _, sch in items])
    ok = [(item, b) for item, b in zip(items, built) if b.error_msg is None]
    futures = _runner().run(
        [
            ms.runner.RunnerInput(
                b.artifact_path, device_type="cpu", args_info=ms.arg_info.ArgInfo.from_entry_func(sch.mod)
            )
            for (_, sch), b in ok
        ]
    )
    for ((wl_mod, sch), _), fut in zip(ok, futures):
        res = fut.result()
        if res.error_msg is None and res.run_secs:
            db.commit_tuning_record(
                ms.database.TuningRecord(
                    sch.trace,
                    db.commit_workload(wl_mod),
                    run_secs=res.run_secs,
                    target=ttarget,
                    args_info=ms.arg_info.ArgInfo.from_prim_func(wl_mod["main"]),
                )
            )


def _tuned(db, func, target: Target) -> bool:
    """Whether ``func`` was searched before: its workload is in the database (every trial is recorded, the failed
    ones too; a kernel whose trials all failed, e.g. timed out on a loaded machine, keeps its default schedule
    rather than being searched again by every compile)."""
    from tvm.s_tir import meta_schedule as ms

    return bool(db.has_workload(ms.tune_context._normalize_mod(func)))


def _progress(bar, names: dict[int, str]):
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
    from tvm.ir.utils import derived_object

    best: dict[str, float] = {}

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            for r in runner_results:
                if r.run_secs and not r.error_msg:
                    sec = sum(float(x) for x in r.run_secs) / len(r.run_secs)
                    best[names[task_id]] = min(best.get(names[task_id], sec), sec)
            bar.update(len(runner_results))
            if names[task_id] in best:
                bar.set_postfix_str(f"{names[task_id]}: best {best[names[task_id]] * 1e3:.3f} ms")

    return Progress()


def apply_pass(db, target: Target) -> tvm.transform.Pass:
    """The database's best schedule for every kernel it holds; the others are left for the default schedules.
    A kernel whose recorded schedule does not replay (TVM refuses one of its steps) keeps the default schedule
    too: tuning may make a compile faster, never make it fail."""
    from tvm import s_tir, tirx
    from tvm.s_tir import meta_schedule as ms

    ttarget = tuning_target(target)

    @tvm.transform.module_pass(opt_level=0, name="EdgecApplyTuning")
    def _pass(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        for gv, func in list(mod.functions.items()):
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
                continue
            wl = ms.tune_context._normalize_mod(func)
            if not db.has_workload(wl):
                continue
            try:
                with _cpu_intrinsics():  # a recorded schedule may tensorize with one (x86's VNNI dot product)
                    sch = db.query_schedule(wl, ttarget, "main")
            except (RuntimeError, ValueError, s_tir.schedule.ScheduleError):
                continue
            if sch is None:
                continue
            tuned = sch.mod["main"].without_attr("global_symbol")
            mod[gv] = tuned.with_attrs({k: v for k, v in func.attrs.items() if k != "global_symbol"}).with_attr(
                "tirx.is_scheduled", True
            )
        return mod

    return _pass
