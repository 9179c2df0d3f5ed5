"""Built-in quantization passes: weight quantization, vector quantization, activation calibration, SmoothQuant."""

from ...hookspecs import hookimpl
from .quantize_activations import FloatActivations, QuantizeActivations
from .smoothquant import SmoothQuant
from .quantize import Quantize
from .vq import VectorQuantize

PASSES = (Quantize, VectorQuantize, QuantizeActivations, FloatActivations, SmoothQuant)


@hookimpl
def edgec_register_passes(registry):
    for p in PASSES:
        registry.register(p)
