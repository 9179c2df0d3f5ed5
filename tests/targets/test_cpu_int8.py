"""The cpu target's integer kernels (targets/cpu/intops.py): statically quantized int8 Conv / depthwise Conv /
Linear run as int8 x int8 -> int32 (AVX-512 VNNI where the CPU has it) and equal edgec.ir.integer bit for bit."""

import numpy as np
import pytest

pytest.importorskip("tvm")

from edgec import ir  # noqa: E402
from edgec.ir.integer import integer_reference, plan  # noqa: E402
from edgec.ir.passes import PassContext  # noqa: E402
from edgec.targets.cpu import CpuTarget  # noqa: E402

from target_models import compile_static_int8, int8_cnn, int8_mlp, static_int8  # noqa: E402


def _run(model, tmp_path, **opts):
    t = CpuTarget(**opts)
    art = t.emit(model, str(tmp_path), PassContext())
    feeds = ir.random_inputs(model, seed=5)
    got = t.run_artifact(str(tmp_path), feeds, [v.name for v in model.graph.inputs])
    want = integer_reference(model).run(feeds)
    return art, got, [want[o.name] for o in model.graph.outputs]


def _patchify():
    """A ViT-style patch embedding (4x4 stride 4, beyond the Hexagon kernels' strides) and a 1x1 after it."""
    rng = np.random.default_rng(3)
    g = ir.Graph()
    h = g.add_input("x", ir.DType.FLOAT32, (1, 3, 16, 20))
    for i, (cin, cout, k) in enumerate([(3, 32, 4), (32, 16, 1)]):
        w = g.add_const(f"w{i}", (rng.standard_normal((cout, cin, k, k)) * 0.3).astype(np.float32))
        b = g.add_const(f"b{i}", rng.standard_normal(cout).astype(np.float32) * 0.1)
        h = g.op("Conv", [h, w, b], {"kernel_shape": [k, k], "strides": [k, k]}).output
        h = g.op("Relu", [h]).output
    g.outputs.append(h)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    return m


def _conv_then_linear():
    """A Linear over the last (width) axis of a convolution's NCHW output: its input must not be read in NHWC."""
    rng = np.random.default_rng(4)
    g = ir.Graph()
    h = g.add_input("x", ir.DType.FLOAT32, (1, 4, 6, 8))
    w = g.add_const("w0", (rng.standard_normal((8, 4, 1, 1)) * 0.3).astype(np.float32))
    h = g.op("Relu", [g.op("Conv", [h, w], {"kernel_shape": [1, 1]}).output]).output
    lw = g.add_const("w1", (rng.standard_normal((5, 8)) * 0.3).astype(np.float32))
    g.outputs.append(g.op("Linear", [h, lw], domain="edgec").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def _conv_and_linear_share_an_input():
    """One quantized image read by a Conv (codes [H, W, C]) and by a Linear over its width (codes [1, M, K])."""
    rng = np.random.default_rng(5)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 8, 4, 4))
    w = g.add_const("w0", (rng.standard_normal((8, 8, 1, 1)) * 0.3).astype(np.float32))
    g.outputs.append(g.op("Conv", [x, w], {"kernel_shape": [1, 1]}).output)
    lw = g.add_const("w1", (rng.standard_normal((16, 4)) * 0.3).astype(np.float32))
    g.outputs.append(g.op("Linear", [x, lw], domain="edgec").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def _image(cin: int = 3, hw: tuple[int, int] = (19, 37), k: int = 3, stride: int = 2, pad: int = 1):
    """A network input of ``cin`` <= 4 channels into a padded strided convolution (image_codes_kernel: the codes of
    every pixel one word, vector columns and a tail, margins), then a 1x1 one."""
    rng = np.random.default_rng(6)
    g = ir.Graph()
    h = g.add_input("x", ir.DType.FLOAT32, (1, cin, *hw))
    w = g.add_const("w0", (rng.standard_normal((16, cin, k, k)) * 0.3).astype(np.float32))
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4}
    h = g.op("Relu", [g.op("Conv", [h, w], attrs).output]).output
    w = g.add_const("w1", (rng.standard_normal((8, 16, 1, 1)) * 0.3).astype(np.float32))
    g.outputs.append(g.op("Conv", [h, w], {"kernel_shape": [1, 1]}).output)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    return m


