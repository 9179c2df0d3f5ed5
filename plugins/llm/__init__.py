"""Language models: GGUF and Hugging Face frontends, tokenizers, perplexity evaluation."""

from ...hookspecs import hookimpl
from .frontends import GGUFFrontend, HFFrontend


@hookimpl
def edgec_register_frontends(registry):
    registry.register(GGUFFrontend)
    registry.register(HFFrontend)
