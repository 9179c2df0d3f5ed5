"""edgec's graph IR (installed as ``edgec.ir``).

Public API: the core classes, dtypes, quantization and sparsity annotations, the verifier, the text form,
file save/load, ONNX conversion, the reference executor and the pass infrastructure.
"""

from .core import Graph, IRError, Model, Node, Usage, Value
from .dtypes import DType, code_dtype, code_range
from .executor import ExecutionError, ReferenceExecutor, random_inputs
from .nxview import to_networkx
from .onnx_io import UnsupportedModelError, from_onnx, infer_shapes, load_onnx, to_onnx
from .schemes import SCHEMES, Scheme
from .serde import FormatError, load, save
from .tensor import ActivationQuant, QuantizedTensor, Sparsity, Tensor
from .text import ParseError, parse_model, print_model
from .verifier import VerificationError, verify

__all__ = [
    "ActivationQuant",
    "DType",
    "ExecutionError",
    "FormatError",
    "Graph",
    "IRError",
    "Model",
    "Node",
    "ParseError",
    "QuantizedTensor",
    "ReferenceExecutor",
    "SCHEMES",
    "Scheme",
    "Sparsity",
    "Tensor",
    "UnsupportedModelError",
    "Usage",
    "Value",
    "VerificationError",
    "code_dtype",
    "code_range",
    "from_onnx",
    "infer_shapes",
    "load",
    "load_onnx",
    "parse_model",
    "print_model",
    "random_inputs",
    "save",
    "to_networkx",
    "to_onnx",
    "verify",
]
