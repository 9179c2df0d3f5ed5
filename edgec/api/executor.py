"""Where independent units of edgec's work run: in this process, in worker processes on this machine, or on Ray.

One interface, :class:`Executor`, three ways to run ``fn(item, shared)`` over a list of items:

- ``local`` with one worker (the default): in this process, one item after the other (what edgec always did; no
  process or Ray is started);
- ``local`` with N workers: N processes on this machine (``spawn``ed: TVM's and onnxruntime's thread pools do not
  survive a fork), ``shared`` sent to each process once by its initializer, not with every item; the processes
  live until ``close()`` and serve every later run given the same ``shared`` object (pass a new object to change
  it);
- ``ray`` / ``ray://HOST:PORT``: Ray tasks, on a local Ray started on the fly (``--executor ray`` without
  ``RAY_ADDRESS``) or on the cluster named (``RAY_ADDRESS`` honoured), ``shared`` put in the object store once.

Results come back in the items' order, whatever order the workers finish in, so a run's output never depends on
the worker count. An exception raised by ``fn`` is the item's result (``ok=False``, its message), not retried: a
compile that fails fails the same way on every worker. A worker process that dies (killed, out of memory) is
different: its items run again on a fresh worker, up to ``retries`` times (Ray's own task retries; for local
processes a new pool).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import EdgecError, UsageError

EXECUTORS = ("local", "ray", "ray://HOST:PORT")
DEFAULT_RETRIES = 2


@dataclasses.dataclass
class TaskResult:
    """One item's outcome: ``value`` (``fn``'s return) when ``ok``, else ``error``; where and how long it ran."""

    index: int
    ok: bool
    value: Any = None
    error: str | None = None
    worker: str = ""  # pid@host of the process that ran it
    seconds: float = 0.0
    attempts: int = 1  # runs started for it (more than one: a worker died under it)


def _call(fn: Callable[[Any, Any], Any], item: Any, shared: Any, index: int = 0) -> TaskResult:
    """``fn(item, shared)`` with its exception as the result (``ok=False``): where and how long it ran."""
    t0 = time.perf_counter()
    worker = f"{os.getpid()}@{socket.gethostname()}"
    try:
        value = fn(item, shared)
    except Exception as e:  # noqa: BLE001 - the item's failure is its result
        msg = str(e) or type(e).__name__
        if not isinstance(e, EdgecError):  # a bug, not a user-facing failure: where it happened
            msg = f"{type(e).__name__}: {msg}\n{traceback.format_exc(limit=8)}"
        return TaskResult(index, False, error=msg, worker=worker, seconds=time.perf_counter() - t0)
    return TaskResult(index, True, value, worker=worker, seconds=time.perf_counter() - t0)


class Executor:
    """Runs ``fn(item, shared)`` for every item; see the module. ``on_done(result)`` is called as each item
    finishes (in completion order), for progress."""

    name = "executor"
    # whether every worker sees this machine's files (a path in ``shared`` is enough); Ray's workers may be elsewhere
    same_machine = True

    def __init__(self, workers: int = 1, retries: int = DEFAULT_RETRIES):
        if workers < 1:
            raise UsageError(f"--workers must be at least 1, not {workers}")
        self.workers = workers
        self.retries = retries

    @property
    def fans_out(self) -> bool:
        """Whether independent units are worth sending here: more than one worker runs them at once. (With one,
        a pass measures, solves or compiles in its own process, as without an executor.)"""
        return self.workers > 1

    def run(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        shared: Any = None,
        on_done: Callable[[TaskResult], None] | None = None,
    ) -> list[TaskResult]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers}

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """This machine: in this process with one worker, else a pool of ``workers`` spawned processes."""

    name = "local"

    def run(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        shared: Any = None,
        on_done: Callable[[TaskResult], None] | None = None,
    ) -> list[TaskResult]:
        if self.workers == 1:
            out = []
            for i, item in enumerate(items):
                out.append(_call(fn, item, shared, i))
                if on_done:
                    on_done(out[-1])
            return out
        return self._pool(fn, list(items), shared, on_done)

    def __init__(self, workers: int = 1, retries: int = DEFAULT_RETRIES):
        super().__init__(workers, retries)
        # the worker processes, kept between runs given the same ``shared`` object (a pass that runs a few tasks
        # per layer group does not start fresh processes each time); closed by close()
        self._live: tuple[Any, Any] | None = None

    def _processes(self, shared: Any) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._live is not None and self._live[1] is shared:
            return self._live[0]
        self._drop()
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_set_shared,
            initargs=(shared, worker_threads(self.workers)),
        )
        self._live = (pool, shared)
        return pool

    def _drop(self) -> None:
        if self._live is not None:
            self._live[0].shutdown(wait=True, cancel_futures=True)
            self._live = None

    def close(self) -> None:
        self._drop()

    def _pool(
        self,
        fn: Callable[[Any, Any], Any],
        items: list[Any],
        shared: Any,
        on_done: Callable[[TaskResult], None] | None,
    ) -> list[TaskResult]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        results: dict[int, TaskResult] = {}
        attempts = {i: 0 for i in range(len(items))}
        while len(results) < len(items):
            todo = [i for i in range(len(items)) if i not in results]
            for i in todo:
                attempts[i] += 1
            broken = False
            pool = self._processes(shared)
            try:
                futures = {pool.submit(_call_shared, fn, items[i], i): i for i in todo}
            except BrokenProcessPool:  # a worker of an earlier run died since
                self._drop()
                pool = self._processes(shared)
                futures = {pool.submit(_call_shared, fn, items[i], i): i for i in todo}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    i = futures[f]
                    try:
                        r = f.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    r.attempts = attempts[i]
                    results[i] = r
                    if on_done:
                        on_done(r)
            if broken:
                self._drop()
                for i in [i for i in todo if i not in results and attempts[i] > self.retries]:
                    r = TaskResult(
                        i,
                        False,
                        error=f"its worker process died {attempts[i]} times (killed, or out of memory); "
                        "run it alone (--workers 1) to see why",
                        attempts=attempts[i],
                    )
                    results[i] = r
                    if on_done:
                        on_done(r)
        return [results[i] for i in range(len(items))]


_SHARED: Any = None
# the runtimes' thread pools, sized so that the workers together use the cores once (a compile verifies its artifact
# on TVM's, onnxruntime's or OpenVINO's pool, each of which takes every core by default)
_THREAD_VARS = ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def task_threads() -> int:
    """Threads a task's runtime should take in this worker: its share of the cores, as the executor set it in
    OMP_NUM_THREADS (onnxruntime does not read it); 0 (the runtime's default) outside a worker."""
    return int(os.environ.get("OMP_NUM_THREADS", "0"))


def worker_threads(workers: int) -> dict[str, str]:
    n = str(max(1, cores() // workers))
    return {v: os.environ.get(v, n) for v in _THREAD_VARS}


def _set_shared(shared: Any, env: dict[str, str] | None = None) -> None:
    global _SHARED
    _SHARED = shared
    os.environ.update(env or {})
    if env and "OPENBLAS_NUM_THREADS" in env:
        # numpy's BLAS was loaded (importing this module) before the variables were set: its pool already has a
        # thread per core, so N workers would run N x cores BLAS threads (2 workers ran vq 0.87x as fast as 1)
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(env["OPENBLAS_NUM_THREADS"]), user_api="blas")


def _call_shared(fn: Callable[[Any, Any], Any], item: Any, index: int) -> TaskResult:
    return _call(fn, item, _SHARED, index)


class RayExecutor(Executor):
    """Ray tasks: ``address`` None starts a local Ray of ``workers`` CPUs for this run (shut down with it);
    ``auto`` or ``ray://HOST:PORT`` joins that cluster (each of its nodes needs edgec installed, at this version)."""

    name = "ray"
    same_machine = False

    def __init__(self, address: str | None = None, workers: int = 1, retries: int = DEFAULT_RETRIES):
        super().__init__(workers, retries)
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'edgec[ray]'") from None
        self.ray = ray
        self.address = address
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
                # a cluster's size is its CPUs (the worker count a caller asked for does not change it)
                resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
                self.workers = max(1, int(resources.get("CPU", workers)))
            else:
                env = worker_threads(workers)
                # address="local": a new Ray for this run, even where another runs (ray.init() would join it)
                ray.init(address="local", num_cpus=workers, runtime_env={"env_vars": env}, **kwargs)
            self.started = True  # close() stops the local Ray, or leaves the cluster

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "address": self.address or "local"}

    def run(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        shared: Any = None,
        on_done: Callable[[TaskResult], None] | None = None,
    ) -> list[TaskResult]:
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=self.retries, retry_exceptions=False)(_call)
        ref = ray.put(shared)  # once: every task reads it from the object store
        refs = [remote.remote(fn, item, ref, i) for i, item in enumerate(items)]
        index = {r.hex(): i for i, r in enumerate(refs)}
        results: dict[int, TaskResult] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for d in done:
                i = index[d.hex()]
                try:
                    r = ray.get(d)
                except ray.exceptions.RayError as e:  # the worker died more than `retries` times
                    r = TaskResult(i, False, error=f"Ray could not run it: {type(e).__name__}: {str(e)[:300]}")
                results[i] = r
                if on_done:
                    on_done(r)
        return [results[i] for i in range(len(items))]

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False


def make_executor(spec: str | None = "local", workers: int | None = None, retries: int = DEFAULT_RETRIES) -> Executor:
    """``local`` (default), ``ray`` (``RAY_ADDRESS`` if set, else a local Ray started for this run) or
    ``ray://HOST:PORT``; ``workers`` processes (local) or CPUs of the local Ray (default 1: serial, in this
    process, for ``local``; every core for ``ray``)."""
    spec = (spec or "local").strip()
    if spec == "local":
        return LocalExecutor(1 if workers is None else workers, retries)
    if spec == "ray":
        n = cores() if workers is None else workers
        return RayExecutor(os.environ.get("RAY_ADDRESS") or None, n, retries)
    if spec.startswith("ray://") or spec == "auto":
        return RayExecutor(spec, 1 if workers is None else workers, retries)
    raise UsageError(f"--executor {spec!r}: expected one of {', '.join(EXECUTORS)}")