MODELS = {
    "image-3-channels-padded-stride-2": (_image, "symmetric", 1, {"conv"}),
    "image-1-channel-uint8": (lambda: _image(1, (17, 40), 3, 1, 1), "asymmetric", 1, {"conv"}),
    "image-4-channels-unread-columns": (lambda: _image(4, (9, 34), 1, 2, 0), "symmetric", 1, {"conv"}),
    "conv-and-linear-share-an-input": (_conv_and_linear_share_an_input, "asymmetric", 0, {"conv", "linear"}),
    "conv-then-linear-over-width": (_conv_then_linear, "symmetric", 0, {"conv", "linear"}),
    "patchify-stride-4": (_patchify, "symmetric", 1, {"conv"}),
    "cnn": (lambda: int8_cnn(), "symmetric", 2, {"conv"}),
    "cnn-dw-clip-uint8": (lambda: int8_cnn(depthwise=True, clip=True), "asymmetric", 3, {"conv", "dwconv"}),
    "cnn-6-channels": (lambda: int8_cnn(odd_channels=True), "symmetric", 2, {"conv"}),
    "mlp": (int8_mlp, "symmetric", 2, {"linear"}),
    "mlp-11-rows-uint8": (lambda: int8_mlp(rows=(1, 11)), "asymmetric", 2, {"linear"}),  # rows padded to a tile
    "mlp-1-row": (lambda: int8_mlp(rows=(1,)), "symmetric", 2, {"linear"}),  # decode: one row
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("mcpu", ["auto", "x86-64-v3"])
def test_static_int8_models_are_bit_exact(name, mcpu, tmp_path):
    """Chains of integer kernels (requantizing into each other through Relu / Clip(0, 6); int8 or uint8
    activations; stride 2; depthwise; 11-pixel rows and 11-row Linears computed in whole tiles; a 6-channel
    output that dequantizes instead) equal the integer reference bit for bit, with VNNI (auto, where this CPU has
    it) and without (x86-64-v3: AVX2, the plain int32 vector form)."""
    make, scheme, fused, kinds = MODELS[name]
    m = static_int8(make(), scheme)
    ops = plan(m)
    assert {c.kind for c in ops.values()} == kinds
    assert sum(c.fused is not None for c in ops.values()) == fused
    _, got, want = _run(m, tmp_path, mcpu=mcpu)
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape
        np.testing.assert_array_equal(g_, w_)


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith("image")])
def test_image_inputs_are_quantized_by_one_kernel(name):
    """A graph input of <= 4 channels is quantized from its float value (QuantizeLinear's division, its fake_quant
    left dead) by image_codes_kernel, padding included: no separate quantize / pad kernels."""
    from edgec.targets.cpu.intops import IntBuilder

    make, scheme, _, _ = MODELS[name]
    m = static_int8(make(), scheme)
    names = [gv.name_hint for gv in IntBuilder(m, plan(m), vnni=False, lanes=16).build().get_global_vars()]
    assert [n for n in names if n.startswith("image_codes")] == ["image_codes_x"]
    assert not [n for n in names if n.startswith(("pad_codes", "quantize_codes"))]


def test_int8_off_simulates_in_float(tmp_path):
    """cpu{int8=false}: the float simulation (the reference executor's QuantizeLinear / DequantizeLinear), no
    integer semantics; the default runs the integer kernels, which differ from it by rounding-boundary steps."""
    from edgec.ir import ReferenceExecutor

    m = static_int8(int8_cnn(depthwise=True))
    assert CpuTarget().integer_semantics() and not CpuTarget(int8=False).integer_semantics()
    feeds = ir.random_inputs(m, seed=5)
    ref = ReferenceExecutor(m).run(feeds)[m.graph.outputs[0].name]
    t = CpuTarget(int8=False)
    t.emit(m, str(tmp_path), PassContext())
    (got,) = t.run_artifact(str(tmp_path), feeds, [v.name for v in m.graph.inputs])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_gemm_kernel_uses_vpdpbusd():
    """The integer matmul kernel built for an AVX-512 VNNI CPU multiplies with vpdpbusd on zmm registers in its
    inner loop; built for AVX2 it has none (and stays exact, above)."""
    import tvm

    from edgec.targets.cpu.intops import Geometry, gemm_kernel

    g = Geometry((10, 10, 32), 8, 8, 3, 3, 1, 8, 64)
    asm = {}
    for mcpu, vnni in (("sapphirerapids", True), ("haswell", False)):
        target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu})
        f = gemm_kernel(g, None, vnni, 4).with_attr("global_symbol", "k")
        asm[mcpu] = tvm.tirx.build(tvm.IRModule({"k": f}), target=target).inspect_source("asm")
    assert "vpdpbusd" in asm["sapphirerapids"] and "zmm" in asm["sapphirerapids"]
    assert "vpdpbusd" not in asm["haswell"]


