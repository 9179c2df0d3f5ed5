"""PyTorch frontend: ``torch.export`` programs (``.pt2`` files) and in-memory modules.

The program is lowered through torch's own ONNX exporter (the dynamo-based one, which consumes
``torch.export`` graphs), then imported like any ONNX model. ``.pt2`` files are read with
``torch.export.load``, which does not unpickle arbitrary objects.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from ...errors import BadInputError, UnsupportedError
from ...frontend import Frontend
from ...ir import Model
from .onnx import import_proto

OPSET = 18


class TorchFrontend(Frontend):
    name = "torch"
    summary = "PyTorch programs saved with torch.export.save (.pt2)"
    suffixes = (".pt2",)

    def load(self, path: str) -> Model:
        torch = _torch()
        try:
            ep = torch.export.load(path)
        except Exception as e:  # noqa: BLE001
            raise BadInputError(f"{path}: not a readable torch.export program ({type(e).__name__}: {e})") from None
        return from_exported_program(ep, label=path)


def _torch():
    try:
        import torch
    except ImportError:
        raise UnsupportedError("the PyTorch frontend needs torch: pip install 'edgec[torch]'") from None
    return torch


def from_exported_program(ep, label: str = "<torch program>") -> Model:
    """Import a ``torch.export.ExportedProgram``."""
    torch = _torch()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(ep, (), dynamo=True, opset_version=OPSET, verbose=False,
                                     optimize=True, external_data=False)
            proto = prog.model_proto
    except Exception as e:  # noqa: BLE001
        raise UnsupportedError(f"{label}: torch's ONNX exporter could not lower the program: "
                               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    model = import_proto(proto, None, label)
    model.metadata["source_format"] = "torch"
    return model


def from_module(module, example_inputs: Sequence, input_names: Sequence[str] | None = None) -> Model:
    """Import an ``nn.Module`` by exporting it with ``torch.export`` on ``example_inputs``."""
    torch = _torch()
    module = module.eval()
    try:
        ep = torch.export.export(module, tuple(example_inputs))
    except Exception as e:  # noqa: BLE001
        raise UnsupportedError(f"torch.export failed on {type(module).__name__}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}") from None
    model = from_exported_program(ep, label=type(module).__name__)
    if input_names:
        for v, name in zip(model.graph.inputs, input_names):
            model.graph.rename(v, name)
    return model
