"""What TensorRT's ONNX parser takes: its documented operator matrix and restrictions, as data and checks.

Transcribed from onnx-tensorrt's ``docs/operators.md`` of the **TensorRT 10.1 GA** release (onnx/onnx-tensorrt
commit 96e78110, June 2024; the page itself is headed "TensorRT 10.0"), with a few restrictions its importer
(``onnxOpImporters.cpp`` of the same commit) asserts but the page does not state (Clip bounds must be
initializers on the float path; GRU / RNN, like LSTM, read no ``layout`` attribute). Every op marked ``Y`` there is passed through unchanged, except:

* ``If`` / ``Loop`` / ``Scan``: control flow with subgraphs, which edgec's IR does not carry;
* ``ImageScaler``, ``ParametricSoftplus``, ``ScaledTanh`` (experimental ops no longer in ai.onnx), ``Scatter`` and
  ``Upsample`` (deprecated since opsets 11 / 10): the target writes opset 21, where they do not exist;
* ``Constant``: edgec's importer turns Constants into initializers.

Types: the "Supported Types" column per op (BF16 left out: onnxruntime, which runs the artifact here, has
almost no bfloat16 kernels, so it could not be checked; FP8 has no IR dtype). DOUBLE is refused although the page
lists it: TensorRT casts it down to float ("limited support"), which is not exact. INT8 / INT4 are TensorRT's
quantized types (only through Q/DQ) and UINT8 only a network input or output type (only Cast takes it).
"""

from __future__ import annotations

import onnx

from ...ir import Model, Node, Value

TENSORRT_VERSION = "10.1 GA"

_F = frozenset({"f32", "f16"})
_FI = _F | {"i32", "i64"}
_ALL = _FI | {"bool"}
_B = frozenset({"bool"})

# op -> the element types its data input(s) may have (the page's "Supported Types", BF16 / FP8 left out)
OP_DTYPES: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        (
            "Abs",
            "Add",
            "ArgMax",
            "ArgMin",
            "DepthToSpace",
            "Div",
            "Equal",
            "Greater",
            "GreaterOrEqual",
            "IsNaN",
            "Less",
            "LessOrEqual",
            "Max",
            "Mean",
            "Min",
            "Mod",
            "Mul",
            "Neg",
            "Pad",
            "Range",
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceProd",
            "ReduceSum",
            "ReduceSumSquare",
            "Relu",
            "ScatterElements",
            "ScatterND",
            "Shrink",
            "Sign",
            "SpaceToDepth",
            "Sub",
            "Sum",
            "TopK",
        ),
        _FI,
    ),
    **dict.fromkeys(
        (
            "Acos",
            "Acosh",
            "Asin",
            "Asinh",
            "Atan",
            "Atanh",
            "AveragePool",
            "BatchNormalization",
            "Ceil",
            "Celu",
            "Clip",
            "Conv",
            "ConvTranspose",
            "Cos",
            "Cosh",
            "CumSum",
            "DeformConv",
            "Dropout",
            "Einsum",
            "Elu",
            "Erf",
            "Exp",
            "Floor",
            "Gemm",
            "GlobalAveragePool",
            "GlobalLpPool",
            "GlobalMaxPool",
            "GridSample",
            "GroupNormalization",
            "GRU",
            "HardSigmoid",
            "HardSwish",
            "Hardmax",
            "InstanceNormalization",
            "IsInf",
            "LayerNormalization",
            "LeakyRelu",
            "Log",
            "LogSoftmax",
            "LRN",
            "LSTM",
            "LpNormalization",
            "LpPool",
            "MatMul",
            "MaxPool",
            "MeanVarianceNormalization",
            "Mish",
            "NonMaxSuppression",
            "NonZero",
            "Pow",
            "PRelu",
            "QuantizeLinear",
            "RandomNormal",
            "RandomNormalLike",
            "RandomUniform",
            "RandomUniformLike",
            "Reciprocal",
            "Resize",
            "RNN",
            "RoiAlign",
            "Round",
            "Selu",
            "Sigmoid",
            "Sin",
            "Sinh",
            "Softmax",
            "Softplus",
            "Softsign",
            "Sqrt",
            "Tan",
            "Tanh",
            "ThresholdedRelu",
        ),
        _F,
    ),
    **dict.fromkeys(("And", "Not", "Or", "Xor"), _B),
    **dict.fromkeys(("Cast", "CastLike"), _ALL | {"u8"}),
    **dict.fromkeys(
        (
            "Concat",
            "ConstantOfShape",
            "Expand",
            "EyeLike",
            "Flatten",
            "Gather",
            "GatherElements",
            "GatherND",
            "Identity",
            "OneHot",
            "Reshape",
            "ReverseSequence",
            "Shape",
            "Size",
            "Slice",
            "Split",
            "Squeeze",
            "Tile",
            "Transpose",
            "Trilu",
            "Unsqueeze",
            "Where",
        ),
        _ALL,
    ),
    "DequantizeLinear": frozenset({"i8", "i4"}),
    "Gelu": _FI | {"i8"},
}
ONNX_OPS = frozenset(OP_DTYPES)

