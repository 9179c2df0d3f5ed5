"""Built-in frontends: ONNX, PyTorch (torch.export programs), edgec's own IR files, and language models from GGUF
files and Hugging Face folders (both built by decoder.py into edgec's decoder IR)."""

from ...hookspecs import hookimpl
from .edgec_ir import EdgecIRFrontend
from .gguf import GGUFFrontend
from .hf import HFFrontend
from .onnx import OnnxFrontend
from .torch import TorchFrontend


@hookimpl
def edgec_register_frontends(registry):
    registry.register(OnnxFrontend)
    registry.register(TorchFrontend)
    registry.register(EdgecIRFrontend)
    registry.register(GGUFFrontend)
    registry.register(HFFrontend)
