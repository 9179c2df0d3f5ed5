"""The hexagon target's integer HVX kernels (vrmpy, int32 accumulation, fused requantization), their HVX float
kernels for v68/v73, and static int8 models run under qemu-hexagon bit-exactly against edgec.ir.integer."""

import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("tvm")

from edgec import ir  # noqa: E402
from edgec.ir.integer import integer_reference, plan, requant_multiplier  # noqa: E402
from edgec.targets.hexagon import HVX_LIMITS, harness  # noqa: E402
from target_models import compile_static_int8, int8_cnn, int8_mlp, static_int8  # noqa: E402
from edgec.targets.hexagon.qkernels import (
    ConvSpec,
    Layout,
    conv_kernel,
    float_linear_kernel,  # noqa: E402
    from_layout,
    to_layout,
)

if not (shutil.which("clang") and shutil.which("ld.lld")):
    pytest.skip("clang and ld.lld are needed (apt-get install clang lld)", allow_module_level=True)
needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-hexagon") is None, reason="qemu-hexagon is not installed (apt-get install qemu-user)"
)


# ---------------------------------------------------------------------------------------------- kernels alone
def _conv_case(rng, C, H, W, O, K, S, P, dw=False, codes=True):
    """Inputs, spec and the numpy expectation of one integer conv kernel (int8 weights, uint8 codes)."""
    zx = 77
    img = rng.integers(0, 256, (C, H, W), dtype=np.uint8)
    OH, OW = (H + 2 * P - K) // S + 1, (W + 2 * P - K) // S + 1
    src = Layout(C, H, W, p=P)
    src = Layout(C, H, W, p=P, need=src.reads_to(OW, S, K, P))
    wt = rng.integers(-128, 128, (O, 1 if dw else C, K, K), dtype=np.int8)
    pim = np.full((C, H + 2 * P, W + 2 * P), zx, np.int64)
    pim[:, P : P + H, P : P + W] = img
    acc = np.zeros((O, OH, OW), np.int64)
    for kh in range(K):
        for kw in range(K):
            patch = pim[:, kh : kh + S * OH : S, kw : kw + S * OW : S]
            if dw:
                acc += patch[:O] * wt[:, 0, kh, kw, None, None]
            else:
                acc += np.einsum("chw,oc->ohw", patch, wt[:, :, kh, kw].astype(np.int64))
    if dw:
        wp = np.zeros((O, K * K, 4), np.int8)
        wp[np.arange(O), :, np.arange(O) % 4] = wt.reshape(O, K * K)
    else:
        wpad = np.zeros((O, src.c4 * 4, K, K), np.int8)
        wpad[:, :C] = wt
        wp = np.ascontiguousarray(wpad.reshape(O, src.c4, 4, K, K).transpose(0, 3, 4, 1, 2).reshape(O, -1, 4))
    B = rng.integers(-5000, 5000, O).astype(np.int32)
    t = acc + B[:, None, None]
    m, s = requant_multiplier(rng.uniform(1e-4, 0.9, O))
    pi = np.stack([B, m, s, (1 << s) >> 1], 1).astype(np.int32)
    x = to_layout(img, src, zx)
    if codes:
        zo, lo, hi = 100, 100, 250
        dst = Layout(O, OH, OW, p=1)
        spec = ConvSpec("k", src, O, K, K, S, P, P, OH, OW, depthwise=dw, dst=dst, zero=zo, lo=lo, hi=hi)
        p = (t * m[:, None, None]) >> 16
        q = np.clip(((p + pi[:, 3, None, None]) >> s[:, None, None]) + zo, lo, hi).astype(np.uint8)
        return spec, [x, wp, pi], [(tuple(dst.shape), "uint8")], to_layout(q, dst, zo)
    pf = np.stack([rng.random(O).astype(np.float32) * 1e-3, rng.standard_normal(O).astype(np.float32)], 1)
    spec = ConvSpec("k", src, O, K, K, S, P, P, OH, OW, depthwise=dw, float_shape=(1, O, OH, OW))
    y = t.astype(np.float32) * pf[:, 0, None, None] + pf[:, 1, None, None]  # two roundings, as the IR
    return spec, [x, wp, pi, pf], [((1, O, OH, OW), "float32")], y[None]


