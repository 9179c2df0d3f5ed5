"""The cpu target: artifacts run on TVM's runtime and match the reference executor; quantized Linear
weights stay packed in the library and are dequantized inside the generated kernel."""

import os

import numpy as np
import pytest

from edgec import ir
from edgec.ir import QuantizedTensor
from edgec.targets.cpu import CpuTarget
from edgec.api.relax import pack_codes

from target_models import VECTOR_CASES, decode_model, linear_model, lowering_zoo, quantize_rtn, vector_tensor

pytest.importorskip("tvm")


def compile_and_run(m: ir.Model, tmp_path, target=None):
    target = target or CpuTarget()
    assert target.check(m) == []
    art = target.emit(m, str(tmp_path), None)
    feeds = ir.random_inputs(m, seed=5)
    got = target.run_artifact(str(tmp_path), feeds, [v.name for v in m.graph.inputs])
    ref = ir.ReferenceExecutor(m).run(feeds)
    return art, got, [ref[o.name] for o in m.graph.outputs]


@pytest.mark.parametrize(
    "bits, symmetric, group",
    [(8, True, None), (8, False, None), (4, True, 32), (4, False, 16), (3, True, 32), (2, False, 64)],
)
def test_quantized_linear_matches_reference(bits, symmetric, group, tmp_path):
    w = np.random.default_rng(bits).standard_normal((48, 64)).astype(np.float32)
    q = quantize_rtn(w, bits, symmetric, group)
    assert q.validate() == []
    m = linear_model(q)
    art, got, ref = compile_and_run(m, tmp_path)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    packed = art.manifest["packed_weights"]["w"]
    # 4-bit and narrower codes are stored two per byte; wider ones one per byte.
    assert packed["codes_per_byte"] == (2 if bits <= 4 else 1)
    assert packed["stored_bytes"] == 48 * 64 // packed["codes_per_byte"]


def _gemv_kernels(m: ir.Model) -> list[str]:
    from edgec.targets.cpu.gemv import CpuBuilder

    return [gv.name_hint for gv in CpuBuilder(m, 16).build().get_global_vars() if gv.name_hint.startswith("gemv_")]


