"""Property constraints: checks on a model's behaviour that a search must not break.

A check compares the outputs of a candidate model with the float model's on the same inputs and says
whether the candidate keeps the property. Plugins register check classes with the ``edgec_register_checks``
hook; a search names them as ``name:argument`` (``top1:0.99``), several separated by ``;``::

    @edgec.hookimpl
    def edgec_register_checks(registry):
        registry.register(MyCheck)

    class MyCheck(edgec.checks.Check):
        name = "my-check"
        summary = "what it guarantees"

        def __init__(self, arg: str): ...
        def evaluate(self, reference, candidate) -> CheckResult: ...

``reference`` and ``candidate`` are lists (one per input sample) of lists of output arrays.

A check that needs the model itself (it generates text, say) sets ``needs_model = True`` and implements
``prepare(reference_model)`` (called once with the float model) and ``evaluate_model(candidate_model)``
instead; the language-model plugin's ``json:`` and ``contains:`` checks are such checks. ``edgec checks``
lists every registered check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .errors import UsageError


@dataclasses.dataclass(frozen=True)
class CheckResult:
    passed: bool
    value: float
    detail: str


class Check:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False  # True: prepare() / evaluate_model() on models, not outputs

    def __init__(self, arg: str):
        self.arg = arg

    def evaluate(
        self, reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]]
    ) -> CheckResult:
        raise NotImplementedError

    def prepare(self, reference) -> None:
        """Model-level checks: record what the float model does (called once per search)."""

    def evaluate_model(self, candidate) -> CheckResult:
        raise NotImplementedError

    def judge(self, candidate, reference_outputs, candidate_outputs) -> CheckResult:
        """Evaluate on whichever the check needs: the candidate model or the two models' outputs."""
        if self.needs_model:
            return self.evaluate_model(candidate)
        return self.evaluate(reference_outputs, candidate_outputs)

    def describe(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name


def outputs_on(model, samples: Sequence[dict], names: Sequence[str], threads: int = 0) -> list[list[np.ndarray]]:
    """The outputs ``names`` of ``model`` on each sample (edgec's reference executor, as float64): the lists a
    check's ``evaluate`` compares, for the float model and for a candidate alike."""
    from .ir import ReferenceExecutor

    ex = ReferenceExecutor(model, threads=threads)
    return [[np.asarray(ex.run(s)[n], np.float64) for n in names] for s in samples]


def parse_checks(text: str, registry) -> list[Check]:
    """``name:arg;name2:arg2`` -> check instances; unknown names are a usage error listing the known ones."""
    out = []
    for item in filter(None, (s.strip() for s in (text or "").split(";"))):
        name, _, arg = item.partition(":")
        if name not in registry:
            raise UsageError(f"unknown check {name!r}; known checks: {', '.join(sorted(registry)) or 'none'}")
        out.append(registry[name](arg))
    return out