# Which input (or output, "o0") carries the type the matrix lists, where it is not input 0; every other input the
# schema types with the same type parameter is checked too (variadic Concat / Sum / Max, Where's X and Y, ...).
_TYPED_AT: dict[str, tuple] = {
    "Where": (1,),
    "OneHot": (2,),
    "ConstantOfShape": ("o0",),
    "RandomNormal": ("o0",),
    "RandomUniform": ("o0",),
    "Cast": (0, "o0"),
    "CastLike": (0, 1),
    "EyeLike": (0, "o0"),
    "RandomNormalLike": (0, "o0"),
    "RandomUniformLike": (0, "o0"),
    "QuantizeLinear": (0,),
    "DequantizeLinear": (0,),
}

# op -> the input position of a parameter the parser needs as an initializer (not computed at run time); TopK's K
# may be a run-time tensor (the importer feeds it to the layer), its bound is checked where it is known
_CONST_INPUTS: dict[str, tuple[tuple[int, str], ...]] = {
    **dict.fromkeys(
        (
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceProd",
            "ReduceSum",
            "ReduceSumSquare",
            "Squeeze",
            "Unsqueeze",
        ),
        ((1, "axes"),),
    ),
    "Pad": ((3, "axes"),),
    "Slice": ((3, "axes"),),
    "CumSum": ((1, "axis"),),
    "OneHot": ((1, "depth"),),
    "Dropout": ((2, "training_mode"),),
}
_RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
TOPK_MAX_K = 3840


def _where(n: Node, model: Model) -> str:
    return f"node {n.name!r} ({n.op_type}, opset {model.opset_imports.get(n.domain, model.opset)})"


def _used(model: Model, v: Value | None) -> bool:
    return v is not None and (bool(v.uses) or any(o is v for o in model.graph.outputs))


def _const_array(v: Value | None):
    import numpy as np

    return None if v is None or not v.is_const else np.asarray(v.numpy())


def _typed_positions(n: Node, opset: int) -> list:
    """Input positions (and "o0") whose element type the matrix constrains."""
    ref = _TYPED_AT.get(n.op_type, (0,))
    try:
        schema = onnx.defs.get_schema(n.op_type, opset, "")
    except onnx.defs.SchemaError:
        return list(ref)
    formal = [f.type_str for f in schema.inputs]
    out = list(ref)
    for r in ref:
        if isinstance(r, int) and r < len(formal):
            last = len(formal) - 1
            out += [k for k in range(len(n.inputs)) if k not in out and formal[min(k, last)] == formal[r]]
    return out


def problems(model: Model) -> list[str]:
    """Every node that TensorRT's ONNX parser documents it cannot take (type, attribute, constant-input and
    output restrictions), one message each naming the node, the op and what is unsupported."""
    out: list[str] = []
    for n in model.graph:
        out += node_problems(n, model)
    return out