def _affine(w: np.ndarray, bits: int, group: int) -> QuantizedTensor:
    """``code * scale + offset`` codes (the affine scheme, which carries offsets), scales shared by all rows."""
    n, k = w.shape
    wg = w.reshape(n, k // group, group)
    lo = wg.min(-1, keepdims=True)
    scale = np.float32((wg.max() - wg.min()) / ((1 << bits) - 1))
    codes = np.clip(np.round((wg - lo) / scale), 0, (1 << bits) - 1).astype(np.uint8).reshape(n, k)
    return QuantizedTensor(
        codes,
        bits,
        "affine",
        scales=np.full((1, k // group), scale, np.float32),
        offsets=lo[..., 0],
        axis=0,
        group_size=group,
        group_axis=1,
    )


@pytest.mark.parametrize(
    "bits, scheme, group, rows, k",
    [
        (8, "symmetric", None, 1, 96),
        (8, "asymmetric", None, 2, 96),
        (4, "symmetric", 32, 1, 128),
        (4, "asymmetric", 16, 3, 128),
        (4, "symmetric", None, 4, 128),
        (3, "symmetric", 32, 1, 128),
        (2, "asymmetric", 64, 1, 128),
        (4, "affine", 32, 1, 128),
        (4, "symmetric", None, 1, 33),  # an odd K: one code per byte
    ],
)
def test_decode_linear_runs_the_gemv_kernel(bits, scheme, group, rows, k, tmp_path):
    """A weight-only Linear at 1..4 rows runs the hand-scheduled kernel (codes in column tiles, the group's scale,
    zero point and offset applied once per group) and matches the reference within a float matmul's rounding."""
    w = np.random.default_rng(bits + k).standard_normal((48, k)).astype(np.float32)
    q = _affine(w, bits, group) if scheme == "affine" else quantize_rtn(w, bits, scheme == "symmetric", group)
    assert q.validate() == []
    m = linear_model(q, batch=(rows,))
    assert _gemv_kernels(m) == ["gemv_%db_fc" % bits]
    _, got, ref = compile_and_run(m, tmp_path)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)


def test_gemv_kernel_decodes_every_code_exactly(tmp_path):
    """One-hot rows read single weight columns: ``s (c - z) + o`` per element, exactly the dequantized weight (int4
    with the sign bit flipped, grouped scales)."""
    w = np.random.default_rng(3).standard_normal((64, 64)).astype(np.float32)
    q = quantize_rtn(w, 4, True, 16)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (4, 64))
    g.outputs.append(g.op("Linear", [x, g.add_const("w", q)], domain="edgec", name="fc").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    assert _gemv_kernels(m) == ["gemv_4b_fc"]
    CpuTarget().emit(m, str(tmp_path), None)
    deq = q.dequantize()
    for cols in ([0, 1, 2, 3], [16, 31, 32, 63]):
        feed = np.zeros((4, 64), np.float32)
        feed[range(4), cols] = 1.0
        (got,) = CpuTarget().run_artifact(str(tmp_path), {"x": feed}, ["x"])
        np.testing.assert_array_equal(got, deq[:, cols].T)


def test_prefill_rows_keep_the_generic_kernel():
    w = np.random.default_rng(0).standard_normal((48, 64)).astype(np.float32)
    assert _gemv_kernels(linear_model(quantize_rtn(w, 4, True, 32), batch=(5,))) == []


def test_packed_int4_layout_round_trips():
    codes = np.random.default_rng(0).integers(-8, 8, (4, 6)).astype(np.int8)
    q = QuantizedTensor(codes, 4, "symmetric", scales=np.ones((4, 1), np.float32), axis=0)
    packed, per = pack_codes(q)
    assert per == 2 and packed.shape == (4, 3)
    lo = (packed & 0xF).astype(np.int16)
    hi = (packed >> 4).astype(np.int16)
    unpack = np.stack([lo, hi], -1).reshape(4, 6)
    unpack = np.where(unpack >= 8, unpack - 16, unpack)
    np.testing.assert_array_equal(unpack, codes)


def test_library_is_smaller_with_int4_weights(tmp_path):
    w = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 512))
    g.outputs.append(g.op("Linear", [x, g.add_const("w", w)], domain="edgec", name="fc").output)
    fp = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(fp)
    q = linear_model(quantize_rtn(w, 4, True, 32), batch=(1,), bias=False)
    for name, model in (("fp", fp), ("q", q)):
        os.makedirs(tmp_path / name)
        CpuTarget().emit(model, str(tmp_path / name), None)
    fp_size = os.path.getsize(tmp_path / "fp" / "model.so")
    q_size = os.path.getsize(tmp_path / "q" / "model.so")
    # fp32 weights are 1 MiB; int4 codes 128 KiB plus 32 KiB of scales.
    assert q_size < fp_size - 700_000, (fp_size, q_size)


def test_unsupported_quantization_is_reported_before_lowering():
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 8))
    cb = QuantizedTensor(np.zeros((8, 8), np.uint8), 2, "codebook", codebook=np.linspace(-1, 1, 4).astype(np.float32))
    wq = g.add_const("w", cb)
    g.outputs.append(g.op("Linear", [x, wq], domain="edgec", name="fc").output)
    g.outputs.append(g.op("MatMul", [x, g.add_const("w2", quantize_rtn(w, 8, True, None))], name="mm").output)
    problems = CpuTarget().check(ir.Model(g, {"": 17, "edgec": 1}))
    assert any("codebook 2-bit quantization cannot be encoded" in p for p in problems)
    assert any("'w2': quantized weights are carried only as Linear/Conv weights" in p for p in problems)


@pytest.mark.parametrize("case", VECTOR_CASES)
def test_vector_codebooks_gathered_inside_the_matmul_decode_bit_exactly(case, tmp_path):
    """vq weights stay indices + codebooks in the library (the manifest's stored bytes) and the matmul kernel
    gathers each element from the codebook: y = I W^T returns the IR's weight bit for bit."""
    q = vector_tensor(**case)
    m, feeds = decode_model(q)
    t = CpuTarget()
    assert t.check(m) == []
    art = t.emit(m, str(tmp_path), None)
    stored = art.manifest["packed_weights"]["w"]
    assert stored["codebook"] == list(q.codebook.shape) and stored["stored_dtype"] == "uint8"
    assert np.array_equal(t.run_artifact(str(tmp_path), feeds, ["x"])[0], q.dequantize().T)


