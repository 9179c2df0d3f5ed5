"""The hexagon target: float models through TVM's Hexagon codegen, a generated driver and
freestanding runtime, linked with ld.lld and run under qemu-hexagon (v67)."""

import os
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("tvm")

from edgec import ir  # noqa: E402
from edgec.errors import UnsupportedError  # noqa: E402
from edgec.ir.passes import PassContext  # noqa: E402
from edgec.targets.hexagon import HexagonTarget, toolchain  # noqa: E402
from edgec.targets.hexagon.planning import PlannedTensor, plan_arena, workspace_bytes  # noqa: E402

if not (shutil.which("clang") and shutil.which("ld.lld")):
    pytest.skip("clang and ld.lld are needed (apt-get install clang lld)", allow_module_level=True)
QEMU = shutil.which("qemu-hexagon")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-hexagon is not installed (apt-get install qemu-user)")


def _mlp(fuse_32_lanes=False):
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (2, 64))
    h = g.op(
        "Linear",
        [
            x,
            g.add_const("w0", rng.standard_normal((32, 64)).astype(np.float32)),
            g.add_const("b0", rng.standard_normal(32).astype(np.float32)),
        ],
        domain="edgec",
        name="fc0",
    ).output
    h = g.op("Relu", [h], name="relu").output
    h = g.op(
        "Linear", [h, g.add_const("w1", rng.standard_normal((10, 32)).astype(np.float32))], domain="edgec", name="fc1"
    ).output
    g.outputs.append(g.op("Softmax", [h], {"axis": -1}, name="sm").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def _emit_run(m, tmp_path, **opts):
    t = HexagonTarget(**opts)
    assert t.check(m) == []
    art = t.emit(m, str(tmp_path), PassContext())
    feeds = ir.random_inputs(m, seed=3)
    got = t.run_artifact(str(tmp_path), feeds, [v.name for v in m.graph.inputs])
    ref = ir.ReferenceExecutor(m).run(feeds)
    return art, got, [ref[o.name] for o in m.graph.outputs]


def test_arena_never_overlaps_live_tensors():
    ts = [
        PlannedTensor(f"t{i}", [n], "float32", "temp", first=a, last=b)
        for i, (n, a, b) in enumerate([(100, 0, 2), (50, 1, 3), (300, 2, 4), (100, 3, 5), (10, 4, 4)])
    ]
    size = plan_arena(ts, align=4)
    for p in ts:
        for q in ts:
            if p is not q and not (p.last < q.first or q.last < p.first):
                assert p.offset + p.nbytes <= q.offset or q.offset + q.nbytes <= p.offset
    assert size < sum(t.nbytes for t in ts)  # reuse happened


@needs_qemu
def test_mlp_runs_under_qemu_within_1e5(tmp_path):
    art, got, ref = _emit_run(_mlp(), tmp_path)
    assert np.abs(got[0] - ref[0]).max() <= 1e-5 * np.abs(ref[0]).max()
    for f in art.files:
        assert os.path.exists(tmp_path / f), f
    out = subprocess.run(["file", str(tmp_path / "runner")], capture_output=True, text=True).stdout
    assert "QUALCOMM DSP6" in out and "statically linked" in out
    # No DWARF from TVM's codegen: it pointed at lines of edgec's Python, so any edit there changed the artifact.
    for f in ("kernels.o", "libmodel.so", "runner"):
        assert b".debug_" not in (tmp_path / f).read_bytes(), f


@pytest.mark.slow
@needs_qemu
def test_tiny_cnn_runs_under_qemu(tiny_cnn_path, tmp_path):
    from edgec.compiler import compile as compile_model

    r = compile_model(tiny_cnn_path, "hexagon", "", str(tmp_path / "a"), verify=True)
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"], v["summary"]
    assert all(o["vs_reference_max_rel_err"] <= 1e-5 for o in v["outputs"])


@needs_qemu
@pytest.mark.slow
# A sample (CI time): MobileNetV3-Small runs under qemu in test_hexagon_int8's example-model test (static int8,
# its non-Conv layers in float), and the node-suite sample runs single ops on hexagon.
@pytest.mark.parametrize("name", [pytest.param("resnet18", marks=pytest.mark.full), "bert"])
def test_example_models_run_under_qemu_at_fp32(name, tmp_path):
    """The foundation's example models (ResNet-18 blocks, MobileNetV3, a BERT-style encoder with int64 ids and
    a mask) on Hexagon v67, fp32, within 1e-5 of the reference executor."""
    pytest.importorskip("torch")
    from target_models import export_example

    from edgec.compiler import compile as compile_model

    r = compile_model(export_example(name, tmp_path / "m.onnx"), "hexagon", "", str(tmp_path / "a"), verify=True)
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"], v["summary"]
    assert all(o["vs_reference_max_rel_err"] <= 1e-5 for o in v["outputs"]), v["outputs"]
    # intermediate buffers share a static arena planned by liveness: smaller than all of them together
    assert r.manifest["target"]["arena_bytes"] > 0


def test_missing_runtime_symbol_is_a_build_error(tmp_path):
    src = tmp_path / "k.c"
    src.write_text("extern float cbrtf(float); float k(float x) { return cbrtf(x); }\n")
    obj = tmp_path / "k.o"
    subprocess.run(
        ["clang", "--target=hexagon-unknown-linux-musl", "-mcpu=hexagonv67", "-c", str(src), "-o", str(obj)], check=True
    )
    with pytest.raises(UnsupportedError, match="cbrtf"):
        toolchain.check_symbols(toolchain.find_tools(), str(obj), allowed=frozenset({"memset"}), what="the kernels")


def test_v73_is_compile_only(tmp_path):
    m = _mlp()
    t = HexagonTarget(arch="v73")
    art = t.emit(m, str(tmp_path), PassContext())
    assert "compile-only" in art.manifest["verification_runtime"]
    with pytest.raises(NotImplementedError, match="v67 only"):
        t.run_artifact(str(tmp_path), ir.random_inputs(m, seed=0))


@pytest.mark.slow
@needs_qemu
@pytest.mark.parametrize(
    "pipe, max_ratio",
    [("quantize{bits=8}", 0.30), ("quantize{bits=4,group=16,ops=Linear,head_bits=4},quantize{bits=8,ops=Conv}", 0.30)],
)
def test_weight_quantized_models_run_exactly_under_qemu(pipe, max_ratio, tiny_cnn_path, tmp_path):
    """Weight-only quantized models: codes stored packed in the blob, dequantized inside the float kernels,
    matching the IR's exact dequantized weights."""
    from edgec.compiler import compile as compile_model

    f32 = compile_model(tiny_cnn_path, "hexagon", "", str(tmp_path / "f"), verify=False)
    r = compile_model(tiny_cnn_path, "hexagon", pipe, str(tmp_path / "q"), verify=True)
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"] and all(o["vs_reference_max_rel_err"] <= 1e-5 for o in v["outputs"]), v
    assert r.manifest["target"]["weights_bytes"] <= max_ratio * f32.manifest["target"]["weights_bytes"]


@pytest.mark.slow
def test_without_qemu_the_artifact_is_built_and_verify_says_it_did_not_run(tiny_cnn_path, tmp_path, monkeypatch):
    from edgec.compiler import compile as compile_model

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t: None if t == "qemu-hexagon" else real_which(t))
    r = compile_model(tiny_cnn_path, "hexagon", "", str(tmp_path / "a"), verify=True)
    v = r.manifest["verification"]
    assert (
        not v["ran"] and "qemu-hexagon is not installed" in v["summary"] and "apt-get install qemu-user" in v["summary"]
    )
    assert (tmp_path / "a" / "runner").exists()


