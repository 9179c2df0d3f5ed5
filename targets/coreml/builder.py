"""edgec IR -> a MIL program (coremltools' MIL builder), fp16 compute with fp32 I/O.

Float activations are fp16 throughout, except the mean square of RMSNorm, which is reduced in fp32 (a
decoder's hidden states squared and summed overflow fp16). Integer inputs (token ids, masks) enter as int32,
the one integer type Core ML inputs have.
"""

from __future__ import annotations

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


def opset(deployment: str):
    ct, _, _ = ct_modules()
    return {"ios16": ct.target.iOS16, "ios17": ct.target.iOS17, "ios18": ct.target.iOS18,
            "macos15": ct.target.macOS15}[deployment]


def mil_name(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else "v_" + out


class MILBuilder:
    """Lowers one model inside an ``mb.program`` body."""

    def __init__(self, model: Model, deployment: str):
        self.ct, self.mb, self.types = ct_modules()
        self.model = model
        self.deployment = deployment
        self.ios18 = deployment in ("ios18", "macos15")
        self.weights = WeightEncoder(self.mb, self.types, self.ios18)
        self.env: dict[int, object] = {}
        self.encoded: dict[str, Encoded] = {}  # weight name -> how it was stored

    def get(self, v: Value):
        if id(v) not in self.env:
            if not v.is_const:
                raise KeyError(v.name)
            if isinstance(v.const, QuantizedTensor) or v.dtype.is_float:
                enc = self.weights.encode(v, mil_name(v.name) + "_w")
                if enc.op is not None or v.rank >= 2:
                    self.encoded[v.name] = enc
                self.env[id(v)] = enc.var
            else:
                a = np.asarray(v.const.numpy())
                self.env[id(v)] = a.astype(np.int32) if a.dtype.kind in "iu" else a
        return self.env[id(v)]

    def scalar(self, x: float):
        return np.float16(x)

    def lower(self, args):
        mb = self.mb
        g = self.model.graph
        for v, a in zip(g.inputs, args):
            self.env[id(v)] = mb.cast(x=a, dtype="fp16") if v.dtype.is_float else a
        for n in g:
            fn = LOWERINGS.get(n.qualified_op)
            if fn is None:
                raise UnsupportedError(f"node {n.name!r}: {n.qualified_op} is not supported by the coreml target")
            self.env[id(n.outputs[0])] = fn(self, n)
        outs = []
        for o in g.outputs:
            y = self.get(o)
            outs.append(mb.cast(x=y, dtype="fp32" if o.dtype.is_float else "int32", name=mil_name(o.name)))
        return outs


def _static(n: Node, v: Value | None = None) -> list[int]:
    v = v if v is not None else n.outputs[0]
    if v.static_shape is None:
        raise UnsupportedError(f"node {n.name!r}: the coreml target needs static shapes (fix the input shapes with "
                               "--input-shape)")
    return list(v.static_shape)


def _ints(v: Value) -> list[int]:
    return [int(i) for i in np.asarray(v.const.numpy()).reshape(-1)]


def _pads(n: Node) -> list[int]:
    if n.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedError(f"node {n.name!r}: auto_pad={n.attr('auto_pad')} is not supported")
    p = list(n.attr("pads", [0, 0, 0, 0]))
    k = len(p) // 2
    return [v for i in range(k) for v in (p[i], p[i + k])]  # Core ML: [top, bottom, left, right]


# ---- CNN ops --------------------------------------------------------------------------------------------------
@lowering("Conv")
def _conv(b: MILBuilder, n: Node):
    kw = {"x": b.get(n.inputs[0]), "weight": b.get(n.inputs[1]), "strides": list(n.attr("strides", [1, 1])),
          "dilations": list(n.attr("dilations", [1, 1])), "groups": n.attr("group", 1), "pad_type": "custom",
          "pad": _pads(n)}
    if len(n.inputs) > 2 and n.inputs[2] is not None:
        kw["bias"] = b.get(n.inputs[2])
    return b.mb.conv(**kw)


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
    return b.mb.matmul(x=b.get(n.inputs[0]), y=b.get(n.inputs[1]))


_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Sqrt": "sqrt", "Erf": "erf",
          "Abs": "abs", "Not": "logical_not"}