def test_vector_weights_outside_linear_are_refused():
    g = ir.Graph()  # an embedding table (quantized Gather tables are carried when affine)
    ids = g.add_input("ids", ir.DType.INT64, (1, 5))
    g.outputs.append(g.op("Gather", [g.add_const("w", vector_tensor(shape=(64, 64))), ids], name="emb").output)
    problems = CpuTarget().check(ir.Model(g, {"": 17, "edgec": 1}))
    assert any("'w': vector-quantized weights are carried only as Linear weights" in p for p in problems)


def test_fused_matmul_add_relu_regression(tmp_path):
    """TARGETS.md saw wrong lanes for a fused matmul + add + ReLU at 32-lane vectorization on Hexagon;
    keep the shape as a regression test on every target that lowers it (here the host)."""
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (4, 32))
    w = g.add_const("w", rng.standard_normal((32, 32)).astype(np.float32))
    b = g.add_const("b", rng.standard_normal(32).astype(np.float32))
    h = g.op("Linear", [x, w, b], domain="edgec", name="fc").output
    g.outputs.append(g.op("Relu", [h], name="relu").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    _, got, ref = compile_and_run(m, tmp_path)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)


def test_every_lowering_matches_reference(tmp_path):
    model = lowering_zoo()
    _, got, ref = compile_and_run(model, tmp_path)
    for a_, b_ in zip(got, ref):
        np.testing.assert_allclose(a_, b_, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("schedule", [True, False])
@pytest.mark.parametrize("hw, cout, stride", [(7, 24, 1), (14, 16, 2), (16, 32, 1), (5, 3, 1)])
def test_scheduled_kernels_on_awkward_extents(schedule, hw, cout, stride, tmp_path):
    """Tiled/vectorized schedules must give the same numbers on extents that do not divide the vector
    width, on strided convolutions, and on bool-producing ops (which TVM cannot vectorize)."""
    rng = np.random.default_rng(hw)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 4, hw, hw))
    c = g.op(
        "Conv",
        [x, g.add_const("w", rng.standard_normal((cout, 4, 3, 3)).astype(np.float32))],
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [stride, stride]},
        name="conv",
    ).output
    flat = g.op("Flatten", [c], {"axis": 1}, name="flat").output
    k = cout * ((hw + stride - 1) // stride) ** 2
    y = g.op(
        "Linear", [flat, g.add_const("lw", rng.standard_normal((12, k)).astype(np.float32))], domain="edgec", name="fc"
    ).output
    mask = g.op("Greater", [y, g.add_const("z", np.array(0.0, np.float32))], name="gt").output
    g.outputs += [g.op("Where", [mask, y, g.add_const("m", np.array(-1.0, np.float32))], name="where").output]
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    _, got, ref = compile_and_run(m, tmp_path, CpuTarget(schedule=schedule, mcpu="native"))
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)


def test_schedules_are_really_applied():
    """Guards against schedules silently not applying (which once cost a 60x slowdown unnoticed): the
    matmul kernel must come out parallel, register-tiled (unrolled) and with vectorized stores."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cg

    from edgec.api.relax import RelaxBuilder
    from edgec.targets.cpu.schedule import schedule_pass

    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (16, 64))
    g.outputs.append(
        g.op(
            "Linear",
            [x, g.add_const("w", rng.standard_normal((128, 64)).astype(np.float32))],
            domain="edgec",
            name="fc",
        ).output
    )
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})
    with target:
        mod = tvm.transform.Sequential(cg.legalize_passes(target) + [schedule_pass(target)])(RelaxBuilder(m).build())
    text = "\n".join(f.script() for gv, f in mod.functions.items() if "matmul" in gv.name_hint)
    assert "T.parallel" in text and "T.vectorized" in text and "T.unroll" in text and '"local"' in text


def test_mcpu_native_is_refused_for_cross_compilation():
    from edgec.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="mcpu=native describes this x86_64 machine"):
        CpuTarget(arch="aarch64", mcpu="native").tvm_target()
    assert CpuTarget(mcpu="native").tvm_target().attrs["mcpu"]  # resolved to this machine's CPU name


def _avx512():
    """An AVX-512 x86 target (whatever this machine has): the schedules' tile widths below are for 16-float vectors."""
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "mattr": ["-prefer-256-bit"]})


