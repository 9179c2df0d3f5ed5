"""Small IR models shared by the target tests."""

import warnings

import numpy as np

from edgec import ir
from edgec.ir import QuantizedTensor


def quantize_rtn(w: np.ndarray, bits: int, symmetric: bool, group: int | None) -> QuantizedTensor:
    """A plain RTN grid, enough to exercise the target's encoding (the real passes come with quantization)."""
    n, k = w.shape
    g = group or k
    wg = w.reshape(n, k // g, g)
    if symmetric:
        qmax = (1 << (bits - 1)) - 1
        scale = np.abs(wg).max(-1) / qmax
        codes = np.clip(np.round(wg / scale[..., None]), -qmax - 1, qmax).astype(np.int8)
        zp = None
    else:
        qmax = (1 << bits) - 1
        lo, hi = wg.min(-1), wg.max(-1)
        scale = (hi - lo) / qmax
        zp = np.clip(np.round(-lo / scale), 0, qmax).astype(np.uint8)
        codes = np.clip(np.round(wg / scale[..., None]) + zp[..., None], 0, qmax).astype(np.uint8)
    return QuantizedTensor(
        codes.reshape(n, k),
        bits,
        "symmetric" if symmetric else "asymmetric",
        scales=scale.astype(np.float32),
        zero_points=zp,
        axis=0,
        group_size=group,
        group_axis=1 if group else None,
    )


def linear_model(q: QuantizedTensor, batch=(2, 3), bias=True) -> ir.Model:
    rng = np.random.default_rng(1)
    g = ir.Graph()
    n, k = q.shape
    x = g.add_input("x", ir.DType.FLOAT32, (*batch, k))
    ins = [x, g.add_const("w", q)]
    if bias:
        ins.append(g.add_const("b", rng.standard_normal(n).astype(np.float32)))
    y = g.op("Linear", ins, domain="edgec", name="fc").output
    g.outputs.append(g.op("Relu", [y], name="act").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def lowering_zoo() -> ir.Model:
    """A graph touching the less common lowerings (slice, concat, where, gather, pools, norms, attention)."""
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 4, 8, 8))
    ids = g.add_input("ids", ir.DType.INT64, (1, 6))
    emb = g.add_const("emb", rng.standard_normal((100, 16)).astype(np.float32))
    c = g.op(
        "Conv",
        [
            x,
            g.add_const("cw", rng.standard_normal((8, 4, 3, 3)).astype(np.float32)),
            g.add_const("cb", rng.standard_normal(8).astype(np.float32)),
        ],
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]},
        name="conv",
    ).output
    c = g.op("HardSwish", [c], name="hs").output
    p = g.op("AveragePool", [c], {"kernel_shape": [2, 2], "strides": [2, 2]}, name="avg").output
    m = g.op("MaxPool", [c], {"kernel_shape": [2, 2], "strides": [2, 2]}, name="max").output
    cat = g.op("Concat", [p, m], {"axis": 1}, name="cat").output  # [1,16,4,4]
    sl = g.op(
        "Slice",
        [
            cat,
            g.add_const("st", np.array([1], np.int64)),
            g.add_const("en", np.array([100], np.int64)),
            g.add_const("ax", np.array([1], np.int64)),
        ],
        name="slice",
    ).output  # [1,15,4,4]
    gap = g.op("GlobalAveragePool", [sl], name="gap").output
    flat = g.op("Flatten", [gap], {"axis": 1}, name="flat").output
    e = g.op("Gather", [emb, ids], {"axis": 0}, name="gather").output  # [1,6,16]
    ln = g.op(
        "LayerNormalization",
        [e, g.add_const("lg", np.ones(16, np.float32)), g.add_const("lb", np.zeros(16, np.float32))],
        {"axis": -1, "epsilon": 1e-5},
        name="ln",
    ).output
    r = g.op(
        "RMSNorm",
        [ln, g.add_const("rw", rng.random(16).astype(np.float32))],
        {"epsilon": 1e-6},
        domain="edgec",
        name="rms",
    ).output
    qkv = g.op("Reshape", [r, g.add_const("shp", np.array([1, 6, 2, 8], np.int64))], name="split_heads").output
    t = g.op("Transpose", [qkv], {"perm": [0, 2, 1, 3]}, name="heads").output
    a = g.op("Attention", [t, t, t], {"scale": 0.35}, domain="edgec", name="attn").output
    gl = g.op("Gelu", [a], {"approximate": "tanh"}, domain="edgec", name="gelu").output
    pos = g.op("Greater", [gl, g.add_const("zero", np.array(0.0, np.float32))], name="gt").output
    w = g.op("Where", [pos, gl, g.add_const("neg", np.array(-1.0, np.float32))], name="where").output
    g.outputs += [flat, w]
    model = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(model)
    ir.verify(model, check_shapes=True)
    return model


def export_example(name: str, path) -> str:
    """An example architecture (examples/models) exported to ONNX at ``path`` (opset 17, output "out")."""
    import architectures
    import torch

    mod, ex, names = architectures.build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, ex, str(path), dynamo=False, opset_version=17, input_names=names, output_names=["out"])
    return str(path)