@lowering(*_UNARY)
def _unary(b, n):
    return getattr(b.mb, _UNARY[n.op_type])(x=b.get(n.inputs[0]))


@lowering("Neg")
def _neg(b, n):
    return b.mb.mul(x=b.get(n.inputs[0]), y=b.scalar(-1.0))


@lowering("Reciprocal")
def _reciprocal(b, n):
    return b.mb.inverse(x=b.get(n.inputs[0]), epsilon=b.scalar(0.0))


@lowering("HardSigmoid")
def _hardsigmoid(b, n):
    return b.mb.sigmoid_hard(x=b.get(n.inputs[0]), alpha=b.scalar(n.attr("alpha", 0.2)),
                             beta=b.scalar(n.attr("beta", 0.5)))


@lowering("HardSwish")
def _hardswish(b, n):
    x = b.get(n.inputs[0])
    return b.mb.mul(x=x, y=b.mb.sigmoid_hard(x=x, alpha=b.scalar(1.0 / 6.0), beta=b.scalar(0.5)))


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "real_div", "Pow": "pow", "Max": "maximum",
           "Min": "minimum", "Equal": "equal", "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal",
           "GreaterOrEqual": "greater_equal", "And": "logical_and", "Or": "logical_or"}


@lowering(*_BINARY)
def _binary(b, n):
    x, y = (b.get(v) for v in n.inputs)
    if n.op_type == "Div" and not n.inputs[0].dtype.is_float:
        return b.mb.floor_div(x=x, y=y)  # ONNX truncates: equal for the non-negative ids this sees
    return getattr(b.mb, _BINARY[n.op_type])(x=x, y=y)


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


@lowering("MaxPool", "AveragePool")
def _pool(b, n):
    kw = {"x": b.get(n.inputs[0]), "kernel_sizes": list(n.attr("kernel_shape")),
          "strides": list(n.attr("strides", [1, 1])), "pad_type": "custom", "pad": _pads(n),
          "ceil_mode": bool(n.attr("ceil_mode", 0))}
    if n.op_type == "AveragePool":
        return b.mb.avg_pool(exclude_padding_from_average=not n.attr("count_include_pad", 0), **kw)
    return b.mb.max_pool(**kw)


@lowering("GlobalAveragePool")
def _gap(b, n):
    return b.mb.reduce_mean(x=b.get(n.inputs[0]), axes=[2, 3], keep_dims=True)


@lowering("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce(b, n):
    v = n.inputs[1] if len(n.inputs) > 1 else None
    axes = _ints(v) if v is not None else n.attr("axes")
    fn = getattr(b.mb, "reduce_" + n.op_type[len("Reduce"):].lower())
    return fn(x=b.get(n.inputs[0]), axes=list(axes), keep_dims=bool(n.attr("keepdims", 1)))


@lowering("Softmax")
def _softmax(b, n):
    return b.mb.softmax(x=b.get(n.inputs[0]), axis=n.attr("axis", -1))


@lowering("Resize")
def _resize(b, n):
    mode = n.attr("mode", "nearest")
    out = _static(n)
    x = n.inputs[0]
    if x.rank != 4:
        raise UnsupportedError(f"node {n.name!r}: Resize of rank {x.rank} is not supported (NCHW only)")
    if mode == "nearest":
        return b.mb.resize_nearest_neighbor(x=b.get(x), target_size_height=out[2], target_size_width=out[3])
    if mode == "linear":
        ctm = n.attr("coordinate_transformation_mode", "half_pixel")
        align = ctm == "align_corners"
        scales = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] is not None and n.inputs[2].is_const else None
        if scales is not None and np.asarray(scales.const.numpy()).size == 4 and ctm in ("half_pixel",
                                                                                          "pytorch_half_pixel"):
            # ONNX maps coordinates with the given scale, not out/in: upsample_bilinear does the same.
            sh, sw = (float(f) for f in np.asarray(scales.const.numpy())[2:])
            return b.mb.upsample_bilinear(x=b.get(x), scale_factor_height=sh, scale_factor_width=sw,
                                          align_corners=False, half_pixel_centers=True)
        return b.mb.resize_bilinear(x=b.get(x), target_size_height=out[2], target_size_width=out[3],
                                    sampling_mode="ALIGN_CORNERS" if align else "UNALIGN_CORNERS")
    raise UnsupportedError(f"node {n.name!r}: Resize mode={mode!r} is not supported (nearest, linear)")


