"""Built-in frontends: ONNX, PyTorch (torch.export programs) and edgec's own IR files."""

from ...hookspecs import hookimpl
from .edgec_ir import EdgecIRFrontend
from .onnx import OnnxFrontend
from .torch import TorchFrontend


@hookimpl
def edgec_register_frontends(registry):
    registry.register(OnnxFrontend)
    registry.register(TorchFrontend)
    registry.register(EdgecIRFrontend)