@needs_qemu
@pytest.mark.parametrize(
    "C, H, W, O, K, S, P, dw, codes",
    [
        (8, 6, 7, 8, 3, 1, 1, False, True),  # 3x3, padding
        (3, 9, 9, 8, 3, 2, 1, False, True),  # 3 input channels (padded to 4), stride 2
        (16, 5, 40, 16, 1, 1, 0, False, True),  # 1x1 over two 32-pixel blocks
        (8, 6, 7, 8, 3, 1, 1, True, True),  # depthwise
        (8, 9, 9, 8, 3, 2, 1, True, True),  # depthwise, stride 2
        (8, 6, 7, 6, 3, 1, 1, False, False),  # float epilogue, 6 channels
        (4, 6, 35, 4, 3, 2, 1, False, False),  # float epilogue, stride 2
    ],
)
def test_int8_kernel_is_bit_exact_under_qemu(C, H, W, O, K, S, P, dw, codes, tmp_path):
    """One kernel run alone: codes (margins included: the next kernel reads them as padding) or float32
    equal numpy's integer arithmetic bit for bit."""
    spec, ins, outs, want = _conv_case(np.random.default_rng(0), C, H, W, O, K, S, P, dw, codes)
    (got,) = harness.run(harness.build(conv_kernel(spec), ins, outs, str(tmp_path)), outs)
    if codes:
        np.testing.assert_array_equal(from_layout(got, spec.dst), from_layout(want, spec.dst))
        rows = slice(None)
        cols = slice(0, 32 + spec.ow + 1)  # left margin, image, right margin
        np.testing.assert_array_equal(got[rows, :, cols], want[rows, :, cols])
    else:
        np.testing.assert_array_equal(got, want)


def test_int8_kernels_use_hvx_multiplies(tmp_path):
    """The assembly of the int8 kernels: vrmpy (4 MACs per int32 lane) in the inner loop, vmpye for the
    fixed-point requantization, per-lane vasr shifts, and no scalar multiply-accumulate loop."""
    import tvm
    from edgec.targets.hexagon import HexagonTarget

    spec, _, _, _ = _conv_case(np.random.default_rng(0), 32, 8, 32, 32, 3, 1, 1)
    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        ex = tvm.compile(
            tvm.IRModule({"k": conv_kernel(spec).with_attr("global_symbol", "k")}), target=HexagonTarget().tvm_target()
        )
    asm = (ex.mod if hasattr(ex, "mod") else ex).inspect_source("asm")
    assert re.search(r"v\d+\.w \+= vrmpy\(v\d+\.ub,r\d+\.b\)", asm), "no vector x scalar vrmpy"
    assert re.search(r"v\d+\.w = vmpye\(v\d+\.w,v\d+\.uh\)", asm), "no vmpye (fixed-point requantize)"
    assert re.search(r"vasr\(v\d+\.w,r\d+\)", asm) or re.search(r"vasr\(v\d+\.w,v\d+\.w\)", asm)
    # two vrmpy issue in one packet somewhere in the inner loop
    packets = re.findall(r"\{([^{}]*)\}", asm)
    assert any(p.count("vrmpy") >= 2 for p in packets)


