"""Hexagon benchmark: instruction packets executed per multiply-accumulate, counted under qemu-hexagon.

Wall time under an emulator says nothing about a DSP; the number of instruction packets the kernels execute
does, and it is deterministic. ``qemu-hexagon -singlestep -d exec,nochain`` logs one line per executed
packet with the function it belongs to; only packets inside the model's kernels are counted (not the
runner's I/O or the driver).

Shapes (small, because single-stepping is slow): MatMul ``[16, 256] x [256, 256]`` (1,048,576 MACs) and a
3x3 Conv ``[1, 32, 16, 16] -> 32`` channels, padding 1 (2,359,296 MACs), fp32, compiled by edgec's
``hexagon`` target for v67 with TVM's default schedules.

The int8 HVX kernels (vrmpy: 128 MACs per instruction, two per packet) are not built yet (issue 7); their
rows will join this table, against the goal of >= 100 MACs per packet on the MatMul.

    python benchmarks/hexagon.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile

import numpy as np

from _results import write_results  # noqa: E402 (sibling module; scripts run from benchmarks/)


def matmul_model(m=16, k=256, n=256):
    from edgec import ir
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (m, k))
    g.outputs.append(g.op("Linear", [x, g.add_const("w", rng.standard_normal((n, k)).astype(np.float32))],
                          domain="edgec", name="fc").output)
    model = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(model)
    return model, m * k * n


def conv_model(c=32, hw=16, o=32):
    from edgec import ir
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, c, hw, hw))
    g.outputs.append(g.op("Conv", [x, g.add_const("w", rng.standard_normal((o, c, 3, 3)).astype(np.float32))],
                          {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, name="conv").output)
    model = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(model)
    return model, o * c * 9 * hw * hw


def _count(out_dir: str, data: bytes) -> tuple[int, int]:
    """(packets inside the kernels, all packets) of one run of the artifact's runner under qemu-hexagon: the
    log names each packet's function; the kernels are TVM's ``<name>_compute_`` and ``__tvm_ffi_<name>``."""
    import threading
    p = subprocess.Popen(["qemu-hexagon", "-singlestep", "-d", "exec,nochain", "-D", "/dev/stderr",
                          f"{out_dir}/runner"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    def feed():
        p.stdin.write(data)
        p.stdin.close()
    threading.Thread(target=feed, daemon=True).start()
    inside = total = 0
    for raw in p.stderr:
        if raw.startswith(b"Trace"):
            total += 1
            sym = raw.rsplit(b"]", 1)[-1].strip()
            if sym.endswith(b"_compute_") or sym.startswith(b"__tvm_ffi_"):
                inside += 1
    if p.wait() != 0:
        raise RuntimeError(f"the runner failed under qemu-hexagon (exit {p.returncode})")
    return inside, total


def main() -> int:
    if shutil.which("qemu-hexagon") is None:
        print("qemu-hexagon is not installed (apt-get install qemu-user): nothing to measure")
        return 1
    from edgec import ir
    from edgec.ir.passes import PassContext
    from edgec.targets.hexagon import HexagonTarget
    rows = []
    for name, (model, macs) in (("MatMul 16x256x256 fp32", matmul_model()), ("Conv 3x3 32->32 16x16 fp32",
                                                                            conv_model())):
        for hvx in (0, 128):
            d = tempfile.mkdtemp(prefix="edgec-hexagon-bench-")
            try:
                HexagonTarget(hvx=hvx).emit(model, d, PassContext())
                feeds = ir.random_inputs(model, seed=0)
                data = b"".join(np.ascontiguousarray(feeds[v.name]).tobytes() for v in model.graph.inputs)
                inside, total = _count(d, data)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            rows.append((name, f"v67, hvx={hvx}, TVM default schedule", macs, inside, total))
            print(rows[-1], flush=True)
    lines = ["## Hexagon: instruction packets per MAC (qemu-hexagon, deterministic)", "",
             "`python benchmarks/hexagon.py`: packets executed inside the kernels, counted with `qemu-hexagon "
             "-singlestep -d exec,nochain`. The int8 HVX kernels (vrmpy) are not built yet; goal for them: >= 100 "
             "MACs per packet on the MatMul.", "",
             "| kernel | build | MACs | kernel packets | packets / MAC | MACs / packet | all packets |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, build, macs, inside, total in rows:
        lines.append(f"| {name} | {build} | {macs} | {inside} | {inside / macs:.3f} | {macs / inside:.3f} | {total} |")
    write_results("RESULTS-hexagon.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
