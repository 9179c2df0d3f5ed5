"""Language models: GGUF and Hugging Face frontends, tokenizers, perplexity evaluation, generation checks."""

from ...hookspecs import hookimpl
from .checks import CHECKS
from .frontends import GGUFFrontend, HFFrontend


@hookimpl
def edgec_register_frontends(registry):
    registry.register(GGUFFrontend)
    registry.register(HFFrontend)


@hookimpl
def edgec_register_checks(registry):
    for c in CHECKS:
        registry.register(c)
