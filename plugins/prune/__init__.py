"""Built-in pruning passes: unstructured / N:M (prune) and structured (prune-channels, prune-heads)."""

from ...hookspecs import hookimpl
from .prune import Prune
from .prune_heads import PruneHeads
from .prune_channels import PruneChannels

PASSES = (Prune, PruneChannels, PruneHeads)


@hookimpl
def edgec_register_passes(registry):
    for p in PASSES:
        registry.register(p)
