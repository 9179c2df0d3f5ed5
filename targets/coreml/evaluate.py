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


def run(path: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
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
        if v.name in env:
            return env[v.name]
        if v.val is not None:
            return np.asarray(v.val)
        raise UnsupportedError(f"value {v.name!r} has not been computed")

    for op in f.operations:
        t = op.op_type
        a = {k: val(v) for k, v in op.inputs.items()}
        if t == "const":
            y = np.asarray(op.outputs[0].val)
        elif t.startswith("constexpr_"):
            y = np.asarray(op.materialized_val_inference())
        elif t == "cast":
            y = a["x"].astype({"fp16": np.float16, "fp32": np.float32}[str(a["dtype"])])
        elif t == "conv":
            y = _conv(a["x"], a["weight"], a.get("bias"), list(a["strides"]), list(a["pad"]), list(a["dilations"]),
                      int(a["groups"]))
        elif t == "linear":
            y = a["x"].astype(np.float32) @ a["weight"].astype(np.float32).T
            if a.get("bias") is not None:
                y = y + a["bias"].astype(np.float32)
        elif t in ("max_pool", "avg_pool"):
            y = _pool(a["x"], list(a["kernel_sizes"]), list(a["strides"]), list(a["pad"]), bool(a["ceil_mode"]),
                      "max" if t == "max_pool" else "avg", bool(a.get("exclude_padding_from_average", True)))
        elif t in ("reduce_mean", "reduce_sum", "reduce_max"):
            fn = {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max}[t]
            y = fn(a["x"].astype(np.float32), axis=tuple(int(i) for i in a["axes"]), keepdims=bool(a["keep_dims"]))
        elif t == "reshape":
            y = a["x"].reshape([int(s) for s in a["shape"]])
        elif t == "relu":
            y = np.maximum(a["x"], 0)
        elif t == "sigmoid":
            y = 1.0 / (1.0 + np.exp(-a["x"].astype(np.float32)))
        elif t == "tanh":
            y = np.tanh(a["x"].astype(np.float32))
        elif t == "sigmoid_hard":
            y = np.clip(float(a["alpha"]) * a["x"].astype(np.float32) + float(a["beta"]), 0.0, 1.0)
        elif t in ("add", "mul", "sub"):
            fn = {"add": np.add, "mul": np.multiply, "sub": np.subtract}[t]
            y = fn(a["x"].astype(np.float32), a["y"].astype(np.float32))
        else:
            raise UnsupportedError(f"the MIL evaluator does not implement {t!r} (op {op.name!r})")
        out_dt = op.outputs[0].dtype
        if out_dt == types.fp16:
            y = np.asarray(y).astype(np.float16)
        elif out_dt == types.fp32:
            y = np.asarray(y).astype(np.float32)
        env[op.outputs[0].name] = y
    return [env[o.name] for o in f.outputs]