# ---- shape ops ---------------------------------------------------------------------------------------------------
@lowering("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def _reshape(b, n):
    return b.mb.reshape(x=b.get(n.inputs[0]), shape=_static(n))


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


@lowering("Slice")
def _slice(b, n):
    x = n.inputs[0]
    shape = _static(n, x)
    if any(v is not None and not v.is_const for v in n.inputs[1:]):
        raise UnsupportedError(f"node {n.name!r}: Slice bounds must be constants")
    starts, ends = _ints(n.inputs[1]), _ints(n.inputs[2])
    axes = _ints(n.inputs[3]) if len(n.inputs) > 3 and n.inputs[3] is not None else list(range(len(starts)))
    steps = _ints(n.inputs[4]) if len(n.inputs) > 4 and n.inputs[4] is not None else [1] * len(starts)
    begin, end, stride = [0] * len(shape), list(shape), [1] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st <= 0:
            raise UnsupportedError(f"node {n.name!r}: Slice with step {st} is not supported")
        a %= len(shape)
        d = shape[a]
        s = min(max(s + d if s < 0 else s, 0), d)
        e = min(max(e + d if e < 0 else e, 0), d)
        begin[a], end[a], stride[a] = s, e, st
    return b.mb.slice_by_index(x=b.get(x), begin=begin, end=end, stride=stride)


@lowering("Gather")
def _gather(b, n):
    idx = n.inputs[1]
    ind = b.get(idx)
    if idx.is_const:
        ind = np.asarray(ind, np.int32)
    x = b.get(n.inputs[0])
    if n.inputs[0].dtype.short == "bool":  # MIL gathers numbers only
        y = b.mb.gather(x=b.mb.cast(x=x, dtype="int32"), indices=ind, axis=n.attr("axis", 0))
        return b.mb.cast(x=y, dtype="bool")
    return b.mb.gather(x=x, indices=ind, axis=n.attr("axis", 0))


@lowering("Cast")
def _cast(b, n):
    from ...ir import DType
    to = DType.from_onnx(n.attr("to"))
    dt = "fp16" if to.is_float else ("bool" if to.short == "bool" else "int32")
    return b.mb.cast(x=b.get(n.inputs[0]), dtype=dt)


# ---- transformer ops ----------------------------------------------------------------------------------------
@lowering("LayerNormalization")
def _layernorm(b, n):
    x = n.inputs[0]
    axis = n.attr("axis", -1) % x.rank
    kw = {"gamma": b.get(n.inputs[1])}
    if len(n.inputs) > 2 and n.inputs[2] is not None:
        kw["beta"] = b.get(n.inputs[2])
    return b.mb.layer_norm(x=b.get(x), axes=list(range(axis, x.rank)), epsilon=_eps16(n.attr("epsilon", 1e-5)),
                           **kw)


def _eps16(eps: float) -> np.float16:
    """An epsilon in fp16 that does not underflow to 0 (BERT's 1e-12 would): at least the smallest subnormal."""
    return np.float16(max(float(eps), 2.0 ** -24))


@lowering("edgec::RMSNorm")
def _rmsnorm(b, n):
    mb = b.mb
    x = mb.cast(x=b.get(n.inputs[0]), dtype="fp32")
    ms = mb.reduce_mean(x=mb.mul(x=x, y=x), axes=[-1], keep_dims=True)
    r = mb.rsqrt(x=ms, epsilon=np.float32(n.attr("epsilon", 1e-5)))
    y = mb.cast(x=mb.mul(x=x, y=r), dtype="fp16")
    return mb.mul(x=y, y=b.get(n.inputs[1]))


@lowering("edgec::Gelu")
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
