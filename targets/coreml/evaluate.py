"""A small numpy evaluator of the MIL programs the coreml target emits (check (b) off macOS).

It reads the saved ``.mlpackage`` back (``skip_model_load=True``; no Core ML runtime exists on Linux),
decodes every constexpr weight with coremltools' own ``materialized_val_inference``, and runs the ops in
float32, rounding each fp16 result to fp16 as the package's compute type stores it. Only the ops edgec
emits are implemented; anything else is an error naming the op.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...errors import UnsupportedError


def load_program(path: str):
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto import load as milproto
    m = ct.models.MLModel(path, skip_model_load=True)
    spec = m.get_spec()
    return milproto.load(spec, specification_version=spec.specificationVersion, file_weights_dir=m.weights_dir)


def _pad(x: np.ndarray, pad: list[int], value: float) -> np.ndarray:
    (t, b), (l_, r) = pad[0:2], pad[2:4]
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l_, r)), constant_values=value)


def _conv(x, w, bias, strides, pad, dilations, groups):
    x = _pad(x.astype(np.float32), pad, 0.0)
    n, c, _, _ = x.shape
    o, ipg, kh, kw = w.shape
    dh, dw = dilations
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = sliding_window_view(x, (eh, ew), axis=(2, 3))[:, :, ::strides[0], ::strides[1], ::dh, ::dw]
    out = []
    for g in range(groups):
        xs = win[:, g * ipg:(g + 1) * ipg]
        ws = w[g * (o // groups):(g + 1) * (o // groups)].astype(np.float32)
        out.append(np.einsum("nchwij,ocij->nohw", xs, ws, optimize=True))
    y = np.concatenate(out, axis=1)
    if bias is not None:
        y = y + bias.astype(np.float32).reshape(1, -1, 1, 1)
    return y


def _pool(x, kernel, strides, pad, ceil_mode, kind, exclude_pad=True):
    x = x.astype(np.float32)
    fill = -np.inf if kind == "max" else 0.0
    if ceil_mode:  # extra bottom/right padding so partial windows at the end are kept
        for ax, (k, s, p0, p1) in enumerate(zip(kernel, strides, pad[0::2], pad[1::2])):
            size = x.shape[2 + ax] + p0 + p1
            extra = (-(size - k) % s) if (size - k) % s else 0
            pad = list(pad)
            pad[2 * ax + 1] += extra
    xp = _pad(x, pad, fill)
    win = sliding_window_view(xp, tuple(kernel), axis=(2, 3))[:, :, ::strides[0], ::strides[1]]
    if kind == "max":
        return win.max(axis=(-2, -1))
    ones = _pad(np.ones_like(x[:1, :1]), pad, 0.0)
    cnt = sliding_window_view(ones, tuple(kernel), axis=(2, 3))[:, :, ::strides[0], ::strides[1]].sum(axis=(-2, -1))
    return win.sum(axis=(-2, -1)) / (cnt if exclude_pad else float(np.prod(kernel)))


def constexpr_value(op):
    """A constexpr op's decoded value, by coremltools' own decoder (a tuple for the two-output sparse ops)."""
    return op.materialized_val_inference()


def _erf(x):
    from scipy.special import erf
    return erf(x)


def _gelu(x, mode):
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _f32(a):
    return np.asarray(a).astype(np.float32) if np.asarray(a).dtype.kind == "f" else np.asarray(a)


def _sdpa(q, k, v, mask):
    s = q @ np.swapaxes(k, -1, -2) / np.float32(np.sqrt(q.shape[-1]))
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
    return _softmax(s, -1) @ v


_BINARY = {"add": np.add, "mul": np.multiply, "sub": np.subtract, "real_div": np.divide, "pow": np.power,
           "maximum": np.maximum, "minimum": np.minimum, "floor_div": np.floor_divide, "equal": np.equal,
           "less": np.less, "greater": np.greater, "less_equal": np.less_equal, "greater_equal": np.greater_equal,
           "logical_and": np.logical_and, "logical_or": np.logical_or}
_UNARY = {"relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "tanh": np.tanh,
          "exp": np.exp, "sqrt": np.sqrt, "erf": _erf, "abs": np.abs, "logical_not": np.logical_not,
          "silu": lambda x: x / (1.0 + np.exp(-x))}  # silu: coremltools fuses mul(x, sigmoid(x))
_REDUCE = {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min}


def _eval(t: str, a: dict, op):
    """One MIL op in float32 (the caller rounds to the op's declared output type)."""
    if t in _BINARY:
        return _BINARY[t](_f32(a["x"]), _f32(a["y"]))
    if t in _UNARY:
        return _UNARY[t](_f32(a["x"]))
    if t in _REDUCE:
        return _REDUCE[t](_f32(a["x"]), axis=tuple(int(i) for i in a["axes"]), keepdims=bool(a["keep_dims"]))
    if t == "cast":
        return np.asarray(a["x"]).astype({"fp16": np.float16, "fp32": np.float32, "int32": np.int32,
                                          "bool": bool}[str(a["dtype"])])
    if t == "conv":
        return _conv(a["x"], a["weight"], a.get("bias"), list(a["strides"]), list(a["pad"]), list(a["dilations"]),
                     int(a["groups"]))
    if t == "linear":
        y = _f32(a["x"]) @ _f32(a["weight"]).T
        return y if a.get("bias") is None else y + _f32(a["bias"])
    if t == "matmul":
        x, y = _f32(a["x"]), _f32(a["y"])
        if bool(a.get("transpose_x", False)):
            x = np.swapaxes(x, -1, -2)
        if bool(a.get("transpose_y", False)):
            y = np.swapaxes(y, -1, -2)
        return x @ y
    if t in ("max_pool", "avg_pool"):
        return _pool(a["x"], list(a["kernel_sizes"]), list(a["strides"]), list(a["pad"]), bool(a["ceil_mode"]),
                     "max" if t == "max_pool" else "avg", bool(a.get("exclude_padding_from_average", True)))
    if t == "reshape":
        return np.asarray(a["x"]).reshape([int(s) for s in a["shape"]])
    if t == "transpose":
        return np.transpose(a["x"], [int(p) for p in a["perm"]])
    if t == "tile":
        return np.tile(a["x"], [int(r) for r in a["reps"]])
    if t == "concat":
        return np.concatenate([np.asarray(v) for v in a["values"]], axis=int(a["axis"]))
    if t == "slice_by_index":
        return np.asarray(a["x"])[tuple(slice(int(b), int(e), int(s)) for b, e, s in
                                        zip(a["begin"], a["end"], a["stride"]))]
    if t == "gather":
        return np.take(a["x"], np.asarray(a["indices"]).astype(np.int64), axis=int(a["axis"]))
    if t == "select":
        return np.where(a["cond"], _f32(a["a"]), _f32(a["b"]))
    if t == "sigmoid_hard":
        return np.clip(float(a["alpha"]) * _f32(a["x"]) + float(a["beta"]), 0.0, 1.0)
    if t == "inverse":
        return 1.0 / (_f32(a["x"]) + float(a["epsilon"]))
    if t == "rsqrt":
        return 1.0 / np.sqrt(_f32(a["x"]) + float(a["epsilon"]))
    if t == "softmax":
        return _softmax(_f32(a["x"]), int(a["axis"]))
    if t == "gelu":
        return _gelu(_f32(a["x"]), str(a["mode"]))
    if t == "layer_norm":
        x = _f32(a["x"])
        axes = tuple(int(i) for i in a["axes"])
        mu = x.mean(axis=axes, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mu) / np.sqrt(var + float(a["epsilon"]))
        if a.get("gamma") is not None:
            y = y * _f32(a["gamma"])
        return y if a.get("beta") is None else y + _f32(a["beta"])
    if t == "scaled_dot_product_attention":
        m = a.get("attn_mask")
        return _sdpa(_f32(a["query"]), _f32(a["key"]), _f32(a["value"]),
                     None if m is None else (m if m.dtype == bool else _f32(m)))
    if t == "resize_nearest_neighbor":
        x = np.asarray(a["x"])
        h, w = int(a["target_size_height"]), int(a["target_size_width"])
        iy = np.floor(np.arange(h) * x.shape[2] / h).astype(int)
        ix = np.floor(np.arange(w) * x.shape[3] / w).astype(int)
        return x[:, :, iy][:, :, :, ix]
    if t == "resize_bilinear":
        return _bilinear(_f32(a["x"]), int(a["target_size_height"]), int(a["target_size_width"]),
                         str(a["sampling_mode"]) == "ALIGN_CORNERS")
    if t == "upsample_bilinear":
        x = _f32(a["x"])
        sh, sw = float(a["scale_factor_height"]), float(a["scale_factor_width"])
        return _bilinear(x, int(np.floor(x.shape[2] * sh)), int(np.floor(x.shape[3] * sw)),
                         bool(a["align_corners"]), (sh, sw))
    raise UnsupportedError(f"the MIL evaluator does not implement {t!r} (op {op.name!r})")


def _bilinear(x, h, w, align, scales=None):
    def coords(n_out, n_in, scale):
        if align:
            src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        else:
            src = np.clip((np.arange(n_out) + 0.5) / (scale or n_out / n_in) - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)
    y0, y1, fy = coords(h, x.shape[2], scales and scales[0])
    x0, x1, fx = coords(w, x.shape[3], scales and scales[1])
    top = x[:, :, y0][:, :, :, x0] * (1 - fx) + x[:, :, y0][:, :, :, x1] * fx
    bot = x[:, :, y1][:, :, :, x0] * (1 - fx) + x[:, :, y1][:, :, :, x1] * fx
    return top * (1 - fy)[:, None] + bot * fy[:, None]


def run(path: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Execute the saved package's ``main`` on ``feeds`` (by input name); outputs in the program's order."""
    from coremltools.converters.mil.mil import types
    prog = load_program(path)
    f = prog.functions["main"]
    env: dict[str, np.ndarray] = {}
    for name in f.inputs:
        if name not in feeds:
            raise UnsupportedError(f"the package's input {name!r} is missing from the feeds")
        env[name] = np.asarray(feeds[name])

    def val(v):
        if v is None:
            return None
        if isinstance(v, (list, tuple)):
            return [val(x) for x in v]
        if v.name in env:
            return env[v.name]
        if v.val is not None:
            return np.asarray(v.val)
        raise UnsupportedError(f"value {v.name!r} has not been computed")

    out_types = {types.fp16: np.float16, types.fp32: np.float32, types.int32: np.int32, types.bool: bool}
    for op in f.operations:
        t = op.op_type
        if t == "const":
            env[op.outputs[0].name] = np.asarray(op.outputs[0].val)
            continue
        if t.startswith("constexpr_"):
            ys = constexpr_value(op)
            ys = ys if isinstance(ys, tuple) else (ys,)
        else:
            ys = (_eval(t, {k: val(v) for k, v in op.inputs.items()}, op),)
        for o, y in zip(op.outputs, ys):
            dt = out_types.get(o.dtype)
            env[o.name] = np.asarray(y).astype(dt) if dt is not None else np.asarray(y)
    return [env[o.name] for o in f.outputs]
