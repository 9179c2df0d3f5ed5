"""Built-in quantization-aware fine-tuning (``qat``): distillation from the float model into the quantized grid."""

from ...hookspecs import hookimpl
from .qat import QAT

PASSES = (QAT,)


@hookimpl
def edgec_register_passes(registry):
    for p in PASSES:
        registry.register(p)