def _float_linear(rows: int, k: int, n: int) -> ir.Model:
    """x [rows, k] -> Linear with a seeded float32 weight [n, k]."""
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (rows, k))
    w = g.add_const("w", np.random.default_rng(0).standard_normal((n, k)).astype(np.float32))
    g.outputs.append(g.op("Linear", [x, w], domain="edgec", name="fc").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def _scheduled(m: ir.Model, target):
    """The Relax module of ``m`` after the cpu target's layout, legalization and schedule passes."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cg

    from edgec.api.relax import RelaxBuilder
    from edgec.targets.cpu.schedule import layout_passes, schedule_pass

    with target:
        return tvm.transform.Sequential(layout_passes() + cg.legalize_passes(target) + [schedule_pass(target)])(
            RelaxBuilder(m).build()
        )


def test_convolutions_run_in_nhwc_register_tiles(tmp_path):
    """Convolutions are rewritten to NHWC (output channels innermost, the vector axis) with a register tile of
    several output columns x vectors of channels; the model's own NCHW interface and results are unchanged."""

    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 16, 7, 7))
    w = g.add_const("w", rng.standard_normal((64, 16, 3, 3)).astype(np.float32))
    b = g.add_const("b", rng.standard_normal(64).astype(np.float32))
    c = g.op("Conv", [x, w, b], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, name="conv").output
    g.outputs.append(g.op("HardSwish", [c], name="hs").output)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    mod = _scheduled(m, _avx512())
    text = "\n".join(f.script() for gv, f in mod.functions.items() if "conv2d" in gv.name_hint)
    assert "conv2d_nhwc" in text
    # 7 output columns (unrolled rows) x 2 vectors of 16 channels: 14 accumulators (4 vectors would be 28, over
    # MAX_ACCUMULATORS)
    assert "T.unroll(T.int64(7))" in text and "T.unroll(T.int64(32))" in text and '"local"' in text
    _, got, ref = compile_and_run(m, tmp_path)
    assert got[0].shape == (1, 64, 7, 7)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)


def test_matrix_vector_product_is_vectorized_over_contiguous_columns():
    """A batch-1 Linear (one spatial axis once unit loops are dropped) is register-tiled over the weight's
    contiguous output columns, in parallel, not left to a rule that reads the [K, N] weight column by column."""

    m = _float_linear(1, 256, 512)
    mod = _scheduled(m, _avx512())
    text = "\n".join(f.script() for gv, f in mod.functions.items() if "matmul" in gv.name_hint)
    assert "T.parallel(T.int64(8))" in text and "T.unroll(T.int64(64))" in text and '"local"' in text


def test_library_refuses_to_load_on_a_cpu_without_its_vector_extensions(tmp_path):
    """The manifest lists the vector extensions the library was built for; a CPU without one gets a named
    refusal (not SIGILL). The default (mcpu=auto) uses only what this CPU's /proc/cpuinfo shows."""
    import json

    from edgec import compile as compile_model
    from edgec.errors import UnsupportedError
    from edgec.targets.cpu import _host_flags

    src = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "models", "tiny_cnn.onnx")
    out = tmp_path / "a"
    compile_model(src, target="cpu", output=str(out), use_cache=False)
    man = json.loads((out / "manifest.json").read_text())
    need = man["target"]["cpu_features"]
    assert set(need) <= _host_flags()
    portable = tmp_path / "b"
    compile_model(src, target="cpu{mcpu=x86-64}", output=str(portable), use_cache=False)
    assert json.loads((portable / "manifest.json").read_text())["target"]["cpu_features"] == []
    man["target"]["cpu_features"] = need + ["avx10_9000"]
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(UnsupportedError, match=r"avx10_9000, which this CPU lacks; recompile with"):
        CpuTarget().run_artifact(str(out), {"image": np.zeros((1, 3, 32, 32), np.float32)})


