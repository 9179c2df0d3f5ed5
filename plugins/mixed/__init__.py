"""Built-in sensitivity analysis, mixed-precision search and property checks."""

from ...checks import BUILTIN as CHECKS
from ...hookspecs import hookimpl
from .mixed_precision import MixedPrecision

PASSES = (MixedPrecision,)


@hookimpl
def edgec_register_passes(registry):
    for p in PASSES:
        registry.register(p)


@hookimpl
def edgec_register_checks(registry):
    for c in CHECKS:
        registry.register(c)