@pytest.mark.slow
def test_weight_only_int8_resnet18_fits_its_workspace(tmp_path):
    """Weight-only int8 kernels dequantize the weight into TVM workspace (9.4 MB for a 512x512x3x3 conv): the
    static workspace is sized from the kernels' intermediate buffers, not a fixed 1 MiB (the runner failed
    with exit 12 before)."""
    pytest.importorskip("torch")
    from target_models import export_example

    from edgec.compiler import compile as compile_model

    r = compile_model(
        export_example("resnet18", tmp_path / "m.onnx"),
        "hexagon",
        "quantize{bits=8}",
        str(tmp_path / "a"),
        verify=True,
        use_cache=False,
    )
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"], v["summary"]


def _kernel(name, intermediates):
    """A PrimFunc whose root block allocates one buffer per (shape, dtype) of ``intermediates``."""
    from tvm import te

    a = te.placeholder((8,), "float32", name="a")

    def stage(k, shape, dt):  # an intermediate buffer (k's "m") and the output computed from it
        m = te.compute(shape, lambda *i: a[0].astype(dt), name=f"m{k}")
        return te.compute(shape, lambda *i: m(*i), name=f"o{k}")

    outs = [stage(k, shape, dt) for k, (shape, dt) in enumerate(intermediates)]
    return te.create_prim_func([a, *outs]).with_attr("global_symbol", name)


