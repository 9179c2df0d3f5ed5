"""Built-in pruning passes: unstructured / N:M (prune) and structured (prune-channels)."""

from ...hookspecs import hookimpl
from .prune import Prune
from .structured import PruneChannels

PASSES = (Prune, PruneChannels)


@hookimpl
def edgec_register_passes(registry):
    for p in PASSES:
        registry.register(p)