def test_constant_weights_are_packed_into_panels_when_compiled(tmp_path):
    """A Linear's constant [K, N] weight is re-laid out into [N / panel, K, panel] panels (the register tile's
    width) by a layout-rewrite kernel that is run on the constant when the model is compiled, not per call;
    a weight whose width is one panel is left alone. The results do not change."""
    import tvm

    from edgec.api.relax import RelaxBuilder
    from edgec.targets.cpu.schedule import kernel_passes

    m = _float_linear(16, 64, 768)
    target = _avx512()
    with target:
        mod = tvm.transform.Sequential(kernel_passes(target))(RelaxBuilder(m).build())
    names = [gv.name_hint for gv in mod.get_global_vars()]
    assert any(n.endswith("_prepacked") for n in names)
    assert not any(n.endswith("_weight_prepack") for n in names)  # folded into the constant, then dropped
    # 8 rows x 3 vectors of 16: panels of 48 columns
    assert "T.int64(16), T.int64(64), T.int64(48)" in mod.script()
    _, got, ref = compile_and_run(m, tmp_path)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)


def test_a_scan_beside_a_packed_matmul_compiles_without_packing(tmp_path):
    """TVM's SplitLayoutRewritePreproc asserts on a module that also holds a kernel written as plain loops
    (CumSum's scan): that module is scheduled again without weight packing instead of failing to compile."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgec import compile as compile_model

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 96)).astype(np.float32), "w")
    ax = numpy_helper.from_array(np.array(1, np.int32), "ax")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("CumSum", ["h", "ax"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 96])],
        [w, ax],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    res = compile_model(str(path), target="cpu", output=str(tmp_path / "out"), use_cache=False, verify=True)
    assert res.manifest["verification"]["passed"]


def test_epilogues_run_on_the_register_tile_and_depthwise_padding_per_tile(tmp_path):
    """A convolution's bias and activation are applied to the accumulator tile before its one store (no
    feature-map-sized intermediate), and a depthwise convolution pads each tile's window where the tile reads it
    instead of in a pass over the whole map. An epilogue that rounds (Floor) stays a pass of its own: the matmul
    kernels are compiled with FMA, which may move a value across an integer. Results are unchanged."""

    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, 32, 14, 14))
    wd = g.add_const("wd", rng.standard_normal((32, 1, 3, 3)).astype(np.float32))
    bd = g.add_const("bd", rng.standard_normal(32).astype(np.float32))
    d = g.op("Conv", [x, wd, bd], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 32}, name="dw").output
    r = g.op("Relu", [d], name="relu").output
    wp = g.add_const("wp", rng.standard_normal((64, 32, 1, 1)).astype(np.float32))
    p = g.op("Conv", [r, wp], {"kernel_shape": [1, 1]}, name="pw").output
    g.outputs.append(g.op("Floor", [p], name="floor").output)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    mod = _scheduled(m, _avx512())
    texts = {gv.name_hint: f.script() for gv, f in mod.functions.items() if "conv2d" in gv.name_hint}
    (dw,) = [t for t in texts.values() if "group_conv2d" in t]
    (pw,) = [t for t in texts.values() if "group_conv2d" not in t]
    # depthwise: the tile's 3 x 9 window padded inside the parallel loop; bias + ReLU on the local accumulators
    assert "T.grid(T.int64(3), T.int64(9))" in dw and "T.parallel" in dw.split('T.sblock("pad_temp")')[0]
    assert "group_conv2d_nhwc_intermediate = " not in dw
    assert "T.max(group_conv2d_nhwc_intermediate_local" in dw
    # pointwise + Floor: the convolution's result is stored, then floored in a pass of its own
    assert "conv2d_nhwc_intermediate = T.sblock_alloc_buffer" in pw and "T.floor(conv2d_nhwc_intermediate[" in pw
    _, got, ref = compile_and_run(m, tmp_path)
    assert np.mean(got[0] == ref[0]) > 0.99  # a sum one rounding from an integer may floor the other way


def test_matmul_columns_no_vector_divides_are_padded_to_whole_tiles(tmp_path):
    """Attention scores over 197 tokens (ViT): the 197 columns are padded to whole tiles (224: two vectors of 16)
    and the rows to a multiple of 8 (200) by pad_einsum, so no element of the register tile is tested; only the
    store of the result is predicated. Results are unchanged."""

    rng = np.random.default_rng(0)
    g = ir.Graph()
    q = g.add_input("q", ir.DType.FLOAT32, (4, 197, 64))
    k = g.add_const("k", rng.standard_normal((4, 64, 197)).astype(np.float32))
    g.outputs.append(g.op("MatMul", [q, k], name="scores").output)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    mod = _scheduled(m, _avx512())
    (text,) = [f.script() for gv, f in mod.functions.items() if "matmul" in gv.name_hint]
    assert "T.int64(200), T.int64(64)" in text and "T.int64(64), T.int64(224)" in text  # the padded operands
    update = text.split('T.sblock("matmul_update")')[1].split("T.sblock(")[0]
    assert "T.where" not in update
    _, got, ref = compile_and_run(m, tmp_path)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["exp", "erf", "_tanh"])
def test_vectorized_exp_erf_tanh_stay_within_six_ulp_and_keep_special_values(name):
    """The cpu target's exp / erf / tanh polynomials (fastmath.py), vectorized as the kernels run them, against
    float64 references: within 6 ulp over [-110, 95] and small magnitudes; inf, -inf, NaN, the values near FLT_MAX
    and the subnormal results exactly as the C library gives them."""
    import math

    import tvm
    from tvm import s_tir, te

    from edgec.targets.cpu import fastmath

    xs = np.concatenate(
        [
            np.linspace(-110, 95, 1 << 16),
            np.random.default_rng(0).standard_normal(1 << 14) * 3,
            np.geomspace(1e-30, 1e-3, 500),
            -np.geomspace(1e-30, 1e-3, 500),
            [np.inf, -np.inf, np.nan, 0.0, 88.7, 88.72, 88.73, -87.5, -100.0, -103.0],
        ]
    ).astype(np.float32)
    x = te.placeholder(xs.shape, "float32", name="x")
    y = te.compute(x.shape, lambda i: getattr(fastmath, name)(x[i]), name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, y]))
    (block,) = sch.get_child_blocks(sch.get_sblock("root"))
    _, inner = sch.split(sch.get_loops(block)[-1], [None, 16])
    sch.vectorize(inner)
    lib = tvm.tirx.build(sch.mod, target=CpuTarget().tvm_target())
    out = tvm.runtime.tensor(np.zeros_like(xs))
    lib["main"](tvm.runtime.tensor(xs), out)
    got = out.numpy()
    ref64 = {"exp": np.exp, "erf": np.vectorize(math.erf), "_tanh": np.tanh}[name](xs.astype(np.float64))
    with np.errstate(over="ignore"):
        ref = ref64.astype(np.float32)  # the correctly rounded float32 result (inf where it overflows)
    finite = np.isfinite(ref) & np.isfinite(xs)
    ulp = np.abs(got[finite] - ref64[finite]) / np.spacing(np.maximum(np.abs(ref[finite]), np.float32(1e-45)))
    assert ulp.max() <= 6.0
    special = ~finite
    np.testing.assert_array_equal(got[special], ref[special])  # NaN compares equal to NaN here
    if name == "exp":
        assert np.isfinite(got[xs == np.float32(88.7)]).all() and got[xs == np.float32(-100.0)][0] > 0


@pytest.mark.parametrize("bits, symmetric", [(4, True), (4, False), (8, True)])
def test_batch1_quantized_matmul_reads_packed_codes_in_vector_tiles(bits, symmetric, tmp_path):
    """A decode-style (batch 1) Linear with packed integer weights: the codes are stored input-major, so the
    register tile loads a vector of output columns' bytes per K step (packed into panels like a float weight),
    decoded in 32-bit lanes (int4: low / high nibble, signed codes stored with the sign bit flipped); results
    within float rounding of the reference's dequantize-then-matmul."""

    w = np.random.default_rng(bits).standard_normal((256, 128)).astype(np.float32)
    m = linear_model(quantize_rtn(w, bits, symmetric, 32 if bits == 4 else None), batch=(1,), bias=False)
    mod = _scheduled(m, _avx512())
    (text,) = [f.script() for gv, f in mod.functions.items() if "qlinear" in gv.name_hint]
    update = text.split('T.sblock("dequant_matmul_update")')[1].split("T.sblock(")[0]
    assert "T.unroll(T.int64(64))" in text.split('T.sblock("dequant_matmul_update")')[0]  # 4 vectors of 16 columns
    assert '"int64", ' not in update.split("T.writes")[-1]  # no 64-bit lanes in the decode
    K = 64 if bits == 4 else 128  # bytes along K
    assert f'T.Buffer((T.int64({K}), T.int64(256)), "{"uint8" if bits == 4 or not symmetric else "int8"}")' in text
    _, got, ref = compile_and_run(m, tmp_path)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)


