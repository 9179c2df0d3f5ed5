"""``edgec build PLAN.toml -o OUT``: a fleet of compiles, models x targets x pipelines (and footprint tiers), run on an
executor (:mod:`edgec.api.executor`), every compile cached and verified like ``edgec compile``, with one summary.

A plan is ``[[compile]]`` tables::

    [[compile]]
    model = "models/mobilenet.onnx"        # relative to the plan's folder
    targets = ["cpu", "openvino", "tensorrt"]
    pipeline = "quantize{bits=8}"          # or pipelines = ["", "quantize{bits=4}"]
    verify = true                          # default true
    calib = "calib/"                       # optional; needed by calibrating passes and by tiers
    tiers = ["12MB", "8MB"]                # optional: one artifact per footprint tier (mixed precision)
    input_shapes = { input = "1x3x224x224" }
    name = "mobilenet-int8"                # optional: the folder under OUT (default: the model's stem)

Each compile lands in ``OUT/<name>/<target>/`` (``OUT/<name>/<pipeline>/<target>/`` for an entry listing several
pipelines). Every problem of the plan (an unknown key, target or pass, a missing file, two compiles writing one
folder) is reported at once, before any work starts. ``OUT/build.json`` and ``OUT/build.html`` hold the summary.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from .errors import BadInputError, EdgecError, UsageError
from .output import human_bytes

ENTRY_KEYS = (
    "model",
    "targets",
    "pipeline",
    "pipelines",
    "verify",
    "calib",
    "tiers",
    "tier_options",
    "input_shapes",
    "name",
    "eval_text",
    "tolerance",
    "min_cosine",
    "min_top1",
)


@dataclasses.dataclass(frozen=True)
class Job:
    """One compile of the plan (one model, target and pipeline; all its tiers)."""

    entry: int  # its [[compile]] table, from 1
    name: str
    model: str
    target: str
    pipeline: str
    output: str
    verify: bool = True
    calib: str | None = None
    tiers: tuple[str, ...] = ()
    tier_options: str = ""
    input_shapes: tuple[tuple[str, str], ...] = ()
    eval_text: str | None = None
    tolerance: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None

    @property
    def label(self) -> str:
        return f"{self.name} -> {self.target}" + (f" -p {self.pipeline}" if self.pipeline else "")


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")
    return s or "none"


def _path(
    entry: dict[str, Any], key: str, base: str, bad: Callable[[str], None], special: str = "", required: bool = False
) -> str | None:
    """``entry[key]`` as an existing path relative to the plan's folder (or the word ``special``); None if absent or
    wrong (then ``bad`` was told why, and when ``required`` also when absent)."""
    v = entry.get(key)
    if v is None:
        if required:
            bad(f"{key!r} (a file path) is required")
        return None
    if special and v == special:
        return v
    if not isinstance(v, str) or not v:
        bad(f"{key!r} must be a path" + (f" (or {special!r})" if special else ""))
        return None
    v = os.path.normpath(os.path.join(base, os.path.expanduser(v)))
    if not os.path.exists(v):
        bad(f"{key} {v!r} does not exist")
    return v


def _strings(entry: dict[str, Any], key: str, default: list[str], bad: Callable[[str], None], example: str) -> list:
    """``entry[key]`` as a list of strings (one string is a list of one); [] after telling ``bad`` if it is not."""
    v = entry.get(key, default)
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        bad(f"{key!r} must be a list of strings, e.g. {key} = {example}")
        return []
    return v


def load_plan(path: str, out: str) -> list[Job]:
    """The plan's compiles in order; :class:`UsageError` listing every problem found (nothing runs then)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    from .build import parse_input_shapes, parse_target
    from .host import host
    from .ir.passes import PipelineError, did_you_mean, parse_pipeline

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"plan {path!r} does not exist") from None
    except OSError as e:
        raise BadInputError(f"cannot read the plan {path!r}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInputError(f"plan {path!r} is not valid TOML: {e}") from None
    base = os.path.dirname(os.path.abspath(path))
    problems: list[str] = []
    for key in data:
        if key != "compile":
            problems.append(
                f"unknown top-level key {key!r}{did_you_mean(key, ['compile'])}; a plan is [[compile]] tables"
            )
    entries = data.get("compile", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"plan {path!r}: 'compile' must be an array of tables ([[compile]])")
    if not entries and not problems:
        problems.append("the plan has no [[compile]] tables: nothing to build")
    passes = host().passes.as_dict()
    jobs: list[Job] = []
    for k, entry in enumerate(entries, 1):
        where = f"[[compile]] #{k}" + (f" ({entry['model']})" if isinstance(entry.get("model"), str) else "")
        errs: list[str] = []
        bad = errs.append

        for key in entry:
            if key not in ENTRY_KEYS:
                bad(f"unknown key {key!r}{did_you_mean(key, ENTRY_KEYS)}")
        model = _path(entry, "model", base, bad, required=True) or ""
        targets = _strings(entry, "targets", [], bad, '["cpu", "openvino"]')
        if entry.get("targets") in (None, []):
            bad('\'targets\' must name at least one target, e.g. targets = ["cpu", "openvino"]')
        for t in targets:
            try:
                parse_target(t)
            except EdgecError as err:
                bad(str(err))
        if "pipeline" in entry and "pipelines" in entry:
            bad("give 'pipeline' or 'pipelines', not both")
        if "pipelines" in entry:
            pipes = _strings(entry, "pipelines", [], bad, '["", "quantize{bits=4}"]') or [""]
        else:
            pipes = _strings(entry, "pipeline", [""], bad, '"quantize{bits=4}"') or [""]
        for p in pipes:
            try:
                parse_pipeline(p, passes)
            except PipelineError as err:
                bad(f"pipeline {p!r}: {err}")
        calib = _path(entry, "calib", base, bad, special="random")
        eval_text = _path(entry, "eval_text", base, bad)
        tiers = _strings(entry, "tiers", [], bad, '["12MB", "8MB"]')
        if tiers:
            from .compiler import parse_size

            for t in tiers:
                try:
                    parse_size(t)
                except EdgecError as err:
                    bad(f"tier {t!r}: {err}")
            if calib is None:
                bad("'tiers' choose bit widths from measured sensitivities: give 'calib'")
        shapes = entry.get("input_shapes", {})
        if not isinstance(shapes, dict):
            bad("'input_shapes' must be a table, e.g. input_shapes = { image = \"1x3x224x224\" }")
            shapes = {}
        try:
            shapes = {k: "x".join(map(str, d)) for k, d in parse_input_shapes(shapes).items()}
        except EdgecError as err:
            bad(f"input_shapes: {err}")
            shapes = {}
        verify = entry.get("verify", True)
        if not isinstance(verify, bool):
            bad("'verify' must be true or false")
            verify = True
        numbers = {}
        for key in ("tolerance", "min_cosine", "min_top1"):
            v = entry.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                bad(f"{key!r} must be a number")
                v = None
            numbers[key] = None if v is None else float(v)
        tier_options = entry.get("tier_options", "")
        if not isinstance(tier_options, str):
            bad("'tier_options' must be a string, e.g. 'bits=2:4:8'")
            tier_options = ""
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name or name in (".", "..")):
            bad("'name' must be a folder name (no '/')")
            name = None
        name = name or (os.path.splitext(os.path.basename(model))[0] if model else f"entry{k}")
        for p in pipes:
            for t in targets:
                sub = [name] + ([_slug(p)] if len(pipes) > 1 else []) + [_slug(t)]
                jobs.append(
                    Job(
                        entry=k,
                        name=name,
                        model=model,
                        target=t,
                        pipeline=p,
                        output=os.path.join(out, *sub),
                        verify=verify,
                        calib=calib,
                        tiers=tuple(tiers),
                        tier_options=tier_options,
                        input_shapes=tuple(shapes.items()),
                        eval_text=eval_text,
                        **numbers,
                    )
                )
        problems += [f"{where}: {m}" for m in errs]

    seen: dict[str, Job] = {}
    for j in jobs:
        if j.output in seen:
            problems.append(
                f"[[compile]] #{seen[j.output].entry} and #{j.entry} both write {j.output!r}: give one of them a 'name'"
            )
        seen.setdefault(j.output, j)
    if problems:
        raise UsageError(
            f"plan {path!r} has {len(problems)} problem{'s' if len(problems) > 1 else ''} (nothing was compiled):\n  - "
            + "\n  - ".join(problems)
        )
    return jobs