@needs_qemu
@pytest.mark.parametrize("lanes", [8, 16, 32, 64])
def test_v67_float_matmul_add_relu_vectorized_by_lanes(lanes, tmp_path):
    """Regression: a fused matmul + bias + ReLU vectorized by 32 float lanes once miscompiled on v67 with HVX
    attributes (v67's HVX has no float, so LLVM scalarizes); every lane count must match numpy."""
    rng = np.random.default_rng(lanes)
    m, k, n = 3, 40, 70
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    npad = -(-n // lanes) * lanes
    wt = np.zeros((k, npad), np.float32)
    wt[:, :n] = w.T
    bp = np.zeros(npad, np.float32)
    bp[:n] = b
    outs = [((m, n), "float32")]
    (got,) = harness.run(
        harness.build(float_linear_kernel(m, k, n, lanes, relu=True), [x, wt, bp], outs, str(tmp_path)), outs
    )
    want = np.maximum(x.astype(np.float64) @ w.T.astype(np.float64) + b, 0)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize(
    "arch, pattern",
    [
        ("v68", r"\.qf32 = vmpy\(v\d+\.sf,v\d+\.sf\)"),
        ("v73", r"\.sf = vmpy\(v\d+\.sf,v\d+\.sf\)"),
        ("v75", r"\.sf = vmpy\(v\d+\.sf,v\d+\.sf\)"),
    ],
)
def test_float_kernels_use_hvx_float_on_v68_and_later(arch, pattern):
    """v68: HVX qfloat; v73+: HVX IEEE float. qemu-hexagon 7.2 cannot run them, so check the assembly, and
    run the same TIR on the host to check what it computes."""
    import tvm
    from edgec.targets.hexagon import HexagonTarget

    f = float_linear_kernel(4, 64, 96, relu=True).with_attr("global_symbol", "k")
    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        ex = tvm.compile(tvm.IRModule({"k": f}), target=HexagonTarget(arch=arch).tvm_target())
    asm = (ex.mod if hasattr(ex, "mod") else ex).inspect_source("asm")
    assert re.search(pattern, asm), f"no HVX float multiply in the {arch} assembly"
    assert "sfmpy" not in asm  # no scalar float multiplies left
    host = tvm.compile(tvm.IRModule({"k": f}), target="llvm")
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((4, 64), (64, 96), (96,)))
    y = np.zeros((4, 96), np.float32)
    arrs = [tvm.runtime.tensor(a) for a in (x, w, b, y)]
    host["k"](*arrs)
    np.testing.assert_allclose(arrs[3].numpy(), np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "arch, pattern", [("v68", r"\.qf32 = vmpy\(v\d+\.sf,v\d+\.sf\)"), ("v73", r"\.sf = vmpy\(v\d+\.sf,v\d+\.sf\)")]
)
def test_float_models_on_v68_and_v73_use_hvx_float_linear(arch, pattern, tmp_path):
    """Float models compiled for v68 / v73 (compile-only here): their Linear and Conv layers become HVX float
    kernels, seen in the artifact's kernels.s."""
    from edgec.ir.passes import PassContext
    from edgec.targets.hexagon import HexagonTarget

    m = int8_mlp()
    (tmp_path / "mlp").mkdir()
    (tmp_path / "cnn").mkdir()
    art = HexagonTarget(arch=arch, asm=True).emit(m, str(tmp_path / "mlp"), PassContext())
    assert len(art.manifest["hvx_float_kernels"]) == 3 and art.manifest["integer_kernels"] == []
    assert re.search(pattern, (tmp_path / "mlp" / "kernels.s").read_text())
    assert "HVX float kernels" in art.manifest["arithmetic"]
    m = int8_cnn(depthwise=True)
    art = HexagonTarget(arch=arch, asm=True).emit(m, str(tmp_path / "cnn"), PassContext())
    assert len(art.manifest["hvx_float_kernels"]) == 3  # the group-1 convs; the depthwise one stays generic
    assert re.search(pattern, (tmp_path / "cnn" / "kernels.s").read_text())


