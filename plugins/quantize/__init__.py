"""Built-in quantization passes: weight quantization, activation calibration, SmoothQuant."""

from ...hookspecs import hookimpl
from .activations import QuantizeActivations, SmoothQuant
from .quantize import Quantize

PASSES = (Quantize, QuantizeActivations, SmoothQuant)


@hookimpl
def edgec_register_passes(registry):
    for p in PASSES:
        registry.register(p)