def _options(job: Job, shared: dict[str, Any]) -> dict[str, Any]:
    """``edgec.compiler.compile``'s options for ``job``."""
    opts: dict[str, Any] = dict(
        input_shapes=dict(job.input_shapes),
        verify=job.verify,
        calib=job.calib,
        eval_text=job.eval_text,
        cache_dir=shared.get("cache_dir"),
        use_cache=shared.get("use_cache", True),
        force=False,  # an edgec-written folder is replaced; anything else is refused
        min_cosine=job.min_cosine,
        min_top1=job.min_top1,
    )
    if job.tolerance is not None:
        opts["tolerance"] = job.tolerance
    return opts


def run_job(job: Job, shared: dict[str, Any]) -> dict[str, Any]:
    """One compile without tiers, in a worker; its summary row. A failed compile is a row with ``error``."""
    from .compiler import compile as do_compile
    from .verify import verification_status

    t0 = time.perf_counter()
    row = _base_row(job)
    try:
        res = do_compile(job.model, job.target, job.pipeline, job.output, **_options(job, shared))
        m = res.manifest
        row["cached"] = res.cached
        row["artifact_bytes"] = sum(int(f.get("bytes", 0)) for f in m.get("files", []))
        row["files"] = {f["path"]: f.get("sha256") for f in m.get("files", [])}
        row["weights_bytes"] = (m.get("sizes") or {}).get("weights_bytes_after")
        v = m.get("verification")
        row["verify"] = verification_status(v)
        row["verify_summary"] = (v or {}).get("summary", "")
        ev = m.get("evaluation") or {}
        if ev.get("compiled_perplexity") is not None:
            row["perplexity"] = ev.get("artifact_perplexity") or ev.get("compiled_perplexity")
        row["ok"] = True
    except EdgecError as e:
        row["error"] = str(e)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _unit(item: tuple[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """A task of the build: ``("job", Job)`` (a compile without tiers: its row) or ``("tier", item)`` (one
    footprint tier: its index row, or its error)."""
    from .compiler import tier_task

    kind, what = item
    return run_job(what, shared) if kind == "job" else tier_task(what)


def _cost(job: Job) -> float:
    """A compile's expected cost, to start the longest first: the target's ``compile_cost`` times the model's
    bytes."""
    from .build import parse_target

    try:
        size = os.path.getsize(job.model) if os.path.isfile(job.model) else 1
        return type(parse_target(job.target)).compile_cost * max(size, 1)
    except (OSError, EdgecError):
        return 0.0


def _failed_row(job: Job, error: str, worker: str = "", attempts: int = 0) -> dict[str, Any]:
    """A summary row for a compile that failed outside run_job (an entry's tiers, or its set-up)."""
    return {**_base_row(job), "error": error, "worker": worker, "attempts": attempts, "seconds": 0.0}


def _tiers_row(job: Job, rows: list[dict[str, Any]]) -> dict[str, Any]:
    row = _base_row(job)
    row["tiers"] = [
        {k: t.get(k) for k in ("tier", "path", "artifact_bytes", "weights_bytes", "verification_passed")} for t in rows
    ]
    row["artifact_bytes"] = max((t.get("artifact_bytes") or 0) for t in rows) if rows else 0
    row["cached"] = False
    passed = [t.get("verification_passed") for t in rows]
    row["verify"] = "not asked" if not job.verify else f"{sum(p is True for p in passed)}/{len(passed)} tiers pass"
    row["ok"] = True
    return row


def run_plan(
    jobs: list[Job],
    executor: Any,
    *,
    use_cache: bool = True,
    cache_dir: str | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every job on ``executor``; the summary (rows in plan order, whatever order they finished in).

    Footprint tiers are tasks of their own, in two rounds: the first runs every compile without tiers and the
    largest tier of each entry with tiers (which measures its model's sensitivities, then cached); the second
    the other tiers, at the same time, reading them from the cache. An entry with tiers is published
    (``tiers.json``, its folder moved into place) when all its tiers are done, or not at all."""
    from .compiler import TierRun, tier_error, tiers_abandon, tiers_begin, tiers_finish

    t0 = time.perf_counter()
    shared = {"use_cache": use_cache, "cache_dir": cache_dir}
    rows: dict[int, dict[str, Any]] = {}
    runs: dict[int, TierRun] = {}
    tier_rows: dict[int, list[Any]] = {}  # each tiered job's finished tier tasks (TaskResults), largest first

    def emit(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        if on_row:
            on_row(row)

    for i, job in enumerate(jobs):
        if job.tiers:
            try:
                opts = _options(job, shared)
                runs[i] = tiers_begin(
                    job.model,
                    job.target,
                    job.pipeline,
                    job.output,
                    list(job.tiers),
                    tier_options=job.tier_options,
                    **opts,
                )
                tier_rows[i] = []
            except EdgecError as e:
                emit(i, _failed_row(job, str(e)))

    def tier_failed(i: int, r: Any, label: str) -> None:
        err = str(tier_error(label, r.value["error"])) if r.ok else f"tier {label}: {r.error}"
        tiers_abandon(runs.pop(i))
        emit(i, _failed_row(jobs[i], err, r.worker, r.attempts))

    def finish(i: int) -> None:
        order = [it["tier"] for it in runs[i].items]
        done = sorted(tier_rows[i], key=lambda r: order.index(r.value["tier"]))  # largest first
        try:
            index = tiers_finish(runs[i], [r.value for r in done])
        except EdgecError as e:
            emit(i, _failed_row(jobs[i], str(e)))
            return
        finally:
            tiers_abandon(runs.pop(i))
        row = _tiers_row(jobs[i], index["tiers"])
        row["seconds"] = round(sum(r.seconds for r in done), 3)
        row["worker"] = done[0].worker
        row["attempts"] = max(r.attempts for r in done)
        emit(i, row)

    def settle(owners: list[tuple[int, str]], r: Any) -> None:
        i, label = owners[r.index]
        if i in rows:  # an entry whose other tier failed: already reported
            return
        if not jobs[i].tiers:
            emit(i, _row(jobs[i], r))
        elif not r.ok or "error" in r.value:
            tier_failed(i, r, label)
        else:
            tier_rows[i].append(r)
            if len(tier_rows[i]) == len(runs[i].items):
                finish(i)

    try:
        for rnd in (0, 1):
            items: list[tuple[str, Any]] = []
            owners: list[tuple[int, str]] = []
            for i, job in enumerate(jobs):
                if i in runs:  # first: a largest tier gates its entry's second round
                    for it in runs[i].items[:1] if rnd == 0 else runs[i].items[1:]:
                        items.append(("tier", it))
                        owners.append((i, it["tier"]))
            plain = [i for i, job in enumerate(jobs) if rnd == 0 and not job.tiers and i not in rows]
            for i in sorted(plain, key=lambda i: -_cost(jobs[i])):  # the longest first: none left alone at the end
                items.append(("job", jobs[i]))
                owners.append((i, ""))
            if items:
                executor.run(_unit, items, shared=shared, on_done=lambda r, o=owners: settle(o, r))
    finally:
        for i in list(runs):
            tiers_abandon(runs.pop(i))
    ordered = [rows[i] for i in range(len(jobs))]
    return {
        **executor.describe(),
        "compiles": len(ordered),
        "failed": sum(not r["ok"] for r in ordered),
        "wall_s": round(time.perf_counter() - t0, 3),
        "rows": ordered,
    }


def _base_row(job: Job) -> dict[str, Any]:
    """A summary row's identity: which compile, where it writes; not yet ok."""
    keys = ("entry", "name", "model", "target", "pipeline", "output")
    return {**{k: getattr(job, k) for k in keys}, "ok": False}


def _row(job: Job, r: Any) -> dict[str, Any]:
    # the worker itself failed: a bug (run_job returns a compile's own failure as a row), or a process that died
    row = dict(r.value) if r.ok else {**_base_row(job), "error": r.error}
    row["worker"] = r.worker
    row["attempts"] = r.attempts
    return row


def _cells(r: dict[str, Any]) -> list[str]:
    outcome = (
        r.get("error", "").splitlines()[0][:100]
        if not r["ok"]
        else (f"perplexity {r['perplexity']:.3f}" if r.get("perplexity") else "")
    )
    return [
        r["name"],
        r["target"],
        r.get("pipeline") or "-",
        "ok" if r["ok"] else "FAILED",
        human_bytes(r["artifact_bytes"]) if r.get("artifact_bytes") else "-",
        r.get("verify", "-") if r["ok"] else "-",
        ("cached" if r.get("cached") else f"{r.get('seconds', 0):.1f} s")
        if r["ok"]
        else f"{r.get('seconds', 0):.1f} s",
        outcome,
    ]


HEADER = ["model", "target", "pipeline", "result", "size", "verify", "time", "perplexity / error"]


def summary_text(summary: dict[str, Any]) -> str:
    rows = [HEADER] + [_cells(r) for r in summary["rows"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    ok = summary["compiles"] - summary["failed"]
    lines.append(
        f"{ok} of {summary['compiles']} compiles ok in {summary['wall_s']:.1f} s ({summary['executor']}, "
        f"{summary['workers']} worker{'s' if summary['workers'] > 1 else ''})"
    )
    for r in summary["rows"]:
        if not r["ok"]:
            lines.append(f"FAILED {r['name']} -> {r['target']}: {r.get('error', '')}")
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], out: str) -> None:
    """``OUT/build.json`` and ``OUT/build.html``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "build.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=str)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = []
    for r in summary["rows"]:
        cls = "" if r["ok"] else ' class="failed"'
        cells = _cells(r)
        # a tiers entry has a report per tier: link the largest
        report = os.path.join(os.path.relpath(r["output"], out), *[t["path"] for t in r.get("tiers", [])[:1]])
        cells[0] = (
            f'<a href="{html.escape(report)}/report.html">{html.escape(cells[0])}</a>'
            if r["ok"]
            else html.escape(cells[0])
        )
        body.append(
            f"<tr{cls}>" + "".join(f"<td>{c if i == 0 else html.escape(c)}</td>" for i, c in enumerate(cells)) + "</tr>"
        )
    ok = summary["compiles"] - summary["failed"]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgec build</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:left}}tr.failed td{{background:#fdd}}</style></head><body>
<h1>edgec build</h1>
<p>{ok} of {summary["compiles"]} compiles ok in {summary["wall_s"]:.1f} s on {html.escape(str(summary["executor"]))}
with {summary["workers"]} worker(s).</p>
<table><tr>{head}</tr>
{chr(10).join(body)}
</table></body></html>
"""
    with open(os.path.join(out, "build.html"), "w") as f:
        f.write(page)