@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 1), (1, 0)])
def test_float_conv_kernel_computes_the_conv_on_the_host(stride, pad):
    """The v68+ HVX float Conv kernel's TIR, run on the host: equal to numpy's convolution."""
    import tvm
    from edgec.targets.hexagon.qkernels import float_conv_kernel

    rng = np.random.default_rng(stride + pad)
    c, h, w, o, k = 5, 9, 8, 40, 3
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c, k, k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    wp = np.zeros((c, k, k, 64), np.float32)
    wp[..., :o] = wt.transpose(1, 2, 3, 0)
    bp = np.zeros(64, np.float32)
    bp[:o] = b
    f = float_conv_kernel(c, h, w, o, k, k, stride, (pad, pad), oh, ow).with_attr("global_symbol", "k")
    host = tvm.compile(tvm.IRModule({"k": f}), target="llvm")
    arrs = [tvm.runtime.tensor(a) for a in (x, wp, bp, np.zeros((1, o, oh, ow), np.float32))]
    host["k"](*arrs)
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    want = np.stack(
        [
            sum(
                np.einsum(
                    "chw,c->hw", xp[:, a : a + stride * oh : stride, d : d + stride * ow : stride], wt[q, :, a, d]
                )
                for a in range(k)
                for d in range(k)
            )
            + b[q]
            for q in range(o)
        ]
    )
    np.testing.assert_allclose(arrs[3].numpy()[0], want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------- whole models
def _run_both(model, tmp_path, **opts):
    from edgec.ir.passes import PassContext
    from edgec.targets.hexagon import HexagonTarget

    t = HexagonTarget(**opts)
    art = t.emit(model, str(tmp_path), PassContext())
    feeds = ir.random_inputs(model, seed=5)
    got = t.run_artifact(str(tmp_path), feeds, [v.name for v in model.graph.inputs])
    want = integer_reference(model, HVX_LIMITS).run(feeds)
    return art, got, [want[o.name] for o in model.graph.outputs]


@needs_qemu
@pytest.mark.parametrize(
    "make, scheme, fused, kinds",
    [
        (lambda: int8_cnn(), "symmetric", 2, {"conv"}),
        (lambda: int8_cnn(depthwise=True, clip=True), "asymmetric", 3, {"conv", "dwconv"}),
        (lambda: int8_cnn(odd_channels=True), "symmetric", 2, {"conv"}),
        (int8_mlp, "symmetric", 2, {"linear"}),
    ],
)
@pytest.mark.slow
def test_static_int8_models_are_bit_exact_under_qemu(make, scheme, fused, kinds, tmp_path):
    """Chains of int8 kernels (requantizing into each other through Relu / Clip(0, 6), int8 or uint8
    activations, stride 2, depthwise, a 6-channel output that dequantizes instead) equal the integer
    reference bit for bit."""
    m = static_int8(make(), scheme)
    ops = plan(m, HVX_LIMITS)
    assert {c.kind for c in ops.values()} == kinds
    assert sum(c.fused is not None for c in ops.values()) == fused
    art, got, want = _run_both(m, tmp_path)
    assert len(art.manifest["integer_kernels"]) == len(ops)
    for g_, w_ in zip(got, want):
        np.testing.assert_array_equal(g_, w_)


@pytest.mark.slow
@needs_qemu
def test_tiny_cnn_static_int8_verifies_bit_exact(tiny_cnn_path, tmp_path):
    r = compile_static_int8(tiny_cnn_path, "hexagon", tmp_path / "a")
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"], v["summary"]
    assert all(o["bit_exact_vs_integer_reference"] for o in v["outputs"]), v["outputs"]
    assert "integer HVX kernels (vrmpy" in r.manifest["target"]["arithmetic"]
    dis = subprocess.run(
        [
            "llvm-objdump" if shutil.which("llvm-objdump") else "llvm-objdump-14",
            "-d",
            "--mattr=+hvxv67,+hvx-length128b",
            str(tmp_path / "a" / "kernels.o"),
        ],
        capture_output=True,
        text=True,
    ).stdout
    assert "vrmpy" in dis


@pytest.mark.slow
@needs_qemu
def test_int8_off_simulates_in_float(tiny_cnn_path, tmp_path):
    """hexagon{int8=false}: the float simulation, as before the integer kernels (same numbers as the
    reference executor, no integer kernels)."""
    r = compile_static_int8(tiny_cnn_path, "hexagon{int8=false}", tmp_path / "a")
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"] and all(o["vs_reference_max_rel_err"] <= 1e-5 for o in v["outputs"]), v
    assert r.manifest["target"]["integer_kernels"] == []
    assert "simulated int8 activations" in r.manifest["target"]["arithmetic"]


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, exact",
    [pytest.param("resnet18", True, marks=pytest.mark.full), ("mobilenetv3-small", True), ("bert", False)],
)
def test_example_models_static_int8_under_qemu(name, exact, tmp_path):
    """The foundation's example models at static int8 on v67: the integer kernels are bit-exact with the
    integer reference; BERT's float softmax / LayerNorm / GELU after them stay within 1e-5."""
    pytest.importorskip("torch")
    from target_models import export_example

    r = compile_static_int8(export_example(name, tmp_path / "m.onnx"), "hexagon", tmp_path / "a")
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"], v["summary"]
    assert len(r.manifest["target"]["integer_kernels"]) >= 4
    for o in v["outputs"]:
        assert o["vs_integer_reference_max_rel_err"] <= 1e-5
        assert o["bit_exact_vs_integer_reference"] or not exact