def test_matmul_stays_tiled_when_its_epilogue_reads_a_later_kernel(tmp_path):
    """BERT's attention scores: MatMul + Where(mask) where the mask's Where is computed after the matmul's loop
    nest, so the Add cannot move into the register tile. The Add stays a pass of its own and the matmul keeps its
    register tile (its schedule used to stop half-way: 5.5 ms -> 0.24 ms for BERT-base's 12x128x128x64)."""

    rng = np.random.default_rng(0)
    g = ir.Graph()
    q = g.add_input("q", ir.DType.FLOAT32, (1, 4, 32, 16))
    mask = g.add_input("mask", ir.DType.BOOL, (1, 1, 32, 32))
    k = g.add_const("k", rng.standard_normal((1, 4, 16, 32)).astype(np.float32))
    s = g.op("MatMul", [q, k], name="scores").output
    zero = g.add_const("zero", np.zeros((), np.float32))
    neg = g.add_const("neg", np.full((), -1e9, np.float32))
    bias = g.op("Where", [mask, zero, neg], name="bias").output
    g.outputs.append(g.op("Add", [s, bias], name="masked").output)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    mod = _scheduled(m, _avx512())
    (text,) = [f.script() for gv, f in mod.functions.items() if "matmul" in gv.name_hint]
    assert 'T.sblock("matmul_update")' in text and "T.unroll(T.int64(8))" in text  # tiled, reduction decomposed
    _, got, ref = compile_and_run(m, tmp_path)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-3)