def node_problems(n: Node, model: Model) -> list[str]:
    """What TensorRT's parser documents it cannot take about the node ``n`` of ``model``."""
    from ...ir import DType

    out: list[str] = []
    if not n.domain and n.op_type in OP_DTYPES:
        where = _where(n, model)
        opset = model.opset_imports.get("", model.opset)
        allowed = OP_DTYPES[n.op_type]
        for pos in _typed_positions(n, opset):
            v = n.outputs[0] if pos == "o0" else (n.inputs[pos] if pos < len(n.inputs) else None)
            if v is not None and v.dtype is not None and v.dtype.short not in allowed:
                what = "output" if pos == "o0" else f"input {pos} ({v.name!r})"
                out.append(
                    f"{where}: TensorRT {TENSORRT_VERSION} takes {n.op_type} on "
                    f"{', '.join(sorted(allowed))}, not {v.dtype.short} ({what})"
                )
                break
        if n.op_type == "Cast":
            try:
                to = DType.from_onnx(int(n.attr("to"))).short
            except (ValueError, TypeError):
                to = onnx.TensorProto.DataType.Name(int(n.attr("to")))
            if to not in allowed:
                out.append(
                    f"{where}: TensorRT {TENSORRT_VERSION} does not cast to {to} "
                    f"(Cast takes {', '.join(sorted(allowed))})"
                )
        for pos, name in _CONST_INPUTS.get(n.op_type, ()):
            v = n.inputs[pos] if pos < len(n.inputs) else None
            if v is not None and not v.is_const:
                out.append(
                    f"{where}: TensorRT needs {n.op_type}'s {name!r} input as an initializer; "
                    f"{v.name!r} is computed at run time"
                )
        out += [f"{where}: {p}" for p in _node_rules(n, model)]
    return out


