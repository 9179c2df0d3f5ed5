"""Built-in pruning passes."""

from ...hookspecs import hookimpl
from .prune import Prune

PASSES = (Prune,)


@hookimpl
def edgec_register_passes(registry):
    for p in PASSES:
        registry.register(p)
