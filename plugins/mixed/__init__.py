"""Built-in sensitivity analysis and mixed-precision search (the property checks it keeps are plugins/checks)."""

from ...hookspecs import hookimpl
from .mixed_precision import MixedPrecision

PASSES = (MixedPrecision,)


@hookimpl
def edgec_register_passes(registry):
    for p in PASSES:
        registry.register(p)
