"""ONNX frontend: opset 13 and later, external data files, shape inference on import."""

from __future__ import annotations

import os

import onnx

from ...errors import BadInputError, UnsupportedError
from ...frontend import Frontend
from ...ir import Model, UnsupportedModelError, from_onnx, infer_shapes
from ...ir.core import IRError
from ...ir.limits import check_generators, max_tensor_bytes

MIN_OPSET = 13


class OnnxFrontend(Frontend):
    name = "onnx"
    summary = "ONNX models (opset >= 13), with external data files"
    suffixes = (".onnx",)

    def load(self, path: str) -> Model:
        from ...ir.budget import over_budget
        msg = over_budget("reading the model file", {"file": os.path.getsize(path)})
        if msg:  # the protobuf is parsed whole: its inline weights are in memory before anything else is known
            raise BadInputError(f"{path}: {msg}")
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends
            raise BadInputError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
        return import_proto(proto, os.path.dirname(os.path.abspath(path)), path)


def import_proto(proto: onnx.ModelProto, base_dir: str | None, label: str = "<model>") -> Model:
    """Import an in-memory ONNX model (used by the PyTorch frontend too)."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise BadInputError(f"{label}: the model imports no default-domain opset")
    if opset < MIN_OPSET:
        raise UnsupportedError(f"{label}: opset {opset} is older than the minimum {MIN_OPSET}; convert it with "
                               "onnx.version_converter.convert_version(model, 17)")
    try:
        model = from_onnx(proto, base_dir)
        huge = check_generators(model)
        if huge:  # before shape inference, which would materialize them
            raise BadInputError(f"{label}: the model asks for tensors beyond the {max_tensor_bytes() / 2**30:.3g} GiB "
                                "limit (EDGEC_MAX_TENSOR_BYTES):\n" + "\n".join(f"  - {p}" for p in huge[:20]))
        infer_shapes(model)
    except UnsupportedModelError as e:
        raise UnsupportedError(f"{label}: the model cannot be imported", e.problems) from None
    except UnicodeError as e:  # protobuf keeps invalid UTF-8 in names until something re-encodes them
        raise BadInputError(f"{label}: a name or string in the model is not valid UTF-8 ({e})") from None
    except (ValueError, IRError) as e:
        raise BadInputError(f"{label}: {e}") from None
    model.metadata.setdefault("source_format", "onnx")
    return model