def _node_rules(n: Node, model: Model) -> list[str]:
    """The page's per-op restrictions (and the importer's, where noted)."""
    import numpy as np

    op, p = n.op_type, []
    x = n.inputs[0] if n.inputs else None
    rank = x.rank if x is not None else None
    dil = n.attr("dilations")
    if op in ("AveragePool", "MaxPool", "LpPool") and dil is not None and any(int(d) != 1 for d in dil):
        p.append(f"TensorRT does not take {op} dilations {list(dil)} (only all ones)")
    if op in ("AveragePool", "MaxPool") and rank is not None and rank not in (4, 5):
        p.append(f"TensorRT pools in 2D or 3D only; the input has {rank - 2} spatial dims")
    if op == "MaxPool" and len(n.outputs) > 1 and _used(model, n.outputs[1]):
        p.append("TensorRT does not produce MaxPool's Indices output")
    if op == "LayerNormalization" and any(_used(model, o) for o in n.outputs[1:]):
        p.append("TensorRT produces only LayerNormalization's first output Y (not Mean / InvStdDev)")
    if op == "Dropout":
        tm = _const_array(n.inputs[2] if len(n.inputs) > 2 else None)
        if tm is not None and bool(tm.reshape(-1)[0]):
            p.append("TensorRT does not run Dropout in training mode (training_mode must be False)")
        if len(n.outputs) > 1 and _used(model, n.outputs[1]):
            p.append("TensorRT does not produce Dropout's mask output")
    if op == "EyeLike" and (x is None or x.static_shape is None):
        p.append("TensorRT needs EyeLike's input with static dimensions")
    if op == "Hardmax" and x is not None and x.shape is not None:
        ax = int(n.attr("axis", -1))
        if not isinstance(x.shape[ax], int):
            p.append(f"TensorRT needs Hardmax's axis dimension ({ax}) known at build time")
    if op == "GridSample" and rank is not None and rank != 4:
        p.append(f"TensorRT takes GridSample on 4-D inputs only, not {rank}-D")
    if op == "DeformConv":
        if rank is not None and rank not in (3, 4):
            p.append(f"TensorRT takes DeformConv with 1 or 2 spatial dims, not {rank - 2}")
        pads = list(n.attr("pads") or [])
        if pads and pads[: len(pads) // 2] != pads[len(pads) // 2 :]:
            p.append(f"TensorRT needs DeformConv's begin and end pads equal, not {pads}")
    if op in ("GRU", "RNN", "LSTM") and n.attr("direction", "forward") == "bidirectional":
        acts = list(n.attr("activations") or [])
        if acts and acts[: len(acts) // 2] != acts[len(acts) // 2 :]:
            p.append(f"TensorRT needs the same activations for both directions of a bidirectional {op}, not {acts}")
    if op == "LSTM" and int(n.attr("input_forget", 0)):
        p.append("TensorRT does not take LSTM input_forget=1")
    if op in ("GRU", "RNN", "LSTM") and int(n.attr("layout", 0)):
        # the page states it for LSTM; the importer reads no layout attribute for any of the three
        p.append(f"TensorRT does not take {op} layout=1 (batch-major)")
    if op == "Resize":
        coord = n.attr("coordinate_transformation_mode", "half_pixel")
        if coord not in _RESIZE_COORDS:
            p.append(
                f"TensorRT does not take Resize coordinate_transformation_mode={coord!r} "
                f"(only {', '.join(_RESIZE_COORDS)})"
            )
        mode = n.attr("mode", "nearest")
        if mode not in ("nearest", "linear"):
            p.append(f"TensorRT does not take Resize mode={mode!r} (only nearest, linear)")
        if int(n.attr("antialias", 0)):
            p.append("TensorRT does not take Resize antialias=1")
        xs, ys = (n.inputs[0].static_shape if n.inputs and n.inputs[0] is not None else None), n.outputs[0].static_shape
        if (
            mode == "linear"
            and coord == "align_corners"
            and xs is not None
            and ys is not None
            and any(b < a for a, b in zip(xs, ys))
        ):
            # onnxruntime, which runs this artifact here, computes it wrongly (test_resize_downsample_scales_linear_
            # align_corners: 4.0 where ONNX says 3.1429): unverifiable, so refused
            p.append(
                "linear Resize with align_corners that shrinks an axis cannot be verified here (onnxruntime, "
                "the runtime that checks this artifact, computes it wrongly)"
            )
        policy = n.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            p.append(f"TensorRT does not take Resize keep_aspect_ratio_policy={policy!r} (only stretch)")
        scales = n.inputs[2] if len(n.inputs) > 2 else None
        axes = n.attr("axes")
        if (
            scales is not None
            and axes is not None
            and rank is not None
            and [int(a) % rank for a in axes] != list(range(rank))
        ):
            p.append(f"TensorRT needs Resize's axes to be 0..{rank - 1} when scales is given, not {list(axes)}")
    if op == "ScatterND" and n.attr("reduction", "none") != "none":
        p.append(f"TensorRT does not take ScatterND reduction={n.attr('reduction')!r}")
    if op == "TopK":
        if not int(n.attr("sorted", 1)):
            p.append("TensorRT does not take TopK sorted=0")
        k = _const_array(n.inputs[1] if len(n.inputs) > 1 else None)
        if k is not None and int(k.reshape(-1)[0]) >= TOPK_MAX_K:
            p.append(f"TensorRT takes TopK with K below {TOPK_MAX_K}, not {int(k.reshape(-1)[0])}")
    if op == "Clip" and x is not None and x.dtype is not None and x.dtype.is_float:
        for k, name in ((1, "min"), (2, "max")):  # onnxOpImporters.cpp asserts this on the float path
            v = n.inputs[k] if len(n.inputs) > k else None
            if v is not None and not v.is_const:
                p.append(f"TensorRT needs Clip's {name!r} as an initializer; {v.name!r} is computed at run time")
    if op in ("QuantizeLinear", "DequantizeLinear"):
        zp = n.inputs[2] if len(n.inputs) > 2 else None
        arr = _const_array(zp)
        if zp is not None and (arr is None or np.any(arr.astype(np.float64) != 0)):
            p.append(f"TensorRT needs {op}'s zero point to be a constant zero")
        if op == "QuantizeLinear":
            y = n.outputs[0]
            if y.dtype is not None and y.dtype.short not in ("i8", "i4"):
                p.append(f"TensorRT quantizes to int8 / int4 (and fp8) only, not {y.dtype.short}")
    if op in ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike") and n.attr("seed") is not None:
        p.append("TensorRT ignores the 'seed' attribute, so the seeded sequence cannot be reproduced")
    return p
