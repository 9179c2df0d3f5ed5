"""A small numpy evaluator of the MIL programs the coreml target emits (check (b) off macOS).

It reads the saved ``.mlpackage`` back (``skip_model_load=True``; no Core ML runtime exists on Linux),
decodes every constexpr weight with coremltools' own ``materialized_val_inference``, and runs the ops in
float32, rounding each fp16 result to fp16 as the package's compute type stores it. Only the ops edgec
emits are implemented; anything else is an error naming the op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

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
    win = sliding_window_view(x, (eh, ew), axis=(2, 3))[:, :, :: strides[0], :: strides[1], ::dh, ::dw]
    out = []
    for g in range(groups):
        xs = win[:, g * ipg : (g + 1) * ipg]
        ws = w[g * (o // groups) : (g + 1) * (o // groups)].astype(np.float32)
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
    win = sliding_window_view(xp, tuple(kernel), axis=(2, 3))[:, :, :: strides[0], :: strides[1]]
    if kind == "max":
        return win.max(axis=(-2, -1))
    ones = _pad(np.ones_like(x[:1, :1]), pad, 0.0)
    cnt = sliding_window_view(ones, tuple(kernel), axis=(2, 3))[:, :, :: strides[0], :: strides[1]].sum(axis=(-2, -1))
    return win.sum(axis=(-2, -1)) / (cnt if exclude_pad else float(np.prod(kernel)))


def _pool_nd(x, kernel, strides, pad, ceil_mode, kind, exclude_pad=True):
    """Pooling over any number of spatial axes (3-D here), by one strided slice per kernel offset; the same
    windows, padding and ceil_mode rule as :func:`_pool`."""
    import itertools

    x = x.astype(np.float32)
    k = len(kernel)
    pad = [int(v) for v in pad]
    if ceil_mode:
        for ax, (kk, s) in enumerate(zip(kernel, strides)):
            size = x.shape[2 + ax] + pad[2 * ax] + pad[2 * ax + 1]
            pad[2 * ax + 1] += (-(size - kk) % s) if (size - kk) % s else 0
    width = [(0, 0), (0, 0)] + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)]
    xp = np.pad(x, width, constant_values=-np.inf if kind == "max" else 0.0)
    ones = np.pad(np.ones((1, 1) + x.shape[2:], np.float32), width)
    out_sp = [(xp.shape[2 + i] - kernel[i]) // strides[i] + 1 for i in range(k)]
    acc = cnt = None
    for off in itertools.product(*(range(kk) for kk in kernel)):
        sl = (slice(None), slice(None)) + tuple(
            slice(off[i], off[i] + (out_sp[i] - 1) * strides[i] + 1, strides[i]) for i in range(k)
        )
        win = xp[sl]
        if kind == "max":
            acc = win if acc is None else np.maximum(acc, win)
        else:
            acc = win if acc is None else acc + win
            cnt = ones[sl] if cnt is None else cnt + ones[sl]
    if kind == "max":
        return acc
    return acc / (cnt if exclude_pad else float(np.prod(kernel)))


def constexpr_value(op):
    """A constexpr op's decoded value, by coremltools' own decoder (a tuple for the two-output sparse ops)."""
    return op.materialized_val_inference()


def _erf(x):
    from scipy.special import erf

    return erf(x)


def _gelu(x, mode):
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


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


_BINARY = {
    "add": np.add,
    "mul": np.multiply,
    "sub": np.subtract,
    "real_div": np.divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_div": np.floor_divide,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "greater": np.greater,
    "less_equal": np.less_equal,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
    "mod": np.mod,
}
_UNARY: dict[str, Callable[..., Any]]  # (numpy's ufuncs and lambdas)
_UNARY = {
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "erf": _erf,
    "abs": np.abs,
    "logical_not": np.logical_not,
    "silu": lambda x: x / (1.0 + np.exp(-x)),  # silu: coremltools fuses mul(x, sigmoid(x))
    "log": np.log,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,
    "sign": np.sign,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "atanh": np.arctanh,
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "identity": lambda x: x,
    "square": np.square,
    "exp2": np.exp2,
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
}


def _lse(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    y = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return y if keepdims else np.squeeze(y, axis=axis)


_REDUCE: dict[str, Callable[..., Any]]  # (numpy's reductions and lambdas)
_REDUCE = {
    "reduce_mean": np.mean,
    "reduce_sum": np.sum,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis, keepdims=keepdims)),
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis, keepdims=keepdims),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis, keepdims=keepdims)),
    "reduce_log_sum_exp": _lse,
}


def _axes(a, x) -> tuple[int, ...]:
    axes = a.get("axes")
    return tuple(range(np.ndim(x))) if axes is None else tuple(int(i) for i in np.asarray(axes).reshape(-1))


def _conv_nd(x, w, bias, strides, pad, dilations, groups):
    """N-d convolution (1-d, 3-d) by one strided slice per kernel offset."""
    import itertools

    x = x.astype(np.float32)
    k = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)])
    o, ipg = w.shape[:2]
    out_sp = [(x.shape[2 + i] - (w.shape[2 + i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(k)]
    y = np.zeros([x.shape[0], o] + out_sp, np.float32)
    opg = o // groups
    for off in itertools.product(*(range(s) for s in w.shape[2:])):
        sl = tuple(
            slice(off[i] * dilations[i], off[i] * dilations[i] + (out_sp[i] - 1) * strides[i] + 1, strides[i])
            for i in range(k)
        )
        xs = x[(slice(None), slice(None)) + sl]
        for g in range(groups):
            wk = w[(slice(g * opg, (g + 1) * opg), slice(None)) + off].astype(np.float32)
            y[:, g * opg : (g + 1) * opg] += np.einsum("nc...,oc->no...", xs[:, g * ipg : (g + 1) * ipg], wk)
    if bias is not None:
        y = y + bias.astype(np.float32).reshape([1, -1] + [1] * k)
    return y


def _conv_transpose(x, w, strides, dilations, groups):
    """The full transposed convolution (pad_type valid): each input pixel scatters its kernel."""
    import itertools

    x = x.astype(np.float32)
    k = x.ndim - 2
    cin, opg = w.shape[:2]
    ipg = cin // groups
    sp = x.shape[2:]
    out_sp = [(sp[i] - 1) * strides[i] + (w.shape[2 + i] - 1) * dilations[i] + 1 for i in range(k)]
    y = np.zeros([x.shape[0], opg * groups] + out_sp, np.float32)
    for off in itertools.product(*(range(s) for s in w.shape[2:])):
        sl = tuple(
            slice(off[i] * dilations[i], off[i] * dilations[i] + (sp[i] - 1) * strides[i] + 1, strides[i])
            for i in range(k)
        )
        for g in range(groups):
            wk = w[(slice(g * ipg, (g + 1) * ipg), slice(None)) + off].astype(np.float32)
            y[(slice(None), slice(g * opg, (g + 1) * opg)) + sl] += np.einsum(
                "nc...,co->no...", x[:, g * ipg : (g + 1) * ipg], wk
            )
    return y


def _lrn(x, size, alpha, beta, k):
    sq = np.square(x)
    c = x.shape[1]
    half = (size - 1) // 2
    acc = np.zeros_like(sq)
    for i in range(c):
        acc[:, i] = sq[:, max(0, i - half) : min(c, i + half + 1)].sum(axis=1)
    return x / np.power(k + alpha / size * acc, beta)


def _topk(x, k, axis, ascending):
    order = np.argsort(x if ascending else -x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int32)


def _gather_nd(x, idx, batch_dims):
    bshape = x.shape[:batch_dims]
    xb = x.reshape((-1,) + x.shape[batch_dims:])
    ib = idx.reshape((-1,) + idx.shape[batch_dims:])
    out = [xb[b][tuple(np.moveaxis(ib[b], -1, 0))] for b in range(xb.shape[0])]
    return np.stack(out).reshape(bshape + idx.shape[batch_dims:-1] + x.shape[batch_dims + idx.shape[-1] :])


def _one_hot(idx, size, axis, on, off):
    y = np.where(np.expand_dims(idx, -1) == np.arange(size), on, off)
    return np.moveaxis(y, -1, axis if axis >= 0 else idx.ndim + 1 + axis)


def _scatter(data, where, upd, mode):
    y = np.array(data, copy=True)
    if mode == "update":
        y[where] = upd
    elif mode in ("add", "mul", "max", "min"):
        {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}[mode].at(y, where, upd)
    else:
        raise UnsupportedError(f"the MIL evaluator does not implement scatter mode {mode!r}")
    return y


def _elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _eval(t: str, a: dict, op):
    """One MIL op in float32 (the caller rounds to the op's declared output type)."""
    if t == "pow" and np.asarray(a["x"]).dtype.kind in "iu":
        x, y = np.asarray(a["x"]).astype(np.int64), np.asarray(a["y"]).astype(np.int64)
        if (y < 0).any():
            raise UnsupportedError(f"integer pow by a negative exponent ({op.name!r})")
        return np.power(x, y)
    if t in _BINARY:
        return _BINARY[t](_f32(a["x"]), _f32(a["y"]))
    if t in _UNARY:
        return _UNARY[t](_f32(a["x"]))
    if t in _REDUCE:
        x = _f32(a["x"])
        return _REDUCE[t](x, axis=_axes(a, x), keepdims=bool(a.get("keep_dims", False)))
    if t in ("reduce_argmax", "reduce_argmin"):
        x, ax = _f32(a["x"]), int(a.get("axis", -1))
        y = np.argmax(x, axis=ax) if t == "reduce_argmax" else np.argmin(x, axis=ax)
        return np.expand_dims(y, ax) if bool(a.get("keep_dims", False)) else y
    if t == "elu":
        return _elu(_f32(a["x"]), float(a["alpha"]))
    if t == "leaky_relu":
        x = _f32(a["x"])
        return np.where(x >= 0, x, float(a["alpha"]) * x)
    if t == "thresholded_relu":
        x = _f32(a["x"])
        return np.where(x > float(a["alpha"]), x, 0.0)
    if t == "clip":
        return np.clip(_f32(a["x"]), float(a["alpha"]), float(a["beta"]))
    if t == "reverse":
        return np.flip(a["x"], axis=_axes(a, a["x"]))
    if t == "split":
        x, ax = np.asarray(a["x"]), int(a["axis"])
        sizes = a.get("split_sizes")
        if sizes is None:
            sizes = [x.shape[ax] // int(a["num_splits"])] * int(a["num_splits"])
        return tuple(np.split(x, np.cumsum([int(v) for v in sizes])[:-1], axis=ax))
    if t == "topk":
        return _topk(_f32(a["x"]), int(a["k"]), int(a.get("axis", -1)), bool(a.get("ascending", False)))
    if t == "cumsum":
        x, ax = _f32(a["x"]), int(a.get("axis", 0))
        if bool(a.get("reverse", False)):
            x = np.flip(x, ax)
        y = np.cumsum(x, axis=ax)
        if bool(a.get("exclusive", False)):
            y = y - x
        return np.flip(y, ax) if bool(a.get("reverse", False)) else y
    if t == "gather_along_axis":
        return np.take_along_axis(np.asarray(a["x"]), np.asarray(a["indices"]).astype(np.int64), axis=int(a["axis"]))
    if t == "gather_nd":
        return _gather_nd(np.asarray(a["x"]), np.asarray(a["indices"]).astype(np.int64), int(a.get("batch_dims", 0)))
    if t == "pad":
        x, p = _f32(a["x"]), [int(v) for v in a["pad"]]
        k = len(p) // 2
        width = [(0, 0)] * (x.ndim - k) + [(p[2 * i], p[2 * i + 1]) for i in range(k)]
        mode = str(a.get("mode", "constant"))
        if mode == "constant":
            return np.pad(x, width, constant_values=float(a.get("constant_val", 0.0)))
        # cast: numpy's stubs take the mode as a Literal; MIL's pad op has checked it
        return np.pad(x, width, mode=cast(Any, {"replicate": "edge"}.get(mode, mode)))
    if t == "one_hot":
        return _one_hot(
            np.asarray(a["indices"]),
            int(a["one_hot_vector_size"]),
            int(a.get("axis", -1)),
            a.get("on_value", 1.0),
            a.get("off_value", 0.0),
        )
    if t == "batch_norm":
        x = _f32(a["x"])
        sh = [1, -1] + [1] * (x.ndim - 2)
        y = (x - _f32(a["mean"]).reshape(sh)) / np.sqrt(_f32(a["variance"]).reshape(sh) + float(a["epsilon"]))
        if a.get("gamma") is not None:
            y = y * _f32(a["gamma"]).reshape(sh)
        return y if a.get("beta") is None else y + _f32(a["beta"]).reshape(sh)
    if t == "instance_norm":
        x = _f32(a["x"])
        axes = tuple(range(2, x.ndim))
        sh = [1, -1] + [1] * (x.ndim - 2)
        mu = x.mean(axis=axes, keepdims=True)
        y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + float(a["epsilon"]))
        if a.get("gamma") is not None:
            y = y * _f32(a["gamma"]).reshape(sh)
        return y if a.get("beta") is None else y + _f32(a["beta"]).reshape(sh)
    if t == "local_response_norm":
        return _lrn(_f32(a["x"]), int(a["size"]), float(a["alpha"]), float(a["beta"]), float(a["k"]))
    if t == "conv_transpose":
        if str(a.get("pad_type", "valid")) != "valid" and any(int(v) for v in a.get("pad", [0])):
            raise UnsupportedError(
                f"the MIL evaluator implements conv_transpose with pad_type valid only ({op.name!r})"
            )
        k = np.ndim(a["x"]) - 2
        y = _conv_transpose(
            a["x"],
            a["weight"],
            [int(v) for v in a.get("strides", [1] * k)],
            [int(v) for v in a.get("dilations", [1] * k)],
            int(a.get("groups", 1)),
        )
        return y if a.get("bias") is None else y + _f32(a["bias"]).reshape([1, -1] + [1] * k)
    if t == "l2_pool":
        x = _f32(a["x"])
        return np.sqrt(
            _pool(
                x * x,
                list(a["kernel_sizes"]),
                list(a["strides"]),
                list(a["pad"]),
                bool(a.get("ceil_mode", False)),
                "avg",
                False,
            )
            * float(np.prod(list(a["kernel_sizes"])))
        )
    if t == "scatter_along_axis":
        idx = np.asarray(a["indices"]).astype(np.int64)
        ax = int(a.get("axis", 0)) % idx.ndim
        where: list[Any] = list(np.indices(idx.shape))
        where[ax] = np.where(idx < 0, idx + np.shape(a["data"])[ax], idx)
        return _scatter(_f32(a["data"]), tuple(where), _f32(a["updates"]), str(a.get("mode", "add")))
    if t == "scatter_nd":
        idx = np.asarray(a["indices"]).astype(np.int64)
        return _scatter(_f32(a["data"]), tuple(np.moveaxis(idx, -1, 0)), _f32(a["updates"]), str(a.get("mode", "add")))
    if t == "squeeze":
        x = np.asarray(a["x"])
        return np.squeeze(x, axis=_axes(a, x) if a.get("axes") is not None else None)
    if t == "expand_dims":
        x = np.asarray(a["x"])
        for ax in sorted(int(i) % (x.ndim + len(a["axes"])) for i in a["axes"]):
            x = np.expand_dims(x, ax)
        return x
    if t == "prelu":
        x = _f32(a["x"])
        al = _f32(a["alpha"]).reshape([1, -1] + [1] * (x.ndim - 2))
        return np.where(x >= 0, x, al * x)
    if t == "cast":
        return np.asarray(a["x"]).astype(
            {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "bool": bool}[str(a["dtype"])]
        )
    if t == "conv" and np.ndim(a["x"]) != 4:
        k = np.ndim(a["x"]) - 2
        return _conv_nd(
            a["x"],
            a["weight"],
            a.get("bias"),
            [int(v) for v in a["strides"]],
            [int(v) for v in a["pad"]],
            [int(v) for v in a["dilations"]],
            int(a["groups"]),
        )
    if t == "conv":
        return _conv(
            a["x"],
            a["weight"],
            a.get("bias"),
            list(a["strides"]),
            list(a["pad"]),
            list(a["dilations"]),
            int(a["groups"]),
        )
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
    if t in ("max_pool", "avg_pool") and np.ndim(a["x"]) != 4:
        return _pool_nd(
            a["x"],
            [int(v) for v in a["kernel_sizes"]],
            [int(v) for v in a["strides"]],
            list(a["pad"]),
            bool(a["ceil_mode"]),
            "max" if t == "max_pool" else "avg",
            bool(a.get("exclude_padding_from_average", True)),
        )
    if t in ("max_pool", "avg_pool"):
        return _pool(
            a["x"],
            list(a["kernel_sizes"]),
            list(a["strides"]),
            list(a["pad"]),
            bool(a["ceil_mode"]),
            "max" if t == "max_pool" else "avg",
            bool(a.get("exclude_padding_from_average", True)),
        )
    if t == "reshape":
        return np.asarray(a["x"]).reshape([int(s) for s in a["shape"]])
    if t == "transpose":
        return np.transpose(a["x"], [int(p) for p in a["perm"]])
    if t == "tile":
        return np.tile(a["x"], [int(r) for r in a["reps"]])
    if t == "concat":
        return np.concatenate([np.asarray(v) for v in a["values"]], axis=int(a["axis"]))
    if t == "slice_by_index":
        x = np.asarray(a["x"])
        r = x.ndim
        stride = a["stride"] if a.get("stride") is not None else [1] * r
        masks = [a[m] if a.get(m) is not None else [False] * r for m in ("begin_mask", "end_mask", "squeeze_mask")]
        slices = tuple(
            slice(None if bm else int(b), None if em else int(e), int(s))
            for b, e, s, bm, em in zip(a["begin"], a["end"], stride, masks[0], masks[1])
        )
        y = x[slices]
        sq = tuple(i for i, m in enumerate(masks[2]) if m)
        return np.squeeze(y, axis=sq) if sq else y
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
        return _sdpa(
            _f32(a["query"]),
            _f32(a["key"]),
            _f32(a["value"]),
            None if m is None else (m if m.dtype == bool else _f32(m)),
        )
    if t == "resize_nearest_neighbor":
        x = np.asarray(a["x"])
        h, w = int(a["target_size_height"]), int(a["target_size_width"])
        iy = np.floor(np.arange(h) * x.shape[2] / h).astype(int)
        ix = np.floor(np.arange(w) * x.shape[3] / w).astype(int)
        return x[:, :, iy][:, :, :, ix]
    if t == "resize_bilinear":
        mode = str(a["sampling_mode"])
        if mode not in ("ALIGN_CORNERS", "UNALIGN_CORNERS", "DEFAULT"):
            raise UnsupportedError(f"the MIL evaluator does not implement resize_bilinear's {mode} ({op.name!r})")
        return _bilinear(
            _f32(a["x"]),
            int(a["target_size_height"]),
            int(a["target_size_width"]),
            mode == "ALIGN_CORNERS",
            default=mode == "DEFAULT",
        )
    if t == "upsample_bilinear":
        x = _f32(a["x"])
        fh, fw = float(a["scale_factor_height"]), float(a["scale_factor_width"])
        return _bilinear(
            x, int(np.floor(x.shape[2] * fh)), int(np.floor(x.shape[3] * fw)), bool(a["align_corners"]), (fh, fw)
        )
    raise UnsupportedError(f"the MIL evaluator does not implement {t!r} (op {op.name!r})")


def _bilinear(x, h, w, align, scales=None, default=False):
    def coords(n_out, n_in, scale):
        if default:
            src = np.clip(np.arange(n_out) * n_in / n_out, 0, n_in - 1)
        elif align:
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
            y = _eval(t, {k: val(v) for k, v in op.inputs.items()}, op)
            ys = y if isinstance(y, tuple) else (y,)
        for o, y in zip(op.outputs, ys):
            dt = out_types.get(o.dtype)
            env[o.name] = np.asarray(y).astype(dt) if dt is not None else np.asarray(y)
    return [env[o.name] for o in f.outputs]