def test_workspace_is_sized_from_the_kernels_tir_buffers():
    """The static workspace is the largest kernel's sum of the global buffers it allocates (each rounded up to
    128 bytes), read from the TIR: a 512x512x3x3 weight dequantized to float32 needs 9.4 MB; at least 1 MiB;
    local buffers (the HVX kernels' accumulators) live on the stack; a symbolic shape is refused."""
    import tvm
    from tvm import te
    from tvm.script import tirx as T

    @T.prim_func
    def stack(a: T.Buffer((8,), "float32")):
        g = T.alloc_buffer((300000,), "float32")
        acc = T.alloc_local((300000,), "float32")
        for i in range(8):
            g[i] = a[i]
            acc[i] = g[i] * T.float32(2)
            a[i] = acc[i]

    big = _kernel("big", [((512, 512, 3, 3), "float32")])
    mixed = _kernel("mixed", [((300000,), "float32"), ((3,), "float16"), ((5,), "bool")])
    assert workspace_bytes(tvm.IRModule({"big": big, "mixed": mixed})) == 512 * 512 * 9 * 4
    assert workspace_bytes(tvm.IRModule({"mixed": mixed})) == 1200000 + 128 + 128
    assert workspace_bytes(tvm.IRModule({"small": _kernel("small", [((3,), "int8")])})) == 1 << 20
    assert workspace_bytes(tvm.IRModule({"stack": stack.with_attr("global_symbol", "stack")})) == 1200000
    n = te.var("n")
    a = te.placeholder((n, 4), "float32", name="a")
    m = te.compute((n, 4), lambda i, j: a[i, j] * 2, name="m")
    sym = te.create_prim_func([a, te.compute((n, 4), lambda i, j: m[i, j] + 1, name="o")])
    with pytest.raises(UnsupportedError, match="kernel sym: buffer m has the symbolic shape"):
        workspace_bytes(tvm.IRModule({"sym": sym.with_attr("global_symbol", "sym")}))