def test_matmul_rows_no_tile_height_divides_are_padded(tmp_path):
    """197 rows (ViT's tokens) x 96 columns: the columns divide into vectors, the rows into no tile height from 4
    to 8, so the rows are padded to 200 and every tile is whole (the update has no predicate)."""

    m = _float_linear(197, 64, 96)
    mod = _scheduled(m, _avx512())
    (text,) = [f.script() for gv, f in mod.functions.items() if "matmul" in gv.name_hint]
    assert "T.int64(200), T.int64(64)" in text  # the padded rows
    update = text.split('T.sblock("matmul_update")')[1].split("T.sblock(")[0]
    assert "T.where" not in update
    _, got, ref = compile_and_run(m, tmp_path)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)


def test_softmax_sigmoid_tanh_exp_erf_run_as_vectorized_polynomials(tmp_path):
    """The cpu target's fast-math pass (fastmath.py) takes every float32 exp / erf / tanh / sigmoid / softmax before
    legalization: no kernel calls the C library's exp / erf / tanh any more, and the compiled library computes what
    the reference computes."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cg

    from edgec.api.relax import RelaxBuilder
    from edgec.targets.cpu.fastmath import fast_math_pass

    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (4, 37))
    h = g.op("Softmax", [x], {"axis": -1}, name="sm").output
    h = g.op("Add", [g.op("Sigmoid", [x], name="sg").output, h], name="a1").output
    h = g.op("Add", [g.op("Tanh", [x], name="th").output, h], name="a2").output
    h = g.op("Add", [g.op("Erf", [x], name="ef").output, h], name="a3").output
    g.outputs.append(g.op("Exp", [h], name="ex").output)
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    target = CpuTarget().tvm_target()
    with target:
        plain = tvm.transform.Sequential(cg.legalize_passes(target))(RelaxBuilder(m).build()).script()
        fast = tvm.transform.Sequential([fast_math_pass(), *cg.legalize_passes(target)])(
            RelaxBuilder(m).build()
        ).script()
    for call in ("T.exp(", "T.erf(", "T.tanh(", "T.sigmoid("):
        assert call not in fast
    assert "T.exp(" in plain and "T.erf(" in plain  # what the pass replaces
    _, got, ref = compile_and_run(m, tmp_path)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)
