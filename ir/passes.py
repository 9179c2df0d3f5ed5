"""Pass infrastructure: passes as frozen dataclasses, text pipelines, a pass manager with instruments.

A pass is a frozen dataclass whose fields are its options and whose ``name`` is kebab-case::

    @dataclasses.dataclass(frozen=True)
    class Quantize(Pass):
        name: ClassVar[str] = "quantize"
        bits: int = option(8, choices=range(2, 9), help="weight bits")

        def run(self, model, ctx) -> bool: ...

Pipelines are text: ``fold-constants,quantize{bits=4,group=128}``. The :class:`PassManager` verifies the
IR after every pass, runs instruments around each (timing, IR dumps) and wraps failures in a
:class:`PassError` that names the pass and the ones that ran before it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from .core import Model
from .verifier import VerificationError, verify


class PipelineError(ValueError):
    """A pipeline string or pass option is invalid."""


class PassError(RuntimeError):
    """A pass failed; the message names the pass and the passes that ran before it."""

    def __init__(self, pass_name: str, before: Sequence[str], cause: BaseException):
        self.pass_name, self.before, self.cause = pass_name, list(before), cause
        after = f" (after {', '.join(before)})" if before else " (the first pass)"
        super().__init__(f"pass {pass_name!r} failed{after}: {cause}")


def option(
    default: Any,
    *,
    choices: Iterable[Any] | None = None,
    help: str = "",
    check: Callable[[Any], bool] | None = None,
    allowed: str | None = None,
) -> Any:
    """Declare a pass option with its default, allowed values and help text."""
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "check": check,
        "allowed": allowed,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class PassContext:
    """What every pass may consult: the target, free-form config, calibration data and cached analyses."""

    target: Any = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    calibration: Any = None
    # The registries, for passes that run other passes or checks (mixed precision quantizes each candidate with
    # the ``quantize`` pass and judges it with the user's checks): name -> class. The driver fills them from
    # its plugin host; a pass never reaches a global registry.
    passes: Mapping[str, type] = dataclasses.field(default_factory=dict)
    checks: Mapping[str, type] = dataclasses.field(default_factory=dict)
    # Where a pass may run independent units of its work (edgec.api.executor.Executor: worker processes or Ray);
    # None: one after the other in this process. A pass's result must not depend on it.
    executor: Any = None
    # The model as it was before the pipeline's first lossy pass (a copy the PassManager takes when a later pass
    # sets ``needs_float_model``: qat distils from it); None where no pass asked for it.
    float_model: Any = None
    _analyses: dict[type, Any] = dataclasses.field(default_factory=dict)

    def pass_class(self, name: str) -> type:
        """The registered pass ``name`` (a clear error where this context carries no such pass)."""
        if name not in self.passes:
            raise PipelineError(
                f"pass {name!r} is not in this PassContext's registry (passes= holds "
                f"{sorted(self.passes) or 'nothing'}); build the context with "
                "PassContext(passes=...) from the plugin host, as edgec.compile does"
            )
        return self.passes[name]

    def analysis(self, kind: type, model: Model) -> Any:
        """Return the cached analysis ``kind(model)``, computing it on first use."""
        if kind not in self._analyses:
            self._analyses[kind] = kind(model)
        return self._analyses[kind]

    def invalidate(self, preserved: Iterable[type] = ()) -> None:
        keep = set(preserved)
        self._analyses = {k: v for k, v in self._analyses.items() if k in keep}


@dataclasses.dataclass(frozen=True)
class Pass:
    """Base class of every pass. Subclasses are frozen dataclasses with a ``name`` class variable."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    preserves: ClassVar[tuple[type, ...]] = ()
    # A pass that changes the model's numbers on purpose (quantization, pruning, rounding) sets this: --verify
    # then judges the artifact against the original model by fidelity (cosine, top-1), not by --tolerance.
    lossy: ClassVar[bool] = False
    # A pass that learns from the float model (quantization-aware fine-tuning) sets this: the PassManager keeps a
    # copy of the model from before the first lossy pass in ``ctx.float_model``.
    needs_float_model: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_option(self.name, f, getattr(self, f.name))

    def requires(self, model: Model, ctx: PassContext) -> None:
        """Raise if the model does not meet this pass's preconditions."""

    def needs_calibration(self) -> bool:
        """Whether the result depends on ``ctx.calibration`` (True unless the pass says otherwise). A pass that
        says False may only use the data for reports, and must give the same model without it."""
        return True

    def run(self, model: Model, ctx: PassContext) -> bool:
        """Transform ``model`` in place; return whether anything changed."""
        raise NotImplementedError

    def ensures(self, model: Model, ctx: PassContext) -> None:
        """Raise if the pass left the model without the guarantees it promises."""

    def describe(self) -> str:
        opts = ",".join(
            f"{f.name}={_fmt(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        )
        return f"{self.name}{{{opts}}}" if opts else self.name

    @classmethod
    def options(cls) -> list[dict[str, Any]]:
        """Option descriptions for ``edgec passes``."""
        out = []
        for f in dataclasses.fields(cls):
            out.append(
                {
                    "name": f.name,
                    "default": f.default,
                    "type": _type_name(cls, f),
                    "help": f.metadata.get("help", ""),
                    "choices": f.metadata.get("choices"),
                }
            )
        return out


def _fmt(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _type_name(cls: type, f: dataclasses.Field[Any]) -> str:
    hints = typing.get_type_hints(cls)
    t = hints.get(f.name, f.type)
    return getattr(t, "__name__", str(t))


def _check_option(pass_name: str, f: dataclasses.Field[Any], value: Any) -> None:
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        shown = _show_choices(choices)
        raise PipelineError(f"{pass_name}: option {f.name}={value!r} is not allowed; allowed: {shown}")
    check = f.metadata.get("check")
    if check is not None and not check(value):
        raise PipelineError(
            f"{pass_name}: option {f.name}={value!r} is not allowed; "
            f"allowed: {f.metadata.get('allowed') or 'see edgec passes'}"
        )


def _show_choices(choices: Sequence[Any]) -> str:
    if (
        len(choices) > 3
        and all(isinstance(c, int) for c in choices)
        and list(choices) == list(range(choices[0], choices[-1] + 1))
    ):
        return f"{choices[0]}..{choices[-1]}"
    return ", ".join(map(repr, choices))


# ------------------------------------------------------------------------------------------------ parsing
def did_you_mean(word: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    import difflib

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_ITEM = re.compile(r"\s*([a-z][a-z0-9\-]*)\s*(\{([^{}]*)\})?\s*(,|$)")


def _convert(pass_name: str, f: dataclasses.Field[Any], hint: Any, raw: str) -> Any:
    t = hint
    origin = typing.get_origin(t)
    if origin is typing.Union or (
        hasattr(typing, "UnionType") and isinstance(t, getattr(__import__("types"), "UnionType"))
    ):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        t = args[0] if args else str
    if t is typing.Any:
        return raw
    try:
        if t is bool:
            if raw.lower() in ("true", "1", "yes", "on"):
                return True
            if raw.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if t is int:
            return int(raw)
        if t is float:
            return float(raw)
        if t is str:
            return raw
        if typing.get_origin(t) is tuple or t is tuple:
            return tuple(x.strip() for x in raw.split(":" if ":" in raw else "/") if x.strip())
    except ValueError:
        raise PipelineError(
            f"{pass_name}: option {f.name}={raw!r} is not a valid {getattr(t, '__name__', t)}"
        ) from None
    return raw


def parse_pipeline(text: str, registry: Mapping[str, type[Pass]]) -> list[Pass]:
    """Parse ``name{opt=value,...},name2`` into pass instances, validating every option."""
    text = text.strip()
    if not text:
        return []
    passes: list[Pass] = []
    pos = 0
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if not m or m.end() == pos:
            raise PipelineError(
                f"cannot parse the pipeline at character {pos + 1}: {text[pos : pos + 30]!r}; "
                "expected name or name{option=value,...}"
            )
        name, body = m.group(1), m.group(3)
        pos = m.end()
        if name not in registry:
            known = ", ".join(sorted(registry))
            raise PipelineError(f"unknown pass {name!r}{did_you_mean(name, registry)}; known passes: {known}")
        cls = registry[name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for item in filter(None, (s.strip() for s in (body or "").split(","))):
            key, eq, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not eq:
                raise PipelineError(f"{name}: option {item!r} needs a value (option=value)")
            if key not in fields:
                allowed = ", ".join(fields) or "none"
                raise PipelineError(f"{name}: unknown option {key!r}{did_you_mean(key, fields)}; options: {allowed}")
            kwargs[key] = _convert(name, fields[key], hints.get(key, str), raw.strip())
        passes.append(cls(**kwargs))
    return passes


# ------------------------------------------------------------------------------------------------ manager
class Instrument:
    """Hooks around every pass (TVM's PassInstrument)."""

    def before_pass(self, p: Pass, model: Model) -> None:  # noqa: B027 - optional hook
        pass

    def after_pass(self, p: Pass, model: Model, changed: bool) -> None:  # noqa: B027
        pass


class TimingInstrument(Instrument):
    """Records wall time per pass (``--time-passes``)."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []
        self._t0 = 0.0

    def before_pass(self, p: Pass, model: Model) -> None:
        self._t0 = time.perf_counter()

    def after_pass(self, p: Pass, model: Model, changed: bool) -> None:
        self.times.append((p.describe(), time.perf_counter() - self._t0))

    def report(self) -> str:
        total = sum(t for _, t in self.times) or 1e-12
        lines = [f"{'pass':<40} {'seconds':>9} {'share':>6}"]
        lines += [f"{n:<40} {t:>9.4f} {100 * t / total:>5.1f}%" for n, t in self.times]
        lines.append(f"{'total':<40} {total:>9.4f}")
        return "\n".join(lines)


class DumpIRInstrument(Instrument):
    """Writes the IR text after every pass into ``directory`` (``--dump-ir DIR``)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.count = 0
        os.makedirs(directory, exist_ok=True)

    def _write(self, label: str, model: Model) -> None:
        from .text import print_model

        path = os.path.join(self.directory, f"{self.count:02d}-{label}.edgec.txt")
        with open(path, "w") as f:
            f.write(print_model(model, elide=True))
        self.count += 1

    def before_pass(self, p: Pass, model: Model) -> None:
        if self.count == 0:
            self._write("input", model)

    def after_pass(self, p: Pass, model: Model, changed: bool) -> None:
        self._write(p.name, model)


class PassManager:
    """Runs passes in order, verifying the IR after each one.

    Args:
        passes: the pipeline.
        verify_each: run the verifier after every pass (on by default; always on in tests).
        instruments: hooks called around every pass.
        progress: optional callback ``progress(index, total, pass)`` for progress bars.
    """

    def __init__(
        self,
        passes: Sequence[Pass],
        verify_each: bool = True,
        instruments: Sequence[Instrument] = (),
        progress: Callable[[int, int, Pass], None] | None = None,
    ):
        self.passes = list(passes)
        self.verify_each = verify_each
        self.instruments = list(instruments)
        self.progress = progress

    def run(self, model: Model, ctx: PassContext | None = None) -> Model:
        ctx = ctx or PassContext()
        done: list[str] = []
        for k, p in enumerate(self.passes):
            if p.lossy and ctx.float_model is None and any(q.needs_float_model for q in self.passes[k + 1 :]):
                from .serde import copy

                ctx.float_model = copy(model)
            if self.progress:
                self.progress(k, len(self.passes), p)
            for ins in self.instruments:
                ins.before_pass(p, model)
            try:
                p.requires(model, ctx)
                changed = p.run(model, ctx)
                p.ensures(model, ctx)
                if self.verify_each:
                    verify(model)
            except VerificationError as e:
                raise PassError(p.describe(), done, RuntimeError(f"left invalid IR: {e}")) from e
            except PipelineError:
                raise
            except Exception as e:  # noqa: BLE001 - wrapped with context, original chained
                raise PassError(p.describe(), done, e) from e
            if changed:
                ctx.invalidate(p.preserves)
            for ins in self.instruments:
                ins.after_pass(p, model, bool(changed))
            done.append(p.describe())
        return model
