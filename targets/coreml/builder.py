"""edgec IR -> a MIL program (coremltools' MIL builder), fp16 (default) or fp32 compute with fp32 I/O.

Float activations are of the compute type throughout (``precision``: fp16, what the Neural Engine runs, or
fp32, Core ML's CPU / GPU precision), except that in fp16 the mean square of RMSNorm is reduced in fp32 (a
decoder's hidden states squared and summed overflow fp16). Integer inputs (token ids, masks) enter as int32,
the one integer type Core ML inputs have.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Literal, NoReturn

import numpy as np

from ...errors import UnsupportedError
from ...ir import Model, Node, QuantizedTensor, Value
from ...target import Lowerings
from .weights import Encoded, WeightEncoder

LOWERINGS = Lowerings()
lowering = LOWERINGS.register

# Opsets by deployment target: macOS15 shares iOS18's opset.
DEPLOYMENTS = ("ios16", "ios17", "ios18", "macos15")


def ct_modules():
    try:
        import coremltools as ct
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.mil import types
    except ImportError:
        raise UnsupportedError("the coreml target needs coremltools: pip install 'coremltools>=9'") from None
    return ct, mb, types


# The float compute type of the program being built ("fp16" or "fp32"): set by MILBuilder.lower for the
# lowerings, which read it through np_compute / mil_dtype / float_type.
_FLOAT: contextvars.ContextVar[str] = contextvars.ContextVar("edgec_coreml_float", default="fp16")
PRECISIONS = ("fp16", "fp32")


def float_type() -> str:
    """The MIL float compute type of the program being built: "fp16" or "fp32"."""
    return _FLOAT.get()


@contextlib.contextmanager
def compute_precision(precision: str):
    token = _FLOAT.set(precision)
    try:
        yield
    finally:
        _FLOAT.reset(token)


def opset(deployment: str):
    ct, _, _ = ct_modules()
    return {"ios16": ct.target.iOS16, "ios17": ct.target.iOS17, "ios18": ct.target.iOS18, "macos15": ct.target.macOS15}[
        deployment
    ]


def mil_name(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else "v_" + out


class MILBuilder:
    """Lowers one model inside an ``mb.program`` body."""

    def __init__(self, model: Model, deployment: str, precision: str = "fp16"):
        self.ct, self.mb, self.types = ct_modules()
        self.model = model
        self.deployment = deployment
        self.precision = precision
        self.ios18 = deployment in ("ios18", "macos15")
        self.weights = WeightEncoder(self.mb, self.types, self.ios18, fp32=precision == "fp32")
        self.env: dict[int, object] = {}
        self.encoded: dict[str, Encoded] = {}  # weight name -> how it was stored

    def get(self, v: Value):
        if id(v) not in self.env:
            c = v.const
            if c is None:
                raise KeyError(v.name)
            assert v.dtype is not None and v.rank is not None  # a constant takes its data's dtype and shape
            if isinstance(c, QuantizedTensor) or v.dtype.is_float:
                enc = self.weights.encode(v, mil_name(v.name) + "_w")
                if enc.op is not None or v.rank >= 2:
                    self.encoded[v.name] = enc
                self.env[id(v)] = enc.var
            else:
                a = np.asarray(c.numpy())
                self.env[id(v)] = a.astype(np.int32) if a.dtype.kind in "iu" else a
        return self.env[id(v)]

    def scalar(self, x: float):
        return np.float32(x) if self.precision == "fp32" else np.float16(x)

    def _wrap(self, n: Node, o: Value, y):
        assert o.dtype is not None  # every value the target lowers is typed
        nb = NARROW_INTS.get(o.dtype.short)
        if nb is None or n.op_type in _IN_RANGE or isinstance(y, np.ndarray):
            return y
        bits, signed = nb
        mb, half = self.mb, np.int32(1 << (bits - 1))
        if signed:
            return mb.sub(x=mb.mod(x=mb.add(x=y, y=half), y=np.int32(1 << bits)), y=half)
        return mb.mod(x=y, y=np.int32(1 << bits))

    def const(self, arr, like: Value) -> np.ndarray:
        """``arr`` as a MIL constant of ``like``'s compute type (fp16 or fp32 / int32 / bool)."""
        return np.asarray(arr).astype(np_compute(like))

    def lower(self, args):
        with compute_precision(self.precision):
            return self._lower(args)

    def _lower(self, args):
        mb = self.mb
        g = self.model.graph
        for v, a in zip(g.inputs, args):
            if v.rank == 0:  # Core ML inputs have rank >= 1: a scalar enters as [1]
                a = mb.squeeze(x=a)
            self.env[id(v)] = (
                mb.cast(x=a, dtype=float_type())
                if v.dtype.is_float
                else mb.cast(x=a, dtype="bool")
                if v.dtype.short == "bool"
                else a
            )
        for n in g:
            fn = LOWERINGS.get(n.qualified_op)
            if fn is None:
                raise UnsupportedError(f"node {n.name!r}: {n.qualified_op} is not supported by the coreml target")
            for o in n.outputs:
                shape = o.static_shape if o is not None else None
                if shape is not None and (len(shape) > 5 or 0 in shape):
                    raise UnsupportedError(
                        f"node {n.name!r} ({n.qualified_op}): output {o.name!r} of shape "
                        f"{list(shape)}: Core ML tensors have rank <= 5 and no empty axes"
                    )
            _wrap_ok(n)
            try:
                ys = fn(self, n)
            except UnsupportedError:
                raise
            except Exception as e:  # noqa: BLE001 - MIL's own type checks: a refusal naming the node, not a leak
                msg = " ".join(str(e).split())[:300]
                raise UnsupportedError(
                    f"node {n.name!r} ({n.qualified_op}): the coreml target cannot lower this "
                    f"variant ({type(e).__name__}: {msg})"
                ) from e
            ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
            for o, y in zip(n.outputs, ys):
                if o is not None:
                    self.env[id(o)] = self._wrap(n, o, y)
            missing = [o.name for o in n.outputs[len(ys) :] if o is not None and used(g, o)]
            if missing:
                raise UnsupportedError(
                    f"node {n.name!r} ({n.qualified_op}): the coreml target does not compute its output(s) {missing}"
                )
        outs = []
        for o in g.outputs:
            y = self.get(o)
            if o.rank == 0:  # Core ML outputs have rank >= 1: run_package restores the scalar
                y = mb.reshape(x=y, shape=[1])
            # Core ML outputs are fp32 or int32 (no bool, no int64): run_package restores the model's dtypes.
            outs.append(mb.cast(x=y, dtype="fp32" if o.dtype.is_float else "int32", name=mil_name(o.name)))
        return outs


# Narrow integers compute in int32 and wrap back into their range after every op that can leave it, so the
# result is the one ONNX's two's-complement arithmetic gives.
NARROW_INTS = {"i8": (8, True), "u8": (8, False), "i16": (16, True), "u16": (16, False)}
_IN_RANGE = frozenset(
    {
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Identity",
        "Concat",
        "Split",
        "Slice",
        "Gather",
        "GatherElements",
        "GatherND",
        "Tile",
        "Expand",
        "Where",
        "Max",
        "Min",
        "ReduceMax",
        "ReduceMin",
        "Clip",
        "TopK",
        "Dropout",
        "Pad",
        "DepthToSpace",
        "SpaceToDepth",
        "Relu",
        "Sign",
        "Shape",
        "Size",
        "ConstantOfShape",
        "Range",
        "OneHot",
        "ArgMax",
        "ArgMin",
        "QuantizeLinear",
        "BitwiseAnd",
        "BitwiseOr",
        "BitwiseXor",
    }
)
_OVERFLOW_INT32 = frozenset({"ReduceProd", "Pow", "ReduceSumSquare", "CumSum", "ReduceSum", "MatMul"})


def _wrap_ok(n: Node) -> None:
    """Refuse the ops whose narrow-integer result could overflow int32 before the wrap."""
    narrow = [
        v.dtype.short
        for v in list(n.inputs) + list(n.outputs)
        if v is not None and v.dtype is not None and v.dtype.short in NARROW_INTS
    ]
    if narrow and (n.op_type in _OVERFLOW_INT32 or (n.op_type == "Mul" and narrow[0] == "u16")):
        raise UnsupportedError(
            f"node {n.name!r} ({n.op_type}): {n.op_type} of {narrow[0]} is not "
            "supported by the coreml target (it computes narrow integers in int32)"
        )


def np_compute(v: Value):
    """The numpy type of ``v``'s MIL compute type: floats fp16 (or fp32), booleans bool, other integers int32."""
    assert v.dtype is not None  # every value the target lowers is typed
    if v.dtype.is_float:
        return np.float32 if float_type() == "fp32" else np.float16
    return np.bool_ if v.dtype.short == "bool" else np.int32


def mil_dtype(v: Value) -> str:
    assert v.dtype is not None  # every value the target lowers is typed
    return float_type() if v.dtype.is_float else ("bool" if v.dtype.short == "bool" else "int32")


