"""Hexagon benchmark: instruction packets executed per multiply-accumulate, counted under qemu-hexagon.

Wall time under an emulator says nothing about a DSP; the number of instruction packets the kernels execute
does, and it is deterministic. ``qemu-hexagon -singlestep -d exec,nochain`` logs one line per executed
packet with the function it belongs to; only packets inside the kernels are counted (not the runner's I/O
or the driver).

Rows (v67, small shapes because single-stepping is slow):

* fp32, whole artifacts built by the ``hexagon`` target with TVM's default schedules (scalar: v67's HVX has
  no float): MatMul ``[16, 256] x [256, 256]`` and a 3x3 Conv ``[1, 32, 16, 16] -> 32``, padding 1;
* int8, scalar: the same int8 arithmetic (uint8 x int8 -> int32) as a plain TE kernel, TVM's default
  schedule, no HVX;
* int8, edgec's HVX kernels (``targets/hexagon/qkernels.py``), codes in and codes out, the requantizing
  epilogue included: ``vrmpy`` does 128 MACs, two fit in a packet (256 MACs per packet at best). The lanes
  are 32 output pixels / rows, so shapes with fewer than 32 of them fill only part of each vector.

Each integer kernel's output is checked against numpy before its packets count.

    python benchmarks/hexagon.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile

import numpy as np

from _results import write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)


def matmul_model(m=16, k=256, n=256):
    from edgec import ir

    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (m, k))
    g.outputs.append(
        g.op(
            "Linear", [x, g.add_const("w", rng.standard_normal((n, k)).astype(np.float32))], domain="edgec", name="fc"
        ).output
    )
    model = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(model)
    return model, m * k * n


def conv_model(c=32, hw=16, o=32):
    from edgec import ir

    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, c, hw, hw))
    g.outputs.append(
        g.op(
            "Conv",
            [x, g.add_const("w", rng.standard_normal((o, c, 3, 3)).astype(np.float32))],
            {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
            name="conv",
        ).output
    )
    model = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(model)
    return model, o * c * 9 * hw * hw


def fp32_rows() -> list[tuple]:
    from edgec import ir
    from edgec.ir.passes import PassContext
    from edgec.targets.hexagon import HexagonTarget, harness

    rows = []
    for name, (model, macs) in (
        ("MatMul 16x256x256 fp32", matmul_model()),
        ("Conv 3x3 32->32 16x16 fp32", conv_model()),
    ):
        d = tempfile.mkdtemp(prefix="edgec-hexagon-bench-")
        try:
            HexagonTarget(hvx=128).emit(model, d, PassContext())
            feeds = ir.random_inputs(model, seed=0)
            data = b"".join(np.ascontiguousarray(feeds[v.name]).tobytes() for v in model.graph.inputs)
            inside, _ = harness.count_packets(
                f"{d}/runner", data, lambda s: s.endswith(b"_compute_") or s.startswith(b"__tvm_ffi_")
            )
        finally:
            shutil.rmtree(d, ignore_errors=True)
        rows.append((name, "TVM default schedule (scalar)", macs, inside))
        print(rows[-1], flush=True)
    return rows


def _scalar_int8(m, k, n):
    """uint8 x int8 -> int32 matmul as plain TE (TVM's default schedule)."""
    from tvm import te

    x = te.placeholder((m, k), "uint8", name="x")
    w = te.placeholder((n, k), "int8", name="w")
    r = te.reduce_axis((0, k), name="r")
    y = te.compute((m, n), lambda i, j: te.sum(x[i, r].astype("int32") * w[j, r].astype("int32"), axis=r))
    return te.create_prim_func([x, w, y])


def _scalar_int8_conv(c, hw, o):
    from tvm import te

    x = te.placeholder((c, hw + 2, hw + 2), "uint8", name="x")  # pre-padded
    w = te.placeholder((o, c, 3, 3), "int8", name="w")
    rc, rh, rw = te.reduce_axis((0, c)), te.reduce_axis((0, 3)), te.reduce_axis((0, 3))
    y = te.compute(
        (o, hw, hw),
        lambda f, i, j: te.sum(
            x[rc, i + rh, j + rw].astype("int32") * w[f, rc, rh, rw].astype("int32"), axis=[rc, rh, rw]
        ),
    )
    return te.create_prim_func([x, w, y])


def int8_rows() -> list[tuple]:
    from edgec.ir.integer import requant_multiplier
    from edgec.targets.hexagon import harness
    from edgec.targets.hexagon.qkernels import ConvSpec, Layout, conv_kernel, from_layout, to_layout

    rng = np.random.default_rng(0)
    rows = []
    # scalar baselines
    for name, func, ins, macs in (
        (
            "MatMul 16x256x256 int8",
            _scalar_int8(16, 256, 256),
            [rng.integers(0, 256, (16, 256), dtype=np.uint8), rng.integers(-128, 128, (256, 256), dtype=np.int8)],
            16 * 256 * 256,
        ),
        (
            "Conv 3x3 32->32 16x16 int8",
            _scalar_int8_conv(32, 16, 32),
            [
                rng.integers(0, 256, (32, 18, 18), dtype=np.uint8),
                rng.integers(-128, 128, (32, 32, 3, 3), dtype=np.int8),
            ],
            32 * 32 * 9 * 16 * 16,
        ),
    ):
        d = tempfile.mkdtemp(prefix="edgec-hexagon-bench-")
        try:
            outs = [((16, 256), "int32")] if name.startswith("MatMul") else [((32, 16, 16), "int32")]
            runner = harness.build(func, ins, outs, d, hvx=0)
            inside, _ = harness.count_packets(runner)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        rows.append((name, "TVM default schedule (scalar), int32 out", macs, inside))
        print(rows[-1], flush=True)
    # edgec's HVX kernels: (name, C, H, W, O, K, S, P); a MatMul [M, K] x [K, N] is the image K x 1 x M.
    for name, C, H, W, O, K, S, P in (
        ("MatMul 16x256x256 int8", 256, 1, 16, 256, 1, 1, 0),
        ("MatMul 256x256x256 int8", 256, 1, 256, 256, 1, 1, 0),
        ("Conv 3x3 32->32 16x16 int8", 32, 16, 16, 32, 3, 1, 1),
        ("Conv 3x3 64->64 32x32 int8", 64, 32, 32, 64, 3, 1, 1),
    ):
        OH, OW = (H + 2 * P - K) // S + 1, (W + 2 * P - K) // S + 1
        src = Layout(C, H, W, p=P)
        src = Layout(C, H, W, p=P, need=src.reads_to(OW, S, K, P))
        dst = Layout(O, OH, OW, p=1)
        img = rng.integers(0, 256, (C, H, W), dtype=np.uint8)
        wt = rng.integers(-128, 128, (O, C, K, K), dtype=np.int8)
        wp = np.ascontiguousarray(wt.reshape(O, src.c4, 4, K, K).transpose(0, 3, 4, 1, 2).reshape(O, -1, 4))
        m, s = requant_multiplier(np.full(O, 1.0 / (C * K * K * 64)))
        pi = np.stack([np.zeros(O, np.int64), m, s, (1 << s) >> 1], 1).astype(np.int32)
        spec = ConvSpec("k", src, O, K, K, S, P, P, OH, OW, dst=dst, zero=0, lo=0, hi=255)
        d = tempfile.mkdtemp(prefix="edgec-hexagon-bench-")
        try:
            outs = [(tuple(dst.shape), "uint8")]
            runner = harness.build(conv_kernel(spec), [to_layout(img, src, 0), wp, pi], outs, d)
            (got,) = harness.run(runner, outs)
            pim = np.zeros((C, H + 2 * P, W + 2 * P), np.int64)
            pim[:, P : P + H, P : P + W] = img
            acc = sum(
                np.einsum("chw,oc->ohw", pim[:, a : a + OH, b : b + OW], wt[:, :, a, b].astype(np.int64))
                for a in range(K)
                for b in range(K)
            )
            want = np.clip(
                (((acc * m[:, None, None]) >> 16) + ((1 << s) >> 1)[:, None, None]) >> s[:, None, None], 0, 255
            )
            if not np.array_equal(from_layout(got, dst), want):
                raise RuntimeError(f"{name}: the HVX kernel's output differs from numpy")
            inside, _ = harness.count_packets(runner)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        rows.append(
            (name, "edgec HVX kernel (vrmpy), requantized codes out, checked vs numpy", O * C * K * K * OH * OW, inside)
        )
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    if shutil.which("qemu-hexagon") is None:
        print("qemu-hexagon is not installed (apt-get install qemu-user): nothing to measure")
        return 1
    rows = fp32_rows() + int8_rows()
    lines = [
        "## Hexagon: instruction packets per MAC (qemu-hexagon, deterministic)",
        "",
        "`python benchmarks/hexagon.py`: packets executed inside the kernel(s), counted with `qemu-hexagon "
        "-singlestep -d exec,nochain`, v67. The int8 HVX kernels do 128 MACs per `vrmpy`, two per packet at "
        "best; their 32 lanes are output pixels / rows, so 16-row shapes fill half of each vector. Goal: "
        ">= 100 MACs per packet on the int8 MatMul.",
        "",
        "| kernel | build | MACs | kernel packets | packets / MAC | MACs / packet |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, build, macs, inside in rows:
        lines.append(f"| {name} | {build} | {macs} | {inside} | {inside / macs:.4f} | {macs / inside:.1f} |")
    write_results("RESULTS-hexagon.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
