"""Language models: tokenizers, perplexity evaluation, generation checks (their frontends are in plugins/frontends)."""

from ...hookspecs import hookimpl
from .checks import CHECKS


@hookimpl
def edgec_register_checks(registry):
    for c in CHECKS:
        registry.register(c)