def used(g, v: Value) -> bool:
    return bool(v.uses) or any(o is v for o in g.outputs)


def _static(n: Node, v: Value | None = None) -> list[int]:
    v = v if v is not None else n.outputs[0]
    if v.static_shape is None:
        raise UnsupportedError(
            f"node {n.name!r}: the coreml target needs static shapes (fix the input shapes with --input-shape)"
        )
    return list(v.static_shape)


def _ints(v: Value) -> list[int]:
    return [int(i) for i in np.asarray(v.numpy()).reshape(-1)]


# ---- CNN ops --------------------------------------------------------------------------------------------------
@lowering("Conv")
def _conv(b: MILBuilder, n: Node):
    shape = _static(n, n.inputs[0])
    k = len(shape) - 2
    if k not in (1, 2, 3):
        _refuse(n, f"Conv of rank {len(shape)}")
    strides, dil = list(n.attr("strides", [1] * k)), list(n.attr("dilations", [1] * k))
    kernel = _static(n, n.inputs[1])[2:]
    kw = {
        "x": b.get(n.arg(0)),
        "weight": b.get(n.arg(1)),
        "strides": strides,
        "dilations": dil,
        "groups": n.attr("group", 1),
        "pad_type": "custom",
        "pad": _conv_pads(n, shape[2:], kernel, strides, dil),
    }
    bias = _opt(n, 2)
    if bias is not None and bias.is_const:
        kw["bias"] = b.get(bias)
    y = b.mb.conv(**kw)
    if bias is not None and not bias.is_const:
        y = b.mb.add(x=y, y=b.mb.reshape(x=b.get(bias), shape=[-1] + [1] * k))
    return y


@lowering("edgec::Linear")
def _linear(b, n):
    x, w = b.get(n.inputs[0]), b.get(n.inputs[1])
    bias = b.get(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None else None
    if n.inputs[0].rank <= 3:
        return b.mb.linear(x=x, weight=w, **({"bias": bias} if bias is not None else {}))
    y = b.mb.matmul(x=x, y=w, transpose_y=True)
    return y if bias is None else b.mb.add(x=y, y=bias)


@lowering("MatMul")
def _matmul(b, n):
    mb = b.mb
    a, c = n.inputs
    x, y = b.get(a), b.get(c)
    if a.rank != 1 and c.rank != 1:
        return mb.matmul(x=x, y=y)
    # numpy's 1-d rules: a vector operand gains an axis, which the result drops
    if a.rank == 1:
        x = mb.expand_dims(x=x, axes=[0])
    if c.rank == 1:
        y = np.asarray(y)[:, None] if isinstance(y, np.ndarray) else mb.expand_dims(x=y, axes=[-1])
    z = mb.matmul(x=x, y=y)
    return mb.squeeze(x=z) if not _static(n) else mb.reshape(x=z, shape=_static(n))


_UNARY = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Exp": "exp",
    "Sqrt": "sqrt",
    "Erf": "erf",
    "Abs": "abs",
    "Not": "logical_not",
    "Log": "log",
    "Floor": "floor",
    "Ceil": "ceil",
    "Round": "round",
    "Sign": "sign",
    "Sin": "sin",
    "Cos": "cos",
    "Tan": "tan",
    "Asin": "asin",
    "Acos": "acos",
    "Atan": "atan",
    "Sinh": "sinh",
    "Cosh": "cosh",
    "Atanh": "atanh",
    "Softsign": "softsign",
    "Softplus": "softplus",
}
_FLOAT_ONLY = frozenset(_UNARY) - {"Abs", "Not", "Relu", "Sign"}


@lowering(*_UNARY)
def _unary(b, n):
    x = n.inputs[0]
    if n.op_type in _FLOAT_ONLY and not x.dtype.is_float:
        raise UnsupportedError(
            f"node {n.name!r}: {n.op_type} of {x.dtype.short} is not supported by the coreml target (float only)"
        )
    if n.op_type in ("Abs", "Relu", "Sign") and not x.dtype.is_float:
        return _int_unary(b, n)
    return getattr(b.mb, _UNARY[n.op_type])(x=b.get(x))


def _int_unary(b, n):
    """Abs / Relu / Sign of integers, from comparisons and select (MIL's ops take floats)."""
    mb, x = b.mb, b.get(n.inputs[0])
    zero = b.const(0, n.inputs[0])
    if n.op_type == "Relu":
        return mb.maximum(x=x, y=zero)
    neg = mb.less(x=x, y=zero)
    if n.op_type == "Abs":
        return mb.select(cond=neg, a=mb.sub(x=zero, y=x), b=x)
    pos = mb.cast(x=mb.greater(x=x, y=zero), dtype="int32")
    return mb.sub(x=pos, y=mb.cast(x=neg, dtype="int32"))


@lowering("Reciprocal")
def _reciprocal(b, n):
    return b.mb.inverse(x=b.get(n.inputs[0]), epsilon=b.scalar(0.0))


@lowering("HardSigmoid")
def _hardsigmoid(b, n):
    return b.mb.sigmoid_hard(
        x=b.get(n.inputs[0]), alpha=b.scalar(n.attr("alpha", 0.2)), beta=b.scalar(n.attr("beta", 0.5))
    )


@lowering("HardSwish")
def _hardswish(b, n):
    x = b.get(n.inputs[0])
    return b.mb.mul(x=x, y=b.mb.sigmoid_hard(x=x, alpha=b.scalar(1.0 / 6.0), beta=b.scalar(0.5)))


@lowering("Where")
def _where(b, n):
    c, x, y = (b.get(v) for v in n.inputs)
    out = _static(n)
    # MIL's select broadcasts a and b but not cond: a constant branch is given the output's full shape.
    if tuple(np.broadcast_shapes(*(_static(n, v) for v in n.inputs[1:]))) != tuple(out):
        if isinstance(x, np.ndarray):
            x = np.ascontiguousarray(np.broadcast_to(x, out))
        elif isinstance(y, np.ndarray):
            y = np.ascontiguousarray(np.broadcast_to(y, out))
        else:
            raise UnsupportedError(f"node {n.name!r}: Where whose condition is larger than both branches")
    return b.mb.select(cond=c, a=x, b=y)


def _resize_scales(n: Node, shape: list[int], out: list[int]) -> list[float]:
    """The per-axis scale ONNX maps coordinates with: the given scales, else out / in."""
    sc = _const_input(n, 2, "scales") if n.op_type == "Resize" else _const_input(n, 1, "scales")
    if n.op_type == "Upsample" and sc is None:
        sc = np.asarray(n.attr("scales"))
    if sc is not None and sc.size:
        return [float(v) for v in sc.reshape(-1)]
    return [o / i for o, i in zip(out, shape)]