@pytest.mark.slow
@pytest.mark.parametrize("target, kernels", [("cpu", 4), ("cpu{int8=false}", 0)])
def test_tiny_cnn_static_int8_verifies(tiny_cnn_path, target, kernels, tmp_path):
    """edgec.compile --verify on a static int8 model: the default cpu artifact passes and equals the integer
    reference bit for bit, its integer kernels listed in the manifest; with int8=false, the float simulation."""
    r = compile_static_int8(tiny_cnn_path, target, tmp_path / "a")
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"], v["summary"]
    assert len(r.manifest["target"]["integer_kernels"]) == kernels
    if kernels:
        assert all(o["bit_exact_vs_integer_reference"] for o in v["outputs"]), v["outputs"]
        assert "integer kernels" in r.manifest["target"]["arithmetic"]
    else:
        assert all(o["vs_reference_max_rel_err"] <= 1e-5 for o in v["outputs"]), v["outputs"]
        assert "simulated" in r.manifest["target"]["arithmetic"]


def test_rounding_sensitive_names_float_ops_that_feed_a_quantization():
    """--verify holds an artifact to --tolerance against the integer reference only where every float op between
    its integer layers rounds as IEEE defines (Add, Relu, MaxPool, ...); a Softmax feeding a quantized Linear is
    named, since its last bit differs between implementations and can flip a step."""
    from edgec.ir.integer import rounding_sensitive

    assert rounding_sensitive(static_int8(int8_cnn(depthwise=True, clip=True))) == []
    assert rounding_sensitive(static_int8(int8_mlp())) == []
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 4, 8))
    s = g.op("Softmax", [x], {"axis": -1}, name="soft").output
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    g.outputs.append(g.op("Linear", [s, g.add_const("w", w)], domain="edgec").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    assert rounding_sensitive(static_int8(m)) == ["soft"]


@pytest.mark.parametrize("narrow", [True, False])
def test_requantizing_epilogue_is_the_integer_semantics(narrow):
    """The fixed-point requantization on its own, against edgec.ir.integer's formula in numpy int64, over sums
    over the whole int32 range (both forms: the 32-bit one is used where the sums provably fit in it), multipliers
    from requant_multiplier (shifts 0..31, the tiny multipliers' smaller m included) and saturating clamps."""
    import tvm
    from tvm import te

    from edgec.ir.integer import requant_multiplier
    from edgec.targets.cpu.intops import _epilogue

    rng = np.random.default_rng(7)
    n = 4096
    lim = 1 << 31
    t = np.concatenate([rng.integers(-lim + 1, lim, n - 6), [0, -1, 1, lim - 1, -lim + 1, 65535]]).astype(np.int64)
    M = np.exp(rng.uniform(np.log(1e-12), np.log(0.999), n))
    m, s = requant_multiplier(M)
    rnd = (np.int64(1) << s) >> 1
    zv, lo, hi = 100, 3, 250
    A = te.placeholder((n,), "int32", name="t")
    consts = [te.placeholder((n,), "int32", name=k) for k in ("b", "m", "s", "r")]
    out = te.compute((n,), lambda i: _epilogue(A[i], i, consts, (zv, lo, hi, narrow)), name="q")
    lib = tvm.tirx.build(tvm.IRModule({"main": te.create_prim_func([A, *consts, out])}), target="llvm")
    arrs = [t, np.zeros(n), m, s, rnd]
    args = [tvm.runtime.tensor(np.asarray(a, np.int32)) for a in arrs] + [tvm.runtime.tensor(np.zeros(n, np.uint8))]
    lib["main"](*args)
    want = np.clip((((t * m) >> 16) + rnd >> s) + zv, lo, hi).astype(np.uint8)
    np.testing.assert_array_equal(args[-1].numpy(), want)


def test_a_sum_beyond_int32_is_refused_by_name(tmp_path):
    """A Linear whose byte products can sum past int32 (70000 inputs at full-scale weights) is refused, naming the
    node and cpu{int8=false}, instead of wrapping silently."""
    from edgec.errors import UnsupportedError

    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 70000))
    g.outputs.append(
        g.op("Linear", [x, g.add_const("w", np.ones((16, 70000), np.float32))], domain="edgec", name="wide").output
    )
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    m = static_int8(m)
    with pytest.raises(UnsupportedError, match=r"'wide'.*int32 accumulator.*cpu\{int8=false\}"):
        CpuTarget().emit(m, str(tmp_path), PassContext())


@pytest.mark.parametrize("ow, blocks", [(112, 6), (56, 9), (14, 24), (7, 4), (197, 48), (3, 2)])
def test_register_tiles_fit_the_stack_for_short_reductions(ow, blocks):
    """A short reduction's tile stays under TVM's 1 KiB stack allocation (a larger local buffer is a workspace
    allocated per parallel task); a long one may take up to 28 accumulators. R divides the width where 8..4 has a
    divisor, NB divides the blocks."""
    from edgec.targets.cpu.intops import tile_shape

    for reduction, limit in ((16, 1023), (512, 1023), (4608, 28 * 64)):
        r, nb = tile_shape(ow, blocks, reduction)
        assert r * nb * 16 * 4 <= limit and blocks % nb == 0
        assert ow % r == 0 or not any(ow % d == 0 for d in (8, 7, 6, 5, 4))