def vector_tensor(shape=(24, 64), dim=2, bits=4, group=32, codebook_bits=16, seed=0, rows=0) -> QuantizedTensor:
    """A random valid vector-quantized weight (codes and codebooks drawn, not fitted; one codebook per ``rows``
    rows, 0: all, and ``group`` columns): enough to check that a target carries the encoding bit for bit (the
    vq pass is tested with the quantization plugins)."""
    from edgec.ir.tensor import pow2_int8

    rng = np.random.default_rng(seed)
    o, k = shape
    cb = rng.standard_normal((o // rows if rows else 1, k // group, 1 << bits, dim)).astype(np.float32)
    cb = (
        pow2_int8(cb)[1]
        if codebook_bits == 8
        else cb.astype(np.float16).astype(np.float32)
        if codebook_bits == 16
        else cb
    )
    codes = rng.integers(0, 1 << bits, (o, k // dim)).astype(np.uint8 if bits <= 8 else np.uint16)
    q = QuantizedTensor(
        codes=codes,
        bits=bits,
        scheme="vector",
        codebook=cb,
        group_size=group,
        group_axis=1,
        vector_dim=dim,
        method="gptvq",
        codebook_bits=codebook_bits if codebook_bits < 32 else None,
    )
    assert q.validate() == [], q.validate()
    return q


VECTOR_CASES = [
    dict(),
    dict(dim=4, bits=8, group=64, codebook_bits=8),
    dict(dim=2, bits=5, group=32, shape=(16, 64)),
    dict(dim=8, bits=3, group=64, codebook_bits=32),
    dict(dim=2, bits=4, group=16, rows=8, codebook_bits=8),
]


def decode_model(q: QuantizedTensor) -> tuple[ir.Model, dict[str, np.ndarray]]:
    """``y = x W^T`` with no bias, and the feed ``x = I``: the output is the weight the artifact decodes,
    exactly (every output element is one product with 1.0 plus exact zeros)."""
    g = ir.Graph()
    n, k = q.shape
    x = g.add_input("x", ir.DType.FLOAT32, (k, k))
    g.outputs.append(g.op("Linear", [x, g.add_const("w", q)], domain="edgec", name="fc").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m, {"x": np.eye(k, dtype=np.float32)}


def static_int8(model, scheme="symmetric"):
    """``model`` with int8 weights and int8 activations calibrated on random inputs (quantize-activations)."""
    from edgec.calibration import load_calibration
    from edgec.host import host
    from edgec.ir.passes import PassContext, PassManager, parse_pipeline
    from edgec.plugins.cleanup import DEFAULT_CLEANUP

    pipe = f"{DEFAULT_CLEANUP},quantize{{bits=8}},quantize-activations{{scheme={scheme}}}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PassManager(parse_pipeline(pipe, host().passes.as_dict())).run(
            model, PassContext(config={"seed": 0}, calibration=load_calibration("random", model, seed=0))
        )
    return model


def int8_cnn(depthwise=False, clip=False, odd_channels=False):
    """Convolutions 3x3 (on a 12x11 image), 3x3 stride 2, optionally depthwise, then 1x1, Relu / Clip between."""
    rng = np.random.default_rng(1)
    g = ir.Graph()
    h = g.add_input("x", ir.DType.FLOAT32, (1, 3, 12, 11))

    def conv(h, cin, cout, k=3, s=1, p=1, group=1):
        w = g.add_const(f"w{len(g)}", (rng.standard_normal((cout, cin // group, k, k)) * 0.3).astype(np.float32))
        b = g.add_const(f"b{len(g)}", rng.standard_normal(cout).astype(np.float32) * 0.1)
        return g.op(
            "Conv", [h, w, b], {"kernel_shape": [k, k], "pads": [p] * 4, "strides": [s, s], "group": group}
        ).output

    h = conv(h, 3, 8)
    h = g.op("Relu", [h]).output
    h = conv(h, 8, 16, s=2)
    if clip:
        h = g.op(
            "Clip", [h, g.add_const("lo", np.array(0, np.float32)), g.add_const("hi", np.array(6, np.float32))]
        ).output
    else:
        h = g.op("Relu", [h]).output
    if depthwise:
        h = conv(h, 16, 16, group=16)
        h = g.op("Relu", [h]).output
    h = conv(h, 16, 6 if odd_channels else 12, k=1, p=0)
    g.outputs.append(g.op("Relu", [h]).output)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    return m


def int8_mlp(rows=(2, 5)):
    """Three Linear layers (Relu between) on a ``rows + (24,)`` input."""
    rng = np.random.default_rng(2)
    g = ir.Graph()
    h = g.add_input("x", ir.DType.FLOAT32, (*rows, 24))
    for i, (k, n) in enumerate([(24, 64), (64, 32), (32, 10)]):
        h = g.op(
            "Linear",
            [
                h,
                g.add_const(f"w{i}", (rng.standard_normal((n, k)) * 0.3).astype(np.float32)),
                g.add_const(f"b{i}", rng.standard_normal(n).astype(np.float32) * 0.1),
            ],
            domain="edgec",
        ).output
        if i < 2:
            h = g.op("Relu", [h]).output
    g.outputs.append(h)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def compile_static_int8(path, target: str, out):
    """``edgec.compile`` of the ONNX file ``path`` for ``target`` with int8 weights and int8 activations calibrated on
    random inputs, verified; the result (its manifest holds the verification)."""
    from edgec.compiler import compile as compile_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile_model(
            str(path), target, "quantize{bits=8},quantize-activations", str(out), calib="random", verify=True
        )