def _onnx_source(ctm: str, i: np.ndarray, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """ONNX Resize's source coordinate of each output index (float64)."""
    if ctm == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if ctm == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(i, dtype=np.float64)
    if ctm == "align_corners":  # ONNX divides by the unrounded output length in * scale
        return i * (n_in - 1) / (n_in * scale - 1) if n_in * scale != 1 else np.zeros_like(i, dtype=np.float64)
    if ctm == "asymmetric":
        return i / scale
    raise ValueError(ctm)


def _nearest(mode: str, x: np.ndarray) -> np.ndarray:
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    return np.ceil(x - 0.5)  # round_prefer_floor


def _resize_plan(n: Node):
    """Nearest and bilinear resizing of the last two axes, where MIL's sampling grid is ONNX's exactly: the
    ONNX source index / coordinate of every output pixel is computed here and compared with MIL's. Returns
    (the MIL op, its arguments besides x); refuses any other variant (which the decompose pass then rewrites
    where it can: see :func:`variant_problem`)."""
    shape, out = _static(n, n.inputs[0]), _static(n)
    mode = n.attr("mode", "nearest")
    if len(shape) != 4 or shape[:2] != out[:2]:
        _refuse(n, f"{n.op_type} of rank {len(shape)} or of the batch / channel axes (NCHW spatial only)")
    if (
        n.attr("antialias", 0)
        or n.attr("axes") is not None
        or n.attr("exclude_outside", 0)
        or n.attr("keep_aspect_ratio_policy", "stretch") != "stretch"
    ):
        _refuse(n, "Resize with antialias, axes, exclude_outside or keep_aspect_ratio_policy")
    ctm = n.attr("coordinate_transformation_mode", "half_pixel" if n.op_type == "Resize" else "asymmetric")
    if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
        _refuse(n, f"coordinate_transformation_mode={ctm!r}")
    scales = _resize_scales(n, shape, out)[2:]
    axes = list(zip(shape[2:], out[2:], scales))
    size = {"target_size_height": out[2], "target_size_width": out[3]}
    if mode == "nearest":
        nm = n.attr("nearest_mode", "round_prefer_floor" if n.op_type == "Resize" else "floor")
        for d, o, sc in axes:  # MIL: floor(i * in / out)
            i = np.arange(o)
            src = np.clip(_nearest(nm, _onnx_source(ctm, i, d, o, sc)), 0, d - 1)
            if not np.array_equal(src, np.floor(i * d / o)):
                _refuse(n, f"nearest resizing with {ctm} / {nm} at this scale (MIL samples floor(i * in / out))")
        return "resize_nearest_neighbor", size
    if mode != "linear":
        _refuse(n, f"Resize mode={mode!r}")
    for sm, mil in (
        ("ALIGN_CORNERS", lambda i, d, o: i * (d - 1) / (o - 1) if o > 1 else 0 * i),
        ("UNALIGN_CORNERS", lambda i, d, o: (i + 0.5) * d / o - 0.5),
        ("DEFAULT", lambda i, d, o: i * d / o),
    ):
        if all(
            np.allclose(
                np.clip(_onnx_source(ctm, np.arange(o), d, o, sc), 0, d - 1),
                np.clip(mil(np.arange(o), d, o), 0, d - 1),
                rtol=0,
                atol=1e-6,
            )
            for d, o, sc in axes
        ):
            return "resize_bilinear", {**size, "sampling_mode": sm}
    # upsample_bilinear maps with the given scale factors (half-pixel centers), where the output is floor(in * s)
    if all(
        np.allclose(
            np.clip(_onnx_source(ctm, np.arange(o), d, o, sc), 0, d - 1),
            np.clip((np.arange(o) + 0.5) / sc - 0.5, 0, d - 1),
            rtol=0,
            atol=1e-6,
        )
        and int(np.floor(d * sc)) == o
        for d, o, sc in axes
    ):
        return "upsample_bilinear", {
            "scale_factor_height": float(scales[0]),
            "scale_factor_width": float(scales[1]),
            "align_corners": False,
            "half_pixel_centers": True,
        }
    _refuse(n, f"linear resizing with {ctm} at this scale")


@lowering("Resize", "Upsample")
def _resize(b, n):
    op, kw = _resize_plan(n)
    return getattr(b.mb, op)(x=b.get(n.inputs[0]), **kw)


# ---- shape ops ---------------------------------------------------------------------------------------------------
@lowering("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def _reshape(b, n):
    out = _static(n)
    if not out:  # to a scalar: MIL's reshape takes no empty shape
        return b.mb.identity(x=b.get(n.inputs[0])) if n.inputs[0].rank == 0 else b.mb.squeeze(x=b.get(n.inputs[0]))
    return b.mb.reshape(x=b.get(n.inputs[0]), shape=out)


@lowering("Identity")
def _identity(b, n):
    return b.get(n.inputs[0])


@lowering("Transpose")
def _transpose(b, n):
    perm = n.attr("perm") or list(range(n.inputs[0].rank))[::-1]
    return b.mb.transpose(x=b.get(n.inputs[0]), perm=list(perm))


@lowering("Expand")
def _expand(b, n):
    x, out = n.inputs[0], _static(n)
    shape = [1] * (len(out) - x.rank) + _static(n, x)
    y = b.get(x)
    if len(shape) != x.rank:
        y = b.mb.reshape(x=y, shape=shape)
    return b.mb.tile(x=y, reps=[o // s for o, s in zip(out, shape)])


@lowering("Concat")
def _concat(b, n):
    return b.mb.concat(values=[b.get(v) for v in n.inputs], axis=n.attr("axis"))


@lowering("Cast")
def _cast(b, n):
    from ...ir import DType

    to = DType.from_onnx(n.attr("to"))
    dt = float_type() if to.is_float else ("bool" if to.short == "bool" else "int32")
    return b.mb.cast(x=b.get(n.inputs[0]), dtype=dt)


# ---- transformer ops ----------------------------------------------------------------------------------------
@lowering("LayerNormalization")
def _layernorm(b, n):
    x = n.inputs[0]
    axis = n.attr("axis", -1) % x.rank
    scale, bias = n.inputs[1], _opt(n, 2)
    mb = b.mb
    if any(o is not None and used(b.model.graph, o) for o in n.outputs[1:]):  # Mean / InvStdDev too: by hand
        axes = list(range(axis, x.rank))  # statistics in fp32, as ONNX's stash_type does
        xv = mb.cast(x=b.get(x), dtype="fp32")
        mean = mb.reduce_mean(x=xv, axes=axes, keep_dims=True)
        d = mb.sub(x=xv, y=mean)
        inv = mb.rsqrt(
            x=mb.reduce_mean(x=mb.mul(x=d, y=d), axes=axes, keep_dims=True), epsilon=np.float32(n.attr("epsilon", 1e-5))
        )
        y = mb.mul(x=mb.cast(x=mb.mul(x=d, y=inv), dtype=float_type()), y=b.get(scale))
        return [
            y if bias is None else mb.add(x=y, y=b.get(bias)),
            mb.cast(x=mean, dtype=float_type()),
            mb.cast(x=inv, dtype=float_type()),
        ]
    if scale.is_const and (bias is None or bias.is_const):  # MIL's layer_norm takes constant gamma / beta
        kw = {"gamma": b.get(scale)}
        if bias is not None:
            kw["beta"] = b.get(bias)
        return mb.layer_norm(x=b.get(x), axes=list(range(axis, x.rank)), epsilon=_eps16(n.attr("epsilon", 1e-5)), **kw)
    y = mb.mul(
        x=mb.layer_norm(x=b.get(x), axes=list(range(axis, x.rank)), epsilon=_eps16(n.attr("epsilon", 1e-5))),
        y=b.get(scale),
    )
    return y if bias is None else mb.add(x=y, y=b.get(bias))


def _eps16(eps: float) -> np.floating:
    """An epsilon of the compute type; in fp16 one that does not underflow to 0 (BERT's 1e-12 would): at least
    the smallest subnormal."""
    if float_type() == "fp32":
        return np.float32(eps)
    return np.float16(max(float(eps), 2.0**-24))


@lowering("edgec::RMSNorm")
def _rmsnorm(b, n):
    mb = b.mb
    x = mb.cast(x=b.get(n.inputs[0]), dtype="fp32")
    ms = mb.reduce_mean(x=mb.mul(x=x, y=x), axes=[-1], keep_dims=True)
    r = mb.rsqrt(x=ms, epsilon=np.float32(n.attr("epsilon", 1e-5)))
    y = mb.cast(x=mb.mul(x=x, y=r), dtype=float_type())
    return mb.mul(x=y, y=b.get(n.inputs[1]))


@lowering("edgec::Gelu", "Gelu")  # ONNX's Gelu (opset 20) has the same attribute
def _gelu(b, n):
    mode = "TANH_APPROXIMATION" if n.attr("approximate", "none") == "tanh" else "EXACT"
    return b.mb.gelu(x=b.get(n.inputs[0]), mode=mode)


@lowering("edgec::Attention")
def _attention(b, n):
    mb = b.mb
    q, k, v = (b.get(x) for x in n.inputs[:3])
    mask = b.get(n.inputs[3]) if len(n.inputs) > 3 and n.inputs[3] is not None else None
    scale = float(n.attr("scale", 1.0 / np.sqrt(n.inputs[0].static_shape[-1])))
    if b.ios18:
        d = n.inputs[0].static_shape[-1]
        if abs(scale * np.sqrt(d) - 1.0) > 1e-6:
            q = mb.mul(x=q, y=b.scalar(scale * np.sqrt(d)))
        kw = {} if mask is None else {"attn_mask": mask}
        return mb.scaled_dot_product_attention(query=q, key=k, value=v, **kw)
    s = mb.mul(x=mb.matmul(x=q, y=k, transpose_y=True), y=b.scalar(scale))
    if mask is not None:
        s = mb.add(x=s, y=mask)
    return mb.matmul(x=mb.softmax(x=s, axis=-1), y=v)


# ---- elementwise ------------------------------------------------------------------------------------------------
def _refuse(n: Node, what: str) -> NoReturn:
    raise UnsupportedError(f"node {n.name!r} ({n.op_type}): {what} is not supported by the coreml target")


def _opt(n: Node, i: int) -> Value | None:
    return n.inputs[i] if len(n.inputs) > i else None


def _const_input(n: Node, i: int, what: str) -> np.ndarray | None:
    v = _opt(n, i)
    if v is None:
        return None
    if not v.is_const:
        _refuse(n, f"a run-time {what}")
    return np.asarray(v.numpy())


@lowering("Neg")
def _neg(b, n):
    return b.mb.sub(x=b.const(0, n.inputs[0]), y=b.get(n.inputs[0]))


_BINARY = {
    "Add": "add",
    "Sub": "sub",
    "Mul": "mul",
    "Div": "real_div",
    "Pow": "pow",
    "Max": "maximum",
    "Min": "minimum",
    "Equal": "equal",
    "Less": "less",
    "Greater": "greater",
    "LessOrEqual": "less_equal",
    "GreaterOrEqual": "greater_equal",
    "And": "logical_and",
    "Or": "logical_or",
    "Xor": "logical_xor",
}
_COMPARE = frozenset({"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"})


@lowering(*_BINARY)
def _binary(b, n):
    mb = b.mb
    if n.op_type in ("Max", "Min") and len(n.inputs) != 2:
        if len(n.inputs) == 1:
            return b.get(n.inputs[0])
        _refuse(n, f"{n.op_type} of {len(n.inputs)} inputs")
    a, c = n.inputs
    x, y = b.get(a), b.get(c)
    if n.op_type == "Pow":
        if not a.dtype.is_float and not c.dtype.is_float and a.dtype.short != "bool":
            return mb.pow(x=x, y=y)  # integer powers, in int32
        if not a.dtype.is_float:
            _refuse(n, f"Pow of {a.dtype.short} by {c.dtype.short}")
        if not c.dtype.is_float:  # the exponent takes the base's type (exact for the small exponents seen)
            y = b.const(y, a) if isinstance(y, np.ndarray) else mb.cast(x=y, dtype=float_type())
        return mb.pow(x=x, y=y)
    if n.op_type in _COMPARE and a.dtype.short == "bool":  # MIL compares numbers
        x, y = mb.cast(x=x, dtype="int32"), mb.cast(x=y, dtype="int32")
    if n.op_type == "Div" and not a.dtype.is_float:
        return _int_div(b, x, y)
    return getattr(mb, _BINARY[n.op_type])(x=x, y=y)


def _int_div(b, x, y):
    """ONNX integer division truncates toward zero; MIL's floor_div floors: add 1 where the quotient is negative
    and inexact."""
    mb = b.mb
    q = mb.floor_div(x=x, y=y)
    zero = np.int32(0)
    inexact = mb.not_equal(x=mb.mod(x=x, y=y), y=zero)
    negative = mb.logical_xor(x=mb.less(x=x, y=zero), y=mb.less(x=y, y=zero))
    return mb.add(x=q, y=mb.cast(x=mb.logical_and(x=inexact, y=negative), dtype="int32"))


@lowering("Mod")
def _mod(b, n):
    mb = b.mb
    a = n.inputs[0]
    x, y = b.get(a), b.get(n.inputs[1])
    fmod = int(n.attr("fmod", 0))
    r = mb.mod(x=x, y=y)  # the sign of the divisor (Python's %)
    if not fmod:
        return r
    # C fmod: the sign of the dividend. Where r != 0 and the signs of x and y differ, r - y.
    zero = b.const(0, a)
    fix = mb.logical_and(x=mb.not_equal(x=r, y=zero), y=mb.logical_xor(x=mb.less(x=x, y=zero), y=mb.less(x=y, y=zero)))
    return mb.select(cond=fix, a=mb.sub(x=r, y=y), b=r)


@lowering("Elu", "LeakyRelu", "ThresholdedRelu", "Selu", "Celu")
def _alpha_act(b, n):
    mb, x = b.mb, b.get(n.inputs[0])
    if not n.inputs[0].dtype.is_float:
        _refuse(n, f"{n.op_type} of {n.inputs[0].dtype.short}")
    if n.op_type == "Elu":
        return mb.elu(x=x, alpha=b.scalar(n.attr("alpha", 1.0)))
    if n.op_type == "LeakyRelu":
        return mb.leaky_relu(x=x, alpha=b.scalar(n.attr("alpha", 0.01)))
    if n.op_type == "ThresholdedRelu":
        return mb.thresholded_relu(x=x, alpha=b.scalar(n.attr("alpha", 1.0)))
    if n.op_type == "Celu":  # max(0, x) + min(0, alpha * (exp(x / alpha) - 1)) == elu(x / alpha) * alpha
        alpha = float(n.attr("alpha", 1.0))
        return mb.mul(x=mb.elu(x=mb.real_div(x=x, y=b.scalar(alpha)), alpha=b.scalar(1.0)), y=b.scalar(alpha))
    alpha, gamma = n.attr("alpha", 1.67326319217681884765625), n.attr("gamma", 1.05070102214813232421875)
    return mb.mul(x=mb.elu(x=x, alpha=b.scalar(alpha)), y=b.scalar(gamma))


@lowering("PRelu")
def _prelu(b, n):
    mb, x = b.mb, b.get(n.inputs[0])
    zero = b.const(0, n.inputs[0])
    return mb.select(cond=mb.less(x=x, y=zero), a=mb.mul(x=x, y=b.get(n.inputs[1])), b=x)


@lowering("Clip")
def _clip(b, n):
    x = n.inputs[0]
    y = b.get(x)
    lo, hi = _const_input(n, 1, "minimum"), _const_input(n, 2, "maximum")
    if len(n.inputs) <= 1:  # opset < 11: attributes
        lo = n.attr("min")
        hi = n.attr("max")
    if lo is not None and np.size(lo):
        y = b.mb.maximum(x=y, y=b.const(np.asarray(lo).reshape(()), x))
    if hi is not None and np.size(hi):
        y = b.mb.minimum(x=y, y=b.const(np.asarray(hi).reshape(()), x))
    return y if y is not b.get(x) else b.mb.identity(x=y)


@lowering("Dropout")
def _dropout(b, n):
    train = _const_input(n, 2, "training_mode")
    if train is not None and bool(train):
        _refuse(n, "Dropout in training mode")
    if len(n.outputs) > 1 and n.outputs[1] is not None and used(b.model.graph, n.outputs[1]):
        return [
            b.mb.identity(x=b.get(n.inputs[0])),
            np.ones(_static(n, n.inputs[0]), bool),
        ]  # inference: the mask is all true
    return b.mb.identity(x=b.get(n.inputs[0]))


@lowering("CastLike")
def _castlike(b, n):
    return b.mb.cast(x=b.get(n.inputs[0]), dtype=mil_dtype(n.inputs[1]))


# ---- reductions -------------------------------------------------------------------------------------------------
_REDUCE = {
    "ReduceMean": "reduce_mean",
    "ReduceSum": "reduce_sum",
    "ReduceMax": "reduce_max",
    "ReduceMin": "reduce_min",
    "ReduceProd": "reduce_prod",
    "ReduceL1": "reduce_l1_norm",
    "ReduceL2": "reduce_l2_norm",
    "ReduceLogSum": "reduce_log_sum",
    "ReduceLogSumExp": "reduce_log_sum_exp",
    "ReduceSumSquare": "reduce_sum_square",
}


def _axes(n: Node, rank: int) -> list[int] | None:
    """A reduction's axes (None: all), from its input (opset 13 ReduceSum, every reduction from 18) or attribute."""
    v = _const_input(n, 1, "axes")
    axes = [int(a) for a in v.reshape(-1)] if v is not None else n.attr("axes")
    if not axes:
        return None
    return sorted({int(a) % max(rank, 1) for a in axes})


@lowering(*_REDUCE)
def _reduce(b, n):
    x = n.inputs[0]
    rank = len(_static(n, x))
    axes = _axes(n, rank)
    keep = bool(n.attr("keepdims", 1))
    if axes is None and n.attr("noop_with_empty_axes", 0):
        return b.mb.identity(x=b.get(x))
    if not x.dtype.is_float and n.op_type not in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"):
        _refuse(n, f"{n.op_type} of {x.dtype.short}")
    boolean = x.dtype.short == "bool"
    if boolean and n.op_type not in ("ReduceMax", "ReduceMin"):
        _refuse(n, f"{n.op_type} of bool")
    if rank == 0 or (axes is not None and any(_static(n, x)[a] == 0 for a in axes)):
        _refuse(n, "a reduction of a scalar or an empty axis")
    axes = list(range(rank)) if axes is None else axes
    y = getattr(b.mb, _REDUCE[n.op_type])(x=_numeric(b, x), axes=axes, keep_dims=keep)  # bool: any / all as 0 / 1
    return _unbool(b, x, y)


@lowering("ArgMax", "ArgMin")
def _argmax(b, n):
    mb, x = b.mb, n.inputs[0]
    shape = _static(n, x)
    axis = int(n.attr("axis", 0)) % len(shape)
    keep = bool(n.attr("keepdims", 1))
    fn = mb.reduce_argmax if n.op_type == "ArgMax" else mb.reduce_argmin
    y = b.get(x)
    if x.dtype.short == "bool":
        y = mb.cast(x=y, dtype="int32")
    if n.attr("select_last_index", 0):  # the first index of the reversed axis, mirrored
        idx = fn(x=mb.reverse(x=y, axes=[axis]), axis=axis, keep_dims=keep)
        return mb.sub(x=np.int32(shape[axis] - 1), y=idx)
    return fn(x=y, axis=axis, keep_dims=keep)


@lowering("Softmax", "LogSoftmax", "Hardmax")
def _softmax(b, n):
    mb, x = b.mb, n.inputs[0]
    rank = len(_static(n, x))
    if b.model.opset < 13:
        _refuse(n, f"{n.op_type} before opset 13 (2-D coercion)")
    axis = int(n.attr("axis", -1)) % rank
    y = b.get(x)
    if n.op_type == "Softmax":
        return mb.softmax(x=y, axis=axis)
    if n.op_type == "LogSoftmax":
        return mb.sub(x=y, y=mb.reduce_log_sum_exp(x=y, axes=[axis], keep_dims=True))
    idx = mb.reduce_argmax(x=y, axis=axis, keep_dims=False)
    return mb.one_hot(
        indices=idx, one_hot_vector_size=_static(n, x)[axis], axis=axis, on_value=b.scalar(1.0), off_value=b.scalar(0.0)
    )


@lowering("CumSum")
def _cumsum(b, n):
    x = n.inputs[0]
    axis = _const_input(n, 1, "axis")
    if axis is None:
        _refuse(n, "CumSum without an axis")
    if x.dtype.short == "bool":
        _refuse(n, "CumSum of bool")
    return b.mb.cumsum(
        x=b.get(x),
        axis=int(axis.reshape(-1)[0]),
        exclusive=bool(n.attr("exclusive", 0)),
        reverse=bool(n.attr("reverse", 0)),
    )


@lowering("TopK")
def _topk(b, n):
    x = n.inputs[0]
    k = _const_input(n, 1, "K")
    shape = _static(n, x)
    axis = int(n.attr("axis", -1)) % len(shape)
    if x.dtype.short == "bool":
        _refuse(n, "TopK of bool")
    vals, idx = b.mb.topk(x=b.get(x), k=int(k.reshape(-1)[0]), axis=axis, ascending=not n.attr("largest", 1), sort=True)
    return [vals, idx]


# ---- pooling and normalization ------------------------------------------------------------------------------------
def _conv_pads(n: Node, in_sp: list[int], kernel: list[int], strides: list[int], dil: list[int]) -> list[int]:
    """Explicit pads in Core ML's order ([begin0, end0, begin1, end1, ...]) for any auto_pad."""
    ap = n.attr("auto_pad", "NOTSET")
    k = len(in_sp)
    if ap in ("NOTSET", "VALID"):
        p = list(n.attr("pads", [0] * 2 * k)) if ap == "NOTSET" else [0] * 2 * k
        return [v for i in range(k) for v in (p[i], p[i + k])]
    if ap not in ("SAME_UPPER", "SAME_LOWER"):
        _refuse(n, f"auto_pad={ap}")
    out = []
    for d, kk, s, dl in zip(in_sp, kernel, strides, dil):
        o = -(-d // s)
        total = max(0, (o - 1) * s + (kk - 1) * dl + 1 - d)
        lo = total // 2 if ap == "SAME_UPPER" else total - total // 2
        out += [lo, total - lo]
    return out


def _pool_plan(n: Node):
    """(kernel, strides, pads, ceil_mode) of a 2-D or 3-D pooling node MIL's pools compute as ONNX defines it;
    refuses any other variant (dilations, output sizes MIL's ceil_mode rounds otherwise, ...)."""
    x = n.arg(0)
    shape = _static(n, x)
    k = len(shape) - 2
    if k not in (2, 3):
        _refuse(n, f"{n.op_type} of rank {len(shape)} (2-D and 3-D pooling only)")
    kernel = list(n.attr("kernel_shape"))
    strides = list(n.attr("strides", [1] * k))
    if any(d != 1 for d in n.attr("dilations", [1] * k)):
        _refuse(n, "pooling with dilations")
    if len(n.outputs) > 1 and n.outputs[1] is not None and used(n.graph, n.outputs[1]):
        _refuse(n, "MaxPool's Indices output")
    ceil = bool(n.attr("ceil_mode", 0))
    pads = _conv_pads(n, shape[2:], kernel, strides, [1] * k)
    if ceil and any(p for p in pads) and n.op_type != "MaxPool":
        _refuse(n, f"{n.op_type} with ceil_mode and padding")
    padded = [d + pads[2 * i] + pads[2 * i + 1] for i, d in enumerate(shape[2:])]
    mil_out = [-(-(d - kk) // s) + 1 if ceil else (d - kk) // s + 1 for d, kk, s in zip(padded, kernel, strides)]
    if mil_out != _static(n)[2:]:  # ONNX drops a last window that would start past the input
        _refuse(n, f"ceil_mode where ONNX's output size {_static(n)[2:]} differs from MIL's {mil_out}")
    assert x.dtype is not None  # every value the target lowers is typed
    if not x.dtype.is_float and (n.op_type != "MaxPool" or x.dtype.short not in ("i8", "u8")):
        _refuse(n, f"{n.op_type} of {x.dtype.short}")  # MIL pools floats: int8 / uint8 are exact in fp16
    p = int(n.attr("p", 2))
    if n.op_type == "LpPool" and (p < 1 or ceil):
        _refuse(n, f"LpPool with p={p}" + (" and ceil_mode" if ceil else ""))
    if n.op_type == "AveragePool" and ceil and n.attr("count_include_pad", 0):
        _refuse(n, "ceil_mode with count_include_pad")
    return kernel, strides, pads, ceil


@lowering("MaxPool", "AveragePool", "LpPool")
def _pool(b, n):
    x = n.inputs[0]
    kernel, strides, pads, ceil = _pool_plan(n)
    xin = b.get(x)
    if not x.dtype.is_float:
        y = b.mb.max_pool(
            x=b.mb.cast(x=xin, dtype="fp16"),
            kernel_sizes=kernel,
            strides=strides,
            pad_type="custom",
            pad=pads,
            ceil_mode=ceil,
        )
        return b.mb.cast(x=y, dtype="int32")
    kw = {"kernel_sizes": kernel, "strides": strides, "pad_type": "custom", "pad": pads, "ceil_mode": ceil}
    if n.op_type == "LpPool":
        p = int(n.attr("p", 2))
        if p == 2 and len(kernel) == 2:
            return b.mb.l2_pool(x=xin, **kw)
        # (the window's sum of |x|^p, zero padding included) ^ (1 / p): the sum as an average over the whole
        # window times its size
        mb = b.mb
        xp = mb.abs(x=xin) if p == 1 else mb.pow(x=mb.abs(x=xin), y=b.scalar(p))
        sm = mb.mul(x=mb.avg_pool(x=xp, exclude_padding_from_average=False, **kw), y=b.scalar(float(np.prod(kernel))))
        return sm if p == 1 else mb.pow(x=sm, y=b.scalar(1.0 / p))
    if n.op_type == "AveragePool":
        return b.mb.avg_pool(x=xin, exclude_padding_from_average=not n.attr("count_include_pad", 0), **kw)
    return b.mb.max_pool(x=xin, **kw)


@lowering("GlobalAveragePool", "GlobalMaxPool")
def _gap(b, n):
    axes = list(range(2, len(_static(n, n.inputs[0]))))
    fn = b.mb.reduce_mean if n.op_type == "GlobalAveragePool" else b.mb.reduce_max
    return fn(x=b.get(n.inputs[0]), axes=axes, keep_dims=True)


def _channel(b, v: Value, rank: int):
    """A per-channel vector shaped [C, 1, ...] to broadcast against an NC... tensor."""
    y = b.get(v)
    return (
        np.asarray(y).reshape([-1] + [1] * (rank - 2))
        if isinstance(y, np.ndarray)
        else b.mb.reshape(x=y, shape=[-1] + [1] * (rank - 2))
    )


@lowering("BatchNormalization")
def _batchnorm(b, n):
    if n.attr("training_mode", 0) or any(o is not None and used(b.model.graph, o) for o in n.outputs[1:]):
        _refuse(n, "BatchNormalization in training mode")
    mb, x = b.mb, n.inputs[0]
    rank = len(_static(n, x))
    eps = _eps16(n.attr("epsilon", 1e-5))
    if rank in (3, 4, 5) and all(v.is_const for v in n.inputs[1:5]):
        scale, bias, mean, var = (b.get(v) for v in n.inputs[1:5])
        return mb.batch_norm(x=b.get(x), mean=mean, variance=var, gamma=scale, beta=bias, epsilon=eps)
    if rank < 2:
        _refuse(n, f"BatchNormalization of rank {rank}")
    scale, bias, mean, var = (_channel(b, v, rank) for v in n.inputs[1:5])
    y = mb.real_div(x=mb.sub(x=b.get(x), y=mean), y=mb.sqrt(x=mb.add(x=var, y=eps)))
    return mb.add(x=mb.mul(x=y, y=scale), y=bias)


@lowering("InstanceNormalization")
def _instancenorm(b, n):
    mb, x = b.mb, n.inputs[0]
    rank = len(_static(n, x))
    if rank not in (3, 4):
        _refuse(n, f"InstanceNormalization of rank {rank}")
    eps = _eps16(n.attr("epsilon", 1e-5))
    if n.inputs[1].is_const and n.inputs[2].is_const:
        return mb.instance_norm(x=b.get(x), gamma=b.get(n.inputs[1]), beta=b.get(n.inputs[2]), epsilon=eps)
    y = mb.instance_norm(x=b.get(x), epsilon=eps)
    return mb.add(x=mb.mul(x=y, y=_channel(b, n.inputs[1], rank)), y=_channel(b, n.inputs[2], rank))


@lowering("LRN")
def _lrn(b, n):
    size = int(n.attr("size"))
    if size % 2 == 0:
        _refuse(n, "LRN with an even size (an asymmetric window)")
    if len(_static(n, n.inputs[0])) < 3:
        _refuse(n, "LRN of rank < 3")
    return b.mb.local_response_norm(
        x=b.get(n.inputs[0]),
        size=size,
        alpha=b.scalar(n.attr("alpha", 1e-4)),
        beta=b.scalar(n.attr("beta", 0.75)),
        k=b.scalar(n.attr("bias", 1.0)),
    )


@lowering("ConvTranspose")
def _conv_transpose(b, n):
    mb = b.mb
    x, w = n.inputs[0], n.inputs[1]
    shape, out = _static(n, x), _static(n)
    k = len(shape) - 2
    if k not in (1, 2, 3):
        _refuse(n, f"ConvTranspose of rank {len(shape)}")
    kernel = _static(n, w)[2:]
    strides = list(n.attr("strides", [1] * k))
    dil = list(n.attr("dilations", [1] * k))
    groups = int(n.attr("group", 1))
    # The full (unpadded) transposed convolution, then ONNX's pads / output_padding / output_shape by slicing
    # (and zero-padding where output_padding reaches past it); the bias after.
    full = [(d - 1) * s + (kk - 1) * dl + 1 for d, s, kk, dl in zip(shape[2:], strides, kernel, dil)]
    total = [f + op - o for f, o, op in zip(full, out[2:], n.attr("output_padding", [0] * k))]
    ap = n.attr("auto_pad", "NOTSET")
    if n.attr("output_shape") is not None or ap in ("SAME_UPPER", "SAME_LOWER"):
        # ONNX: total padding split evenly, the extra one at the end for SAME_UPPER, at the start otherwise
        begins = [t // 2 if ap == "SAME_UPPER" else t - t // 2 for t in total]
    elif ap in ("NOTSET", "VALID"):
        p = list(n.attr("pads", [0] * 2 * k)) if ap == "NOTSET" else [0] * 2 * k
        begins = p[:k]
    else:
        _refuse(n, f"auto_pad={ap}")
    y = mb.conv_transpose(x=b.get(x), weight=b.get(w), pad_type="valid", strides=strides, dilations=dil, groups=groups)
    pre = [max(0, -bg) for bg in begins]  # negative pads: the output reaches past the full result (zeros)
    begins = [bg + p for bg, p in zip(begins, pre)]
    need_pad = [max(0, bg + o - f - p) for bg, o, f, p in zip(begins, out[2:], full, pre)]
    if any(need_pad) or any(pre):
        y = mb.pad(
            x=y, pad=[v for p, q in zip(pre, need_pad) for v in (p, q)], mode="constant", constant_val=b.scalar(0.0)
        )
    y = mb.slice_by_index(x=y, begin=[0, 0] + begins, end=out[:2] + [bg + o for bg, o in zip(begins, out[2:])])
    if _opt(n, 2) is not None:
        y = mb.add(
            x=y,
            y=np.asarray(b.get(n.inputs[2])).reshape([-1] + [1] * k)
            if n.inputs[2].is_const
            else mb.reshape(x=b.get(n.inputs[2]), shape=[-1] + [1] * k),
        )
    return y


# ---- data movement ------------------------------------------------------------------------------------------------
@lowering("Slice")
def _slice(b, n):
    mb, x = b.mb, n.inputs[0]
    shape = _static(n, x)
    if any(v is not None and not v.is_const for v in n.inputs[1:]):
        _refuse(n, "run-time Slice bounds")
    if len(n.inputs) == 1:  # opset < 10: attributes
        starts, ends = list(n.attr("starts")), list(n.attr("ends"))
        axes = list(n.attr("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(n.inputs[1]), _ints(n.inputs[2])
        axes = _ints(n.inputs[3]) if _opt(n, 3) is not None else list(range(len(starts)))
        steps = _ints(n.inputs[4]) if _opt(n, 4) is not None else [1] * len(starts)
    begin, end, stride = [0] * len(shape), list(shape), [1] * len(shape)
    flip = []
    for s, e, a, st in zip(starts, ends, axes, steps):
        a %= len(shape)
        d = shape[a]
        if st == 0:
            _refuse(n, "Slice with step 0")
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if st > 0:
            begin[a], end[a], stride[a] = min(max(s, 0), d), min(max(e, 0), d), st
        else:  # on the reversed axis: index i there is d - 1 - i here
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
            begin[a], end[a], stride[a] = d - 1 - s, d - 1 - e, -st
            flip.append(a)
    if any(e <= s for s, e in zip(begin, end)):
        _refuse(n, "an empty Slice")
    y = b.get(x)
    if flip:
        y = mb.reverse(x=y, axes=flip)
    return mb.slice_by_index(x=y, begin=begin, end=end, stride=stride)


@lowering("Split")
def _split(b, n):
    x = n.inputs[0]
    shape = _static(n, x)
    axis = int(n.attr("axis", 0)) % len(shape)
    sizes = _const_input(n, 1, "split")
    sizes = [int(s) for s in sizes.reshape(-1)] if sizes is not None else n.attr("split")
    if not sizes:
        sizes = [_static(n, o)[axis] for o in n.outputs]
    if any(s <= 0 for s in sizes):
        _refuse(n, "an empty Split output")
    if len(sizes) == 1:
        return [b.mb.identity(x=b.get(x))]
    return list(b.mb.split(x=b.get(x), split_sizes=list(sizes), axis=axis))


def _indices(b, n: Node, v: Value, dim: int):
    """Gather indices as int32, negatives wrapped (constant indices here, run-time ones by select)."""
    mb = b.mb
    if v.is_const:
        a = np.asarray(v.numpy()).astype(np.int64)
        return np.where(a < 0, a + dim, a).astype(np.int32)
    i = b.get(v)
    return mb.select(cond=mb.less(x=i, y=np.int32(0)), a=mb.add(x=i, y=np.int32(dim)), b=i)


def _numeric(b, v: Value):
    """MIL's gathers and scatters move numbers: bools travel as int32."""
    y = b.get(v)
    assert v.dtype is not None  # every value the target lowers is typed
    return b.mb.cast(x=y, dtype="int32") if v.dtype.short == "bool" else y


def _unbool(b, v: Value, y):
    assert v.dtype is not None  # every value the target lowers is typed
    return b.mb.cast(x=y, dtype="bool") if v.dtype.short == "bool" else y


@lowering("Gather")
def _gather(b, n):
    x = n.inputs[0]
    shape = _static(n, x)
    axis = int(n.attr("axis", 0)) % len(shape)
    idx = _indices(b, n, n.inputs[1], shape[axis])
    if n.inputs[1].rank == 0 and isinstance(idx, np.ndarray):
        idx = idx.reshape(())
    return _unbool(b, x, b.mb.gather(x=_numeric(b, x), indices=idx, axis=axis))


@lowering("GatherElements")
def _gather_elements(b, n):
    x = n.inputs[0]
    shape = _static(n, x)
    axis = int(n.attr("axis", 0)) % len(shape)
    idx = _indices(b, n, n.inputs[1], shape[axis])
    return _unbool(b, x, b.mb.gather_along_axis(x=_numeric(b, x), indices=idx, axis=axis))


@lowering("GatherND")
def _gather_nd(b, n):
    x, iv = n.inputs[0], n.inputs[1]
    shape = _static(n, x)
    bd = int(n.attr("batch_dims", 0))
    dims = np.asarray(shape[bd : bd + _static(n, iv)[-1]], np.int32)
    if iv.is_const:
        idx = np.asarray(iv.const.numpy()).astype(np.int64)
        idx = np.where(idx < 0, idx + dims, idx).astype(np.int32)
    else:
        i = b.get(iv)
        idx = b.mb.select(cond=b.mb.less(x=i, y=np.int32(0)), a=b.mb.add(x=i, y=dims), b=i)
    return _unbool(b, x, b.mb.gather_nd(x=_numeric(b, x), indices=idx, batch_dims=bd))


@lowering("Tile")
def _tile(b, n):
    reps = _const_input(n, 1, "repeats")
    return _unbool(b, n.inputs[0], b.mb.tile(x=_numeric(b, n.inputs[0]), reps=[int(r) for r in reps.reshape(-1)]))


@lowering("Pad")
def _pad(b, n):
    x = n.inputs[0]
    shape = _static(n, x)
    mode = n.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        _refuse(n, f"Pad mode={mode!r}")
    p = _const_input(n, 1, "pads")
    pads = [int(v) for v in p.reshape(-1)] if p is not None else list(n.attr("pads"))
    cv = _opt(n, 2)
    if cv is not None and not cv.is_const:
        value = None  # a run-time pad value: pad with 0, then select it where the (static) padding is
    else:
        value = _const_input(n, 2, "constant_value")
        value = float(value.reshape(-1)[0]) if value is not None and value.size else float(n.attr("value", 0.0))
    axes = _const_input(n, 3, "axes")
    r = len(shape)
    axes = [int(a) % r for a in axes.reshape(-1)] if axes is not None else list(range(r))
    full = [0] * (2 * r)
    for i, a in enumerate(axes):
        full[2 * a], full[2 * a + 1] = pads[i], pads[i + len(axes)]
    if any(v < 0 for v in full):
        _refuse(n, "negative pads")
    lead = next((i for i in range(r) if full[2 * i] or full[2 * i + 1]), r)
    if (
        not x.dtype.is_float
        or mode == "wrap"
        or (
            mode != "constant"
            and (
                r - lead > 3
                or (mode == "reflect" and any(full[2 * i] >= shape[i] or full[2 * i + 1] >= shape[i] for i in range(r)))
            )
        )
    ):
        return _pad_by_index(b, n, shape, full, mode, value)
    if mode != "constant":
        full = full[2 * max(lead, r - 3) :] if lead < r else full[-2:]
    if value is None:
        if mode != "constant":
            _refuse(n, "a run-time constant_value outside constant mode")
        inside = np.pad(np.ones(shape, bool), [(full[2 * i], full[2 * i + 1]) for i in range(r)])
        y = b.mb.pad(x=b.get(x), pad=np.asarray(full, np.int32), mode="constant", constant_val=b.scalar(0.0))
        return b.mb.select(cond=inside, a=y, b=b.mb.reshape(x=b.get(cv), shape=[1] * r))
    return b.mb.pad(
        x=b.get(x),
        pad=np.asarray(full, np.int32),
        mode={"edge": "replicate"}.get(mode, mode),
        constant_val=b.scalar(value),
    )


# Pad modes by index: the numpy pad mode whose source index ONNX's mode takes.
_NP_PAD_MODES: dict[str, Literal["edge", "reflect", "wrap"]] = {"edge": "edge", "reflect": "reflect", "wrap": "wrap"}


def _pad_by_index(b, n: Node, shape: list[int], full: list[int], mode: str, value: float | None):
    """Pad of any dtype and mode, axis by axis: edge / reflect / wrap gather the source index numpy's pad of
    ``arange(d)`` gives (ONNX defines these modes as numpy's), constant concatenates constant blocks."""
    mb, x = b.mb, n.arg(0)
    assert x.dtype is not None  # every value the target lowers is typed
    y = _numeric(b, x)
    cur = list(shape)
    for a in range(len(shape)):
        p0, p1 = full[2 * a], full[2 * a + 1]
        if not p0 and not p1:
            continue
        if mode == "constant":
            if value is None:
                _refuse(n, f"a run-time constant_value for Pad of {x.dtype.short}")
            fill = np.asarray(value).astype(np.int32 if x.dtype.short == "bool" else np_compute(x))
            parts = [np.full(cur[:a] + [p] + cur[a + 1 :], fill) for p in (p0, p1)]
            y = mb.concat(
                values=[v for v in (parts[0] if p0 else None, y, parts[1] if p1 else None) if v is not None], axis=a
            )
        else:
            idx = np.pad(np.arange(cur[a]), (p0, p1), mode=_NP_PAD_MODES[mode])
            y = mb.gather(x=y, indices=idx.astype(np.int32), axis=a)
        cur[a] += p0 + p1
    return _unbool(b, x, y)


@lowering("DepthToSpace", "SpaceToDepth")
def _depth_space(b, n):
    mb = b.mb
    nb, c, h, w = _static(n, n.inputs[0])
    bs = int(n.attr("blocksize"))
    x = b.get(n.inputs[0])
    if n.op_type == "SpaceToDepth":
        y = mb.reshape(x=x, shape=[nb, c, h // bs, bs, w // bs, bs])
        crd = n.attr("mode", "DCR") == "CRD"
        y = mb.transpose(x=y, perm=[0, 1, 3, 5, 2, 4] if crd else [0, 3, 5, 1, 2, 4])
        return mb.reshape(x=y, shape=[nb, c * bs * bs, h // bs, w // bs])
    if n.attr("mode", "DCR") == "DCR":
        y = mb.reshape(x=x, shape=[nb, bs, bs, c // (bs * bs), h, w])
        y = mb.transpose(x=y, perm=[0, 3, 4, 1, 5, 2])
    else:
        y = mb.reshape(x=x, shape=[nb, c // (bs * bs), bs, bs, h, w])
        y = mb.transpose(x=y, perm=[0, 1, 4, 2, 5, 3])
    return mb.reshape(x=y, shape=[nb, c // (bs * bs), h * bs, w * bs])


@lowering("Shape", "Size", "ConstantOfShape", "Range")
def _static_value(b, n):
    """Ops whose value the static shapes and constant inputs fix: a constant."""
    out = n.outputs[0]
    if n.op_type == "Shape":
        shape = _static(n, n.inputs[0])
        r = len(shape)
        start, end = int(n.attr("start", 0)), n.attr("end")
        start = min(max(start + r if start < 0 else start, 0), r)
        end = r if end is None else min(max(int(end) + r if int(end) < 0 else int(end), 0), r)
        return np.asarray(shape[start:end], np.int32)
    if n.op_type == "Size":
        return np.asarray(int(np.prod(_static(n, n.inputs[0]))), np.int32)
    if n.op_type == "ConstantOfShape":
        val = n.attr("value")
        v = np.asarray(val.numpy()).reshape(-1)[0] if val is not None else 0.0
        return b.const(np.full(_static(n), v), out)
    lim = [_const_input(n, i, "Range bound") for i in range(3)]
    start, limit, delta = (np.asarray(v).reshape(()) for v in lim)
    return b.const(np.arange(start, limit, delta, dtype=np.asarray(start).dtype), out)


@lowering("OneHot")
def _onehot(b, n):
    mb = b.mb
    depth = _const_input(n, 1, "depth")
    vals = n.inputs[2].const.numpy() if n.inputs[2].is_const else None
    d = int(np.asarray(depth).reshape(-1)[0])
    idx = b.get(n.inputs[0])
    if n.inputs[0].dtype.is_float:
        idx = mb.cast(x=mb.floor(x=idx), dtype="int32")  # ONNX casts float indices to int (they are integral)
    idx = mb.select(cond=mb.less(x=idx, y=np.int32(0)), a=mb.add(x=idx, y=np.int32(d)), b=idx)
    out = n.outputs[0]
    if vals is not None:
        vals = np.asarray(vals).reshape(-1)
        off, on = b.const(vals[0], out), b.const(vals[1], out)
        return mb.one_hot(indices=idx, one_hot_vector_size=d, axis=int(n.attr("axis", -1)), on_value=on, off_value=off)
    hot = mb.one_hot(
        indices=idx, one_hot_vector_size=d, axis=int(n.attr("axis", -1)), on_value=np.int32(1), off_value=np.int32(0)
    )
    v = b.get(n.inputs[2])
    return mb.select(
        cond=mb.cast(x=hot, dtype="bool"),
        a=mb.gather(x=v, indices=np.int32(1), axis=0),
        b=mb.gather(x=v, indices=np.int32(0), axis=0),
    )


_SCATTER_MODE = {"none": "update", "add": "add", "mul": "mul", "max": "max", "min": "min"}


def _scatter_mode(n: Node) -> str:
    red = n.attr("reduction", "none")
    if red not in _SCATTER_MODE:
        _refuse(n, f"reduction={red!r}")
    dt = n.arg(0).dtype
    assert dt is not None  # every value the target lowers is typed
    if dt.short == "bool":
        _refuse(n, f"{n.op_type} of bool")
    return _SCATTER_MODE[red]


@lowering("ScatterElements", "Scatter")
def _scatter_elements(b, n):
    x = n.inputs[0]
    shape = _static(n, x)
    axis = int(n.attr("axis", 0)) % len(shape)
    mode = _scatter_mode(n)
    idx = _indices(b, n, n.inputs[1], shape[axis])
    return b.mb.scatter_along_axis(data=b.get(x), indices=idx, updates=b.get(n.inputs[2]), axis=axis, mode=mode)


@lowering("ScatterND")
def _scatter_nd(b, n):
    x, iv = n.inputs[0], n.inputs[1]
    mode = _scatter_mode(n)
    dims = np.asarray(_static(n, x)[: _static(n, iv)[-1]], np.int32)
    if iv.is_const:
        idx = np.asarray(iv.const.numpy()).astype(np.int64)
        idx = np.where(idx < 0, idx + dims, idx).astype(np.int32)
    else:
        i = b.get(iv)
        idx = b.mb.select(cond=b.mb.less(x=i, y=np.int32(0)), a=b.mb.add(x=i, y=dims), b=i)
    return b.mb.scatter_nd(data=b.get(x), indices=idx, updates=b.get(n.inputs[2]), mode=mode)


@lowering("Compress")
def _compress(b, n):
    x = n.inputs[0]
    cond = _const_input(n, 1, "condition")
    keep = np.nonzero(np.asarray(cond).reshape(-1).astype(bool))[0].astype(np.int32)
    axis = n.attr("axis")
    y = _numeric(b, x)
    if axis is None:
        y = b.mb.reshape(x=y, shape=[-1])
        axis = 0
    return _unbool(b, x, b.mb.gather(x=y, indices=keep, axis=int(axis) % max(len(_static(n, x)), 1)))


@lowering("EyeLike")
def _eyelike(b, n):
    r, c = _static(n)
    return b.const(np.eye(r, c, k=int(n.attr("k", 0))), n.outputs[0])


@lowering("LpNormalization")
def _lpnorm(b, n):
    x = n.inputs[0]
    p = int(n.attr("p", 2))
    if p not in (1, 2) or not x.dtype.is_float:
        _refuse(n, f"LpNormalization with p={p} of {x.dtype.short}")
    axis = int(n.attr("axis", -1)) % len(_static(n, x))
    fn = b.mb.reduce_l1_norm if p == 1 else b.mb.reduce_l2_norm
    y = b.get(x)
    norm = fn(x=y, axes=[axis], keep_dims=True)  # a zero norm divides zeros by 1: 0, as ONNX's reference gives
    one = b.scalar(1.0)
    return b.mb.real_div(x=y, y=b.mb.select(cond=b.mb.equal(x=norm, y=b.scalar(0.0)), a=one, b=norm))


@lowering("DequantizeLinear")
def _dequantize(b, n):
    """(x - zero_point) * scale: the difference in int32 (exact), then the float compute type."""
    mb, x = b.mb, n.inputs[0]
    if x.dtype.is_float or n.attr("block_size", 0):
        _refuse(n, f"DequantizeLinear of {x.dtype.short}" + (" by blocks" if n.attr("block_size", 0) else ""))
    rank = len(_static(n, x))
    scale = n.inputs[1]
    axis = int(n.attr("axis", 1)) % max(rank, 1)

    def per_axis(v: Value):
        y = b.get(v)
        if v.rank == 1 and rank > 1 and _static(n, v)[0] > 1:
            shape = [-1] + [1] * (rank - axis - 1)
            return np.asarray(y).reshape(shape) if isinstance(y, np.ndarray) else mb.reshape(x=y, shape=shape)
        return y

    y = b.get(x)
    zp = _opt(n, 2)
    if zp is not None:
        y = mb.sub(x=y, y=per_axis(zp))
    return mb.mul(x=mb.cast(x=y, dtype=float_type()), y=per_axis(scale))


@lowering("QuantizeLinear")
def _quantize(b, n):
    """clip(round_half_even(x / scale) + zero_point, qmin, qmax), in fp32 whatever the compute type (so that the
    quotient is rounded as ONNX's fp32 division rounds it), cast to int32 (exact: the values are integers in
    range)."""
    mb, x, out = b.mb, n.inputs[0], n.outputs[0]
    scale = n.inputs[1]
    if not x.dtype.is_float or out.dtype.short not in NARROW_INTS or n.attr("block_size", 0):
        _refuse(
            n,
            f"QuantizeLinear of {x.dtype.short} to {out.dtype.short}"
            + (" by blocks" if n.attr("block_size", 0) else ""),
        )
    if scale.dtype.short != "f32" or n.attr("precision", 0) not in (0, 1):
        _refuse(n, f"QuantizeLinear dividing in other than fp32 (scale {scale.dtype.short})")
    rank = len(_static(n, x))
    axis = int(n.attr("axis", 1)) % max(rank, 1)

    def per_axis(v: Value):
        shape = [-1] + [1] * (rank - axis - 1) if v.rank == 1 and rank > 1 and _static(n, v)[0] > 1 else None
        if v.is_const:
            a = np.asarray(v.numpy()).astype(np.float32)
            return a.reshape(shape) if shape else a
        y = mb.cast(x=b.get(v), dtype="fp32")
        return mb.reshape(x=y, shape=shape) if shape else y

    xv = b.get(x)
    if float_type() != "fp32":
        xv = mb.cast(x=xv, dtype="fp32")
    y = mb.round(x=mb.real_div(x=xv, y=per_axis(scale)))
    zp = _opt(n, 2)
    if zp is not None:
        y = mb.add(x=y, y=per_axis(zp))
    bits, signed = NARROW_INTS[out.dtype.short]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return mb.cast(x=mb.clip(x=y, alpha=np.float32(lo), beta=np.float32(hi)), dtype="int32")


_BITWISE_TYPES = {"i8": (8, True), "u8": (8, False), "i16": (16, True), "u16": (16, False), "i32": (32, True)}


@lowering("BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot")
def _bitwise(b, n):
    """Bitwise ops on int32 (narrow integers sign- or zero-extended into it), by exact integer arithmetic: NOT x
    is -1 - x (two's complement; narrow unsigned results wrap back into range). AND / OR / XOR split each operand
    into its bits on a new last axis (floor_div by 2^k, mod 2: floor division is an arithmetic shift), combine
    them (mul / maximum / sum mod 2), and sum bit k times 2^k; the sign bit of a signed type enters as its
    own term, weight -2^(bits-1). No sum leaves int32."""
    mb, x = b.mb, n.inputs[0]
    if x.dtype.short not in _BITWISE_TYPES:
        _refuse(n, f"{n.op_type} of {x.dtype.short}")
    if n.op_type == "BitwiseNot":
        return mb.sub(x=np.int32(-1), y=b.get(x))
    if len(_static(n)) > 4:
        _refuse(n, f"{n.op_type} of rank {len(_static(n))} (the bits take a fifth axis)")
    bits, signed = _BITWISE_TYPES[x.dtype.short]
    pw = np.asarray([1 << k for k in range(bits - 1 if signed else bits)], np.int32)

    def split(v):
        return mb.mod(x=mb.floor_div(x=mb.expand_dims(x=v, axes=[-1]), y=pw), y=np.int32(2))

    xs, ys = (b.get(v) for v in n.inputs)
    xb, yb = split(xs), split(ys)
    z = {
        "BitwiseAnd": lambda: mb.mul(x=xb, y=yb),
        "BitwiseOr": lambda: mb.maximum(x=xb, y=yb),
        "BitwiseXor": lambda: mb.mod(x=mb.add(x=xb, y=yb), y=np.int32(2)),
    }[n.op_type]()
    y = mb.reduce_sum(x=mb.mul(x=z, y=pw), axes=[-1], keep_dims=False)
    if not signed:
        return y
    sx, sy = mb.less(x=xs, y=np.int32(0)), mb.less(x=ys, y=np.int32(0))
    s = {"BitwiseAnd": mb.logical_and, "BitwiseOr": mb.logical_or, "BitwiseXor": mb.logical_xor}[n.op_type](x=sx, y=sy)
    return mb.add(x=y, y=mb.mul(x=mb.cast(x=s, dtype="int32"), y=np.int32(-(1 << (bits - 1)))))


@lowering("Shrink")
def _shrink(b, n):
    """x < -lambd: x + bias; x > lambd: x - bias; else 0 (bias and lambd cast to x's type, as CastLike does)."""
    mb, x = b.mb, n.inputs[0]
    if x.dtype.short == "bool" or x.dtype.short.startswith("u"):
        _refuse(n, f"Shrink of {x.dtype.short}")
    lam, bias = float(n.attr("lambd", 0.5)), float(n.attr("bias", 0.0))
    xv = b.get(x)
    c = (lambda v: b.const(v, x)) if x.dtype.is_float else (lambda v: np.int32(np.trunc(v)))
    inner = mb.select(cond=mb.greater(x=xv, y=c(lam)), a=mb.sub(x=xv, y=c(bias)), b=np.zeros(_static(n), np_compute(x)))
    return mb.select(cond=mb.less(x=xv, y=c(-lam) if x.dtype.is_float else -c(lam)), a=mb.add(x=xv, y=c(bias)), b=inner)


# Ops whose lowering refuses some variants: the variant's check, which raises UnsupportedError naming it. The
# target declines such nodes (Target.accepts_node), so the decompose pass rewrites them where it can.
_VARIANTS = {"Resize": _resize_plan, "MaxPool": _pool_plan, "AveragePool": _pool_plan, "LpPool": _pool_plan}


def variant_problem(n: Node) -> str | None:
    """Why the coreml lowering of ``n`` would refuse it (None: it lowers ``n``, as far as a node's attributes,
    static shapes and constant inputs tell before building)."""
    check = _VARIANTS.get(n.qualified_op)
    if check is None:
        return None
    try:
        check(n)
    except UnsupportedError as e:
        return str(e)
    return None