def _ulps(got, want):
    """Distance in float32 ulps between a result and the exact value (float64), at the exact value's scale."""
    want32 = want.astype(np.float32)
    spacing = np.spacing(np.abs(want32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


def _run_c_under_qemu(tmp_path, main_c: str, stdin: bytes) -> bytes:
    """Compile ``main_c`` (which gets ``sys3`` and ``rd(buf, n)``) with runtime.c for v67, run it under
    qemu-hexagon with ``stdin``; its stdout."""
    (tmp_path / "t.c").write_text(
        """
static long sys3(long n, long a, long b, long c) {
  register long r0 __asm__("r0") = a; register long r1 __asm__("r1") = b;
  register long r2 __asm__("r2") = c; register long r6 __asm__("r6") = n;
  __asm__ volatile("trap0(#1)" : "+r"(r0) : "r"(r1), "r"(r2), "r"(r6) : "memory"); return r0; }
static void rd(void *p, long n) { long d = 0; while (d < n) { long g = sys3(63, 0, (long)p + d, n - d);
  if (g <= 0) sys3(93, 9, 0, 0); d += g; } }
"""
        + main_c
    )
    tools = toolchain.find_tools()
    flags = HexagonTarget().cflags(ws_bytes=1024)
    for s, o in (("t.c", "t.o"), (toolchain.RUNTIME_C, "rt.o")):
        toolchain.run([tools["clang"], *flags, "-c", s, "-o", o], "compiling", cwd=str(tmp_path))
    toolchain.run(
        [tools["ld.lld"], "-static", "-e", "_start", "-o", "runner", "t.o", "rt.o"], "linking", cwd=str(tmp_path)
    )
    r = subprocess.run([QEMU, str(tmp_path / "runner")], input=stdin, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


@needs_qemu
def test_runtime_libm_logf_powf_within_1ulp(tmp_path):
    """logf / powf / ceilf / truncf / roundf of runtime.c, compiled for v67 and run under qemu-hexagon on
    inputs that span the float range (subnormals, around 1, negative bases with integer exponents), against
    float64 numpy: within 1 ulp, and IEEE's special cases exact."""
    rng = np.random.default_rng(0)
    xs = np.concatenate(
        [
            rng.uniform(0.5, 2.0, 3000),
            np.exp(rng.uniform(-87, 88, 3000)),
            2.0 ** rng.uniform(-149, -126, 200),
            1 + rng.uniform(-1e-3, 1e-3, 500),
            [1.0, 2.0, 0.0, -0.0, -1.0, np.inf, np.nan, 1e-45],
        ]
    ).astype(np.float32)
    px = np.concatenate(
        [rng.uniform(0, 10, 3000), np.exp(rng.uniform(-20, 20, 2000)), -rng.integers(1, 9, 500).astype(float)]
    ).astype(np.float32)
    py = np.concatenate(
        [rng.uniform(-5, 5, 3000), rng.uniform(-4, 4, 2000), rng.integers(-7, 8, 500).astype(float)]
    ).astype(np.float32)
    special = [
        (0.0, -1.0),
        (-0.0, -1.0),
        (-0.0, 3.0),
        (-2.0, 0.5),
        (-1.0, np.inf),
        (0.5, np.inf),
        (2.0, -np.inf),
        (np.nan, 0.0),
        (1.0, np.nan),
        (-np.inf, 3.0),
        (-np.inf, -3.0),
        (np.inf, -2.0),
        (-8.0, 1 / 3),
    ]
    px = np.concatenate([px, [s[0] for s in special]]).astype(np.float32)
    py = np.concatenate([py, [s[1] for s in special]]).astype(np.float32)
    rx = np.concatenate([rng.uniform(-100, 100, 1000), np.arange(-5, 5.5, 0.5), [-0.0, 1e30, -1e30]]).astype(np.float32)
    n, m, k = len(xs), len(px), len(rx)
    out = _run_c_under_qemu(
        tmp_path,
        f"""
float logf(float); float powf(float, float); float ceilf(float); float truncf(float); float roundf(float);
static float x[{n}], a[{m}], b[{m}], r[{k}], out[{n + m + 3 * k}];
void _start(void) {{
  rd(x, sizeof x); rd(a, sizeof a); rd(b, sizeof b); rd(r, sizeof r);
  for (int i = 0; i < {n}; i++) out[i] = logf(x[i]);
  for (int i = 0; i < {m}; i++) out[{n} + i] = powf(a[i], b[i]);
  for (int i = 0; i < {k}; i++) {{ out[{n + m} + 3 * i] = ceilf(r[i]); out[{n + m} + 3 * i + 1] = truncf(r[i]);
    out[{n + m} + 3 * i + 2] = roundf(r[i]); }}
  sys3(64, 1, (long)out, sizeof out); sys3(93, 0, 0, 0); for (;;) {{}} }}
""",
        xs.tobytes() + px.tobytes() + py.tobytes() + rx.tobytes(),
    )
    out = np.frombuffer(out, np.float32)
    log_got, pow_got, rnd = out[:n], out[n : n + m], out[n + m :].reshape(k, 3)
    with np.errstate(all="ignore"):
        log_want = np.log(xs.astype(np.float64))
        pow_want = np.power(px.astype(np.float64), py.astype(np.float64))
    for got, want in ((log_got, log_want), (pow_got, pow_want)):
        finite = np.isfinite(want) & (np.abs(want) < 3.4e38)
        worst = _ulps(got[finite], want[finite]).max()
        assert worst <= 1.0, worst
        np.testing.assert_array_equal(got[~finite], want[~finite].astype(np.float32))
    tail_got, tail_want = pow_got[-len(special) :], pow_want[-len(special) :].astype(np.float32)
    signed = ~np.isnan(tail_want)  # the sign of +-0 and +-inf results; a NaN's sign bit means nothing
    assert np.array_equal(np.signbit(tail_got[signed]), np.signbit(tail_want[signed]))
    np.testing.assert_array_equal(rnd[:, 0], np.ceil(rx))
    np.testing.assert_array_equal(rnd[:, 1], np.trunc(rx))
    np.testing.assert_array_equal(rnd[:, 2], np.where(rx < 0, -np.floor(-rx + 0.5), np.floor(rx + 0.5)))


def _multi_output_model():
    """Several outputs: two kernel results, the input itself, a constant and one result twice (so main
    returns a tuple, and three outputs are copies rather than kernel results)."""
    rng = np.random.default_rng(1)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (3, 8))
    c = g.add_const("c", rng.standard_normal((2, 5)).astype(np.float32))
    r = g.op("Relu", [x], name="relu").output
    s = g.op("Softmax", [r], {"axis": -1}, name="sm").output
    g.outputs.extend([s, r, x, c, s])
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    return m


@needs_qemu
def test_several_outputs_inputs_and_constants_as_outputs_run_under_qemu(tmp_path):
    m = _multi_output_model()
    art, got, ref = _emit_run(m, tmp_path)
    assert len(got) == 5
    for g_, r_ in zip(got, ref):
        np.testing.assert_allclose(g_, r_, rtol=1e-5, atol=1e-7)
    driver = (tmp_path / "model.c").read_text()
    assert driver.count("memcpy(out") == 3  # the input, the constant and the repeated result are copied


@needs_qemu
def test_runtime_libm_double_exp_log_within_2ulp(tmp_path):
    """exp / log in double (float64 models' kernels call them) against numpy: within 2 ulp of float64, over
    the whole range (subnormal arguments and results, overflow, special values)."""
    rng = np.random.default_rng(2)
    ex = np.concatenate(
        [
            rng.uniform(-745, 709.7, 3000),
            rng.uniform(-1, 1, 1000),
            rng.uniform(-745, -700, 200),
            [0.0, -0.0, 710.0, -746.0, np.inf, -np.inf, np.nan],
        ]
    )
    lx = np.concatenate(
        [
            np.exp(rng.uniform(-700, 700, 3000)),
            rng.uniform(0.5, 2, 1000),
            1 + rng.uniform(-1e-6, 1e-6, 200),
            2.0 ** rng.uniform(-1074, -1022, 200),
            [1.0, 0.0, -1.0, np.inf, np.nan, 5e-324],
        ]
    )
    n, m = len(ex), len(lx)
    out = np.frombuffer(
        _run_c_under_qemu(
            tmp_path,
            f"""
double exp(double); double log(double);
static double a[{n}], b[{m}], out[{n + m}];
void _start(void) {{ rd(a, sizeof a); rd(b, sizeof b);
  for (int i = 0; i < {n}; i++) out[i] = exp(a[i]);
  for (int i = 0; i < {m}; i++) out[{n} + i] = log(b[i]);
  sys3(64, 1, (long)out, sizeof out); sys3(93, 0, 0, 0); for (;;) {{}} }}
""",
            ex.tobytes() + lx.tobytes(),
        ),
        np.float64,
    )
    with np.errstate(all="ignore"):
        for got, want in ((out[:n], np.exp(ex)), (out[n:], np.log(lx))):
            ok = np.isfinite(want) & (want != 0)
            worst = (np.abs(got[ok] - want[ok]) / np.spacing(np.abs(want[ok]))).max()
            assert worst <= 2.0, worst
            np.testing.assert_array_equal(got[~ok], want[~ok])


@needs_qemu
def test_runtime_half_conversions_are_bit_exact(tmp_path):
    """float16 <-> float / double conversions of runtime.c: every half value back and forth, and doubles and
    floats rounded to half exactly as numpy rounds them (ties to even, subnormals, overflow to inf)."""
    rng = np.random.default_rng(3)
    halves = np.arange(65536, dtype=np.uint16)
    pos = halves[:0x7C00].view(np.float16).astype(np.float64)  # +0 .. 65504
    d = np.concatenate(
        [
            rng.standard_normal(4000) * 10.0 ** rng.integers(-9, 6, 4000),
            (pos[:-1] + pos[1:])[::5] / 2,
            -(pos[:-1] + pos[1:])[2::5] / 2,  # exact ties
            pos[::7] * (1 + 2.0**-12),
            [np.nan, -np.nan],
            [
                65504.0,
                65519.99,
                65520.0,
                1e300,
                2.0**-25,
                2.0**-25 * 1.0000001,
                2.0**-26,
                5e-324,
                -0.0,
                np.inf,
                -np.inf,
            ],
        ]
    )
    with np.errstate(over="ignore"):
        f = d.astype(np.float32)
    n, m = len(d), 65536
    out = _run_c_under_qemu(
        tmp_path,
        f"""
#include <stdint.h>
uint16_t __truncdfhf2(double); uint16_t __truncsfhf2(float); double __extendhfdf2(uint32_t);
float __extendhfsf2(uint32_t);
static double a[{n}]; static float b[{n}]; static uint16_t h1[{n}], h2[{n}]; static double e1[{m}];
static float e2[{m}];
void _start(void) {{ rd(a, sizeof a); rd(b, sizeof b);
  for (int i = 0; i < {n}; i++) {{ h1[i] = __truncdfhf2(a[i]); h2[i] = __truncsfhf2(b[i]); }}
  for (int i = 0; i < {m}; i++) {{ e1[i] = __extendhfdf2((uint32_t)i); e2[i] = __extendhfsf2((uint32_t)i); }}
  sys3(64, 1, (long)h1, sizeof h1); sys3(64, 1, (long)h2, sizeof h2); sys3(64, 1, (long)e1, sizeof e1);
  sys3(64, 1, (long)e2, sizeof e2); sys3(93, 0, 0, 0); for (;;) {{}} }}
""",
        d.tobytes() + f.tobytes(),
    )
    h1 = np.frombuffer(out[: 2 * n], np.uint16)
    h2 = np.frombuffer(out[2 * n : 4 * n], np.uint16)
    e1 = np.frombuffer(out[4 * n : 4 * n + 8 * m], np.float64)
    e2 = np.frombuffer(out[4 * n + 8 * m :], np.float32)
    num = ~np.isnan(d)  # a NaN must stay a NaN; its payload is not compared
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(h1[num], d[num].astype(np.float16).view(np.uint16))
        np.testing.assert_array_equal(h2[num], f[num].astype(np.float16).view(np.uint16))
    assert np.isnan(h1[~num].view(np.float16)).all() and np.isnan(h2[~num].view(np.float16)).all()
    nan = np.isnan(halves.view(np.float16))
    np.testing.assert_array_equal(e1[~nan], halves.view(np.float16)[~nan].astype(np.float64))
    np.testing.assert_array_equal(e2[~nan], halves.view(np.float16)[~nan].astype(np.float32))
    assert np.isnan(e1[nan]).all() and np.isnan(e2[nan]).all()


@needs_qemu
def test_split_float64_float16_int16_model_runs_under_qemu(tmp_path):
    """A kernel with several results (Split, lowered through TVM's ONNX converter), float64 math (exp / log in
    the runtime), a float16 cast (the runtime's half conversions) and int16 arithmetic, verified against the
    reference executor under qemu-hexagon."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    from edgec.compiler import compile as compile_model

    nodes = [
        h.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),
        h.make_node("Exp", ["a"], ["ea"]),
        h.make_node("Log", ["b"], ["lb"]),
        h.make_node("Cast", ["x"], ["x16"], to=T.FLOAT16),
        h.make_node("Mul", ["i", "i"], ["ii"]),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.DOUBLE, [3, 8]), h.make_tensor_value_info("i", T.INT16, [3, 8])],
        [
            h.make_tensor_value_info(n, t, s)
            for n, t, s in (
                ("ea", T.DOUBLE, [3, 4]),
                ("lb", T.DOUBLE, [3, 4]),
                ("x16", T.FLOAT16, [3, 8]),
                ("ii", T.INT16, [3, 8]),
            )
        ],
    )
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    r = compile_model(str(path), "hexagon", "", str(tmp_path / "a"), verify=True, use_cache=False)
    v = r.manifest["verification"]
    assert v["ran"] and v["passed"], v["summary"]
    assert "Split" in HexagonTarget.capabilities.fallback_ops


@needs_qemu
def test_runtime_trigonometric_and_hyperbolic_within_1ulp(tmp_path):
    """sinf / cosf / tanf (argument reduction for every float up to 3.4e38, near multiples of pi/2 too),
    asinf / acosf / atanf, sinhf / coshf / asinhf / acoshf of runtime.c under qemu-hexagon against float64
    numpy: within 1 ulp (results that overflow float must be inf)."""
    rng = np.random.default_rng(4)
    pio2 = np.pi / 2 * np.arange(-2000, 2000)
    trig = np.concatenate(
        [
            rng.uniform(-10, 10, 2000),
            np.exp(rng.uniform(-20, 88, 2000)) * rng.choice([-1, 1], 2000),
            pio2,
            np.nextafter(pio2.astype(np.float32), np.float32(np.inf)),
            [3.4e38, -1e-30, 0.0, 16777216.0, 1e7, 0.7853982],
        ]
    )
    unit = np.concatenate(
        [
            rng.uniform(-1, 1, 2000),
            1 - 2.0 ** -rng.integers(1, 24, 300),
            -1 + 2.0 ** -rng.integers(1, 24, 300),
            [1.0, -1.0, 0.0, 1e-20, 0.5],
        ]
    )
    wide = np.concatenate(
        [np.exp(rng.uniform(-30, 88, 2000)) * rng.choice([-1, 1], 2000), rng.uniform(-5, 5, 1000), [0.0, 1e-30, 3.4e38]]
    )
    hyp = np.concatenate([rng.uniform(-89.5, 89.5, 2000), rng.uniform(-1, 1, 1000), [0.0, 1e-20, 20.0, 25.0, 89.0]])
    ach = np.concatenate([1 + np.exp(rng.uniform(-20, 5, 2000)), np.exp(rng.uniform(0, 88, 1000)), [1.0, 1.0000001]])
    ins = [a.astype(np.float32) for a in (trig, unit, wide, hyp, ach)]
    plan = [
        ("sinf", 0, np.sin),
        ("cosf", 0, np.cos),
        ("tanf", 0, np.tan),
        ("asinf", 1, np.arcsin),
        ("acosf", 1, np.arccos),
        ("atanf", 2, np.arctan),
        ("sinhf", 3, np.sinh),
        ("coshf", 3, np.cosh),
        ("asinhf", 2, np.arcsinh),
        ("acoshf", 4, np.arccosh),
    ]
    decl = "".join(f"float {f}(float); " for f, _, _ in plan)
    bufs = "".join(f"static float x{i}[{len(a)}];" for i, a in enumerate(ins))
    total = sum(len(ins[i]) for _, i, _ in plan)
    loops, off = [], 0
    for f, i, _ in plan:
        loops.append(f"for (int i = 0; i < {len(ins[i])}; i++) out[{off} + i] = {f}(x{i}[i]);")
        off += len(ins[i])
    raw = _run_c_under_qemu(
        tmp_path,
        f"""{decl}
{bufs} static float out[{total}];
void _start(void) {{ {" ".join(f"rd(x{i}, sizeof x{i});" for i in range(len(ins)))}
  {" ".join(loops)}
  sys3(64, 1, (long)out, sizeof out); sys3(93, 0, 0, 0); for (;;) {{}} }}
""",
        b"".join(a.tobytes() for a in ins),
    )
    out, off = np.frombuffer(raw, np.float32), 0
    for f, i, ref in plan:
        got = out[off : off + len(ins[i])]
        off += len(ins[i])
        want = ref(ins[i].astype(np.float64))
        fits = np.abs(want) < float(np.finfo(np.float32).max)
        worst = _ulps(got[fits], want[fits]).max()
        assert worst <= 1.0, (f, worst, ins[i][fits][np.argmax(_ulps(got[fits], want[fits]))])
        assert np.isinf(got[~fits]).all(), f


def test_fallback_variants_that_fail_in_tvm_are_refused_by_check():
    """RMSNormalization over every axis and Resize half_pixel_symmetric crash in TVM's Hexagon build: check()
    refuses them before anything is written; RMSNormalization over the last axis is accepted."""

    def model(op, attrs, n_in):
        g = ir.Graph()
        x = g.add_input("x", ir.DType.FLOAT32, (2, 4))
        extra = [
            g.add_const(f"c{i}", np.ones(4 if op == "RMSNormalization" else 2, np.float32)) for i in range(n_in - 1)
        ]
        g.outputs.append(g.op(op, [x, *extra], attrs, name="n").output)
        return ir.Model(g, {"": 23})

    t = HexagonTarget()
    assert any("every axis" in p for p in t.check(model("RMSNormalization", {"axis": 0}, 2)))
    assert not any("every axis" in p for p in t.check(model("RMSNormalization", {"axis": -1}, 2)))
    assert any(
        "half_pixel_symmetric" in p
        for p in t.check(model("Resize", {"coordinate_transformation_mode": "half_pixel_symmetric"}, 1))
    )
