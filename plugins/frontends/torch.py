"""PyTorch frontend: ``torch.export`` programs (``.pt2`` files) and in-memory modules.

The program is lowered through torch's own ONNX exporter (the dynamo-based one, which consumes
``torch.export`` graphs), then imported like any ONNX model.

``.pt2`` files are read with ``torch.export.load``, which by itself unpickles (``weights_only=False``)
pickled weights, sample inputs and custom objects: loading a hostile file could run code. edgec therefore
refuses archives that carry pickled Python objects (custom/opaque constants) and loads the rest with
``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``, so every tensor payload goes through torch's weights-only unpickler,
which builds tensors and nothing else.
"""

from __future__ import annotations

import os
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
        _refuse_pickled_objects(path)
        old = os.environ.get(_FORCE)
        os.environ[_FORCE] = "1"
        try:
            ep = torch.export.load(path)
        except Exception as e:  # noqa: BLE001
            raise BadInputError(f"{path}: not a readable torch.export program, or one whose payloads are not plain "
                                f"tensors ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        finally:
            if old is None:
                os.environ.pop(_FORCE, None)
            else:
                os.environ[_FORCE] = old
        return from_exported_program(ep, label=path)


_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


def _refuse_pickled_objects(path: str) -> None:
    """A .pt2 archive whose constants include pickled Python objects is refused before torch reads it."""
    import zipfile

    from torch.export.pt2_archive.constants import CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise BadInputError(f"{path}: not a readable torch.export program ({type(e).__name__}: {e})") from None
    bad = [n for n in names if os.path.basename(n).startswith((CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX))]
    if bad:
        raise BadInputError(f"{path}: the program carries pickled Python objects ({', '.join(bad[:3])}); edgec never "
                            "unpickles model files (it could run code). Export without custom objects.")


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
