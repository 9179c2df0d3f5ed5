"""The ``hexagon`` target: edgec IR -> Relax -> fused TIR kernels -> a Hexagon object compiled by TVM's LLVM,
plus a generated C driver on a static arena planned by liveness, a freestanding runtime, a 128-byte
aligned weights blob, a header, a shared object and a static test runner linked with ``ld.lld``;
``--verify`` runs the runner under ``qemu-hexagon`` (v67).

Statically quantized int8 Conv / depthwise Conv / Linear run on HVX integer kernels (``vrmpy``, int32
accumulation, fixed-point requantization fused into the next kernel's input; :mod:`.qkernels`,
:mod:`.intops`), bit-exact with :mod:`edgec.ir.integer`. Float kernels are scalar on v67 (no HVX float);
float Linear and Conv layers use HVX qfloat (v68/v69) or IEEE float (v73/v75), compile-only here.

The lowering to Relax is :mod:`edgec.api.relax` (with :mod:`.intops`' hook for the integer and HVX float
kernels); :mod:`.codegen` builds the kernels and writes the driver, header, runner and weights blob,
:mod:`.planning` walks ``main`` into kernel calls and plans the arena and the workspace, :mod:`.toolchain`
finds, runs and links with clang / ld.lld / llvm-nm / llvm-objcopy and qemu-hexagon. This module holds the target itself
(options, capabilities, check, emit, run_artifact).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...api.relax import FALLBACK_OPS, LOWERINGS, refuse_variant
from ...errors import UnsupportedError
from ...hookspecs import hookimpl
from ...ir import Model, Node
from ...ir.passes import PassContext, option
from ...ir.integer import IntLimits
from ...target import INTEGER_POLICY, Artifact, Capabilities, Target, VerifyPolicy
from . import codegen, toolchain
from .planning import plan_arena, walk_main, workspace_bytes

ARCHS = ("v67", "v68", "v69", "v73", "v75")
# the convolutions the HVX integer kernels take (intops.py; their layouts hold at most 16 rows / columns of padding)
HVX_LIMITS = IntLimits(strides=(1, 2), max_pad=16)


# Ops edgec.api.relax lowers through TVM's Relax ONNX converters (its FALLBACK_OPS) that were checked to
# compile and run right for Hexagon under qemu on onnx's node suite (benchmarks/coverage.py --targets hexagon):
# every case holding one of them (646 with the new dtypes), none wrong. Resize half_pixel_symmetric and
# RMSNormalization over every axis fail in TVM's build and are refused by check(). Left out: Compress, CumSum,
# NonZero, OneHot, TopK, Unique (their Relax ops need library calls the Hexagon runtime lacks: every case was
# refused) and GlobalLpPool, MaxRoiPool (no case in the suite to check them on).
HEXAGON_FALLBACK_OPS: frozenset[str] = (
    frozenset(
        {
            "Acos",
            "Acosh",
            "AffineGrid",
            "ArgMax",
            "ArgMin",
            "Asin",
            "Asinh",
            "Atan",
            "Atanh",
            "BitwiseAnd",
            "BitwiseNot",
            "BitwiseOr",
            "BitwiseXor",
            "CastLike",
            "Ceil",
            "ConstantOfShape",
            "ConvTranspose",
            "Cos",
            "Cosh",
            "DepthToSpace",
            "DequantizeLinear",
            "Dropout",
            "DynamicQuantizeLinear",
            "Einsum",
            "Elu",
            "EyeLike",
            "Floor",
            "Gelu",
            "Gemm",
            "GlobalMaxPool",
            "GreaterOrEqual",
            "GridSample",
            "GroupNormalization",
            "Hardmax",
            "Identity",
            "InstanceNormalization",
            "IsNaN",
            "LRN",
            "LeakyRelu",
            "LessOrEqual",
            "LogSoftmax",
            "LpPool",
            "MatMulInteger",
            "MaxUnpool",
            "Mean",
            "MeanVarianceNormalization",
            "Mod",
            "Or",
            "PRelu",
            "Pad",
            "QuantizeLinear",
            "RMSNormalization",
            "Range",
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceSumSquare",
            "Resize",
            "RoiAlign",
            "Round",
            "Scatter",
            "ScatterElements",
            "ScatterND",
            "Selu",
            "Shape",
            "Shrink",
            "Sign",
            "Sin",
            "Sinh",
            "Size",
            "Softsign",
            "SpaceToDepth",
            "Split",
            "Sum",
            "Tan",
            "ThresholdedRelu",
            "Tile",
            "Trilu",
            "Upsample",
            "Xor",
        }
    )
    & FALLBACK_OPS
)


@dataclasses.dataclass(frozen=True)
class HexagonTarget(Target):
    name: ClassVar[str] = "hexagon"
    summary: ClassVar[str] = "Qualcomm Hexagon DSP: TVM kernels (int8 on HVX vrmpy), freestanding runtime, qemu-run"
    runtime: ClassVar[str] = "qemu-hexagon (v67) running the artifact's static test runner"
    compile_cost: ClassVar[float] = 10.0  # TVM generates and compiles kernels (LLVM)
    # Weight-quantized models run as in the cpu target: codes stored packed in the blob, dequantized inside the
    # float kernels; static int8 Conv / Linear (quantized activations) run on the integer HVX kernels.
    capabilities: ClassVar[Capabilities] = Capabilities(
        ops=frozenset(LOWERINGS),
        dtypes=frozenset({"f32", "f16", "f64", "i64", "i32", "i16", "i8", "u8", "u16", "u32", "u64", "bool"}),
        quant=frozenset({(s, b) for s in ("symmetric", "asymmetric", "affine") for b in range(2, 9)}),
        activation_quant=True,
        mixed=(4, 8),
        fallback_ops=HEXAGON_FALLBACK_OPS,
    )
    arch: str = option("v67", choices=ARCHS, help="Hexagon architecture (qemu-hexagon 7.2 runs v67 only)")
    hvx: int = option(128, choices=(0, 128), help="HVX vector length in bytes (0: no HVX)")
    asm: bool = option(False, help="also write kernels.s, the kernels' assembly (slow for large models)")
    int8: bool = option(
        True,
        help="run statically quantized int8 Conv / Linear on the integer HVX kernels "
        "(false: simulate them in float, as the reference executor does)",
    )

    def act_quant_policy(self) -> VerifyPolicy:
        return INTEGER_POLICY  # also with int8=false: its float kernels (qfloat on v68) keep the looser bound

    def integer_semantics(self) -> bool:
        return self.int8 and self.hvx == 128

    def integer_limits(self) -> IntLimits:
        return HVX_LIMITS

    def tvm_target(self):
        import tvm

        # long-calls: a large model's kernels exceed the 2 MiB reach of a direct call into the runtime
        # HVX float: qfloat from v68, IEEE float from v73 (v67's HVX has none: float kernels stay scalar).
        hvx_float = {
            "v68": ["+hvx-qfloat"],
            "v69": ["+hvx-qfloat"],
            "v73": ["+hvx-ieee-fp"],
            "v75": ["+hvx-ieee-fp"],
        }.get(self.arch, [])
        attrs = ([f"+hvx{self.arch}", "+hvx-length128b"] + hvx_float if self.hvx else []) + ["+long-calls"]
        return tvm.target.Target({"kind": "llvm", "mtriple": "hexagon", "mcpu": f"hexagon{self.arch}", "mattr": attrs})

    def accepts_node(self, node: Node, model: Model) -> bool:
        """As the cpu target: TVM's converters only in the variants measured right (decompose rewrites others)."""
        if not super().accepts_node(node, model):
            return False
        return node.qualified_op not in self.capabilities.fallback_ops or refuse_variant(node) is None

    def check(self, model: Model) -> list[str]:
        problems = super().check(model)
        for v in model.graph.inputs:
            if v.static_shape is None:
                problems.append(f"input {v.name!r} has no static shape: pass --input-shape")
        for n in model.graph:  # variants of fallback ops that TVM's converters cannot build for Hexagon
            if n.qualified_op == "Resize" and n.attr("coordinate_transformation_mode") in (
                "half_pixel_symmetric",
                b"half_pixel_symmetric",
            ):
                problems.append(
                    f"node {n.name!r}: Resize with coordinate_transformation_mode half_pixel_symmetric "
                    "is not supported by this target (TVM's converter rejects it); use half_pixel"
                )
            x = n.inputs[0] if n.qualified_op == "RMSNormalization" and n.inputs else None
            if (
                x is not None
                and x.static_shape is not None
                and int(n.attr("axis", -1)) % max(len(x.static_shape), 1) == 0
            ):
                problems.append(
                    f"node {n.name!r}: RMSNormalization over every axis (axis {n.attr('axis', -1)}) "
                    "fails to compile for Hexagon in TVM 0.27; normalize over trailing axes only"
                )
        return problems

    def cflags(self, ws_bytes: int, includes: tuple[str, ...] = ()) -> list[str]:
        """clang flags for the generated C (driver, runtime, runners): freestanding, the TVM FFI /
        DLPack headers, the workspace size."""
        return toolchain.cflags(self.arch, self.hvx, ws_bytes, includes)

    # ---- emission --------------------------------------------------------------------------------------------
    def emit(self, model: Model, out_dir: str, ctx: PassContext) -> Artifact:
        """Relax -> fused kernels (kernels.o), the driver on a static arena and the files around it, linked
        into libmodel.so and the static runner."""
        import tvm

        from .intops import HexagonBuilder

        tools = toolchain.find_tools()
        target = self.tvm_target()
        builder = HexagonBuilder(
            model,
            integer=self.integer_semantics(),
            float_hvx=self.hvx == 128 and self.arch != "v67",
            fallback_ops=self.capabilities.fallback_ops,
        )
        mod = codegen.fuse(builder.build(), target)
        calls, tensors, copies = walk_main(model, mod)
        kernels = codegen.kernel_module(mod)
        ws_bytes = workspace_bytes(kernels)
        codegen.compile_kernels(kernels, target, out_dir, self.asm)
        toolchain.strip_debug(tools, os.path.join(out_dir, "kernels.o"))
        toolchain.check_symbols(
            tools, os.path.join(out_dir, "kernels.o"), allowed=toolchain.RUNTIME_SYMBOLS, what="the kernels"
        )
        arena = plan_arena([t for t in tensors if t.kind == "temp"])
        blob = codegen.write_sources(model, calls, tensors, copies, arena, out_dir)
        work = tempfile.mkdtemp(prefix="edgec-hexagon-")
        try:
            toolchain.link(tools, self.cflags(ws_bytes, (out_dir,)), out_dir, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        files = [
            "kernels.o",
            *(["kernels.s"] if self.asm else []),
            "weights.bin",
            "weights.S",
            "model.h",
            "model.c",
            "runtime.c",
            "runner.c",
            "libmodel.so",
            "runner",
            "io.json",
        ]
        return Artifact(
            files,
            {
                "tvm_version": tvm.__version__,
                "arch": self.arch,
                "hvx": self.hvx,
                "kernels": sorted({c[0] for c in calls}),
                "calls": len(calls),
                "arena_bytes": arena,
                "weights_bytes": blob,
                "arithmetic": self._arithmetic(model, builder),
                "integer_kernels": [k for k in builder.kernels if k.startswith("q")],
                "hvx_float_kernels": [k for k in builder.kernels if k.startswith("f")],
                "verification_runtime": "qemu-hexagon"
                if self.arch == "v67"
                else f"none: qemu-hexagon 7.2 runs v67 only ({self.arch} is compile-only)",
            },
        )

    @staticmethod
    def _arithmetic(model: Model, builder) -> str:
        fused = sum(c.fused is not None for c in builder.ops.values())
        parts = []
        if builder.ops:
            parts.append(
                f"{len(builder.ops)} int8 Conv/Linear on integer HVX kernels (vrmpy, int32 accumulation; "
                f"{fused} requantize into the next kernel's codes, the rest dequantize to float32), "
                "bit-exact with edgec.ir.integer"
            )
        rest = [n for n in model.graph if n.qualified_op in ("Conv", "edgec::Linear") and id(n) not in builder.ops]
        simulated = any(v.quant is not None for v in model.graph.values())
        hvx_float = sum(k.startswith("f") for k in builder.kernels)
        if hvx_float:
            parts.append(f"{hvx_float} float Linear/Conv on HVX float kernels (v68 qfloat / v73+ IEEE float)")
        parts.append("scalar float32 kernels for everything else" if parts else "scalar float32 kernels")
        if simulated and rest:
            parts.append(f"{len(rest)} Conv/Linear with simulated int8 activations (quantize-dequantize in float)")
        return "; ".join(parts)

    # ---- execution --------------------------------------------------------------------------------------------
    def simulated_cost(self, out_dir: str, files, feeds: Mapping[str, np.ndarray]):
        """Packets the model executes for one inference under qemu-hexagon (one packet per translation block, every
        block logged), without the runner's own (``_start`` and its ``io``: reading the inputs, writing the outputs). qemu's time
        is no measure of a DSP's; the packet count is the honest cost figure it has."""
        qemu, data, io = self._qemu_input(out_dir, feeds)
        cmd = [qemu, "-singlestep", "-d", "exec,nochain", "-D", "/dev/stderr", os.path.join(out_dir, "runner")]
        total, harness = toolchain.count_packets(cmd, data, harness_symbols=(b"_start", b"io", b"sys3"))
        return {
            "simulator": "qemu-hexagon",
            "arch": self.arch,
            "packets_per_inference": total - harness,
            "harness_packets": harness,
        }

    def _qemu_input(self, out_dir: str, feeds: Mapping[str, np.ndarray]) -> tuple[str, bytes, dict]:
        """qemu-hexagon's path, the runner's stdin for ``feeds``, and io.json."""
        qemu = toolchain.find_qemu()
        if qemu is None:
            raise NotImplementedError(
                "qemu-hexagon is not installed (apt-get install qemu-user): the artifact was "
                "built and its symbols checked, but not executed"
            )
        if self.arch != "v67":
            raise NotImplementedError(f"qemu-hexagon 7.2 runs v67 only; the {self.arch} artifact is compile-only")
        with open(os.path.join(out_dir, "io.json")) as f:
            io = json.load(f)
        missing = [i["name"] for i in io["inputs"] if i["name"] not in feeds]
        if missing:
            raise UnsupportedError(f"the Hexagon runner needs the inputs {missing}")
        data = b"".join(
            np.ascontiguousarray(feeds[i["name"]], dtype=i["dtype"]).reshape(i["shape"]).tobytes() for i in io["inputs"]
        )
        return qemu, data, io

    def run_artifact(self, out_dir: str, feeds: Mapping[str, np.ndarray], input_names=None) -> list[np.ndarray]:
        qemu, data, io = self._qemu_input(out_dir, feeds)
        r = subprocess.run(
            [qemu, os.path.join(out_dir, "runner")], input=data, capture_output=True, timeout=toolchain.QEMU_TIMEOUT_S
        )
        if r.returncode != 0:
            raise UnsupportedError(
                f"the Hexagon runner failed under qemu-hexagon (exit {r.returncode}): "
                f"{r.stderr.decode(errors='replace')[:500]}"
            )
        outs, off, raw = [], 0, r.stdout
        for o in io["outputs"]:
            dt = np.dtype(o["dtype"])
            n = int(np.prod(o["shape"], dtype=np.int64)) * dt.itemsize
            outs.append(np.frombuffer(raw[off : off + n], dt).reshape(o["shape"]).copy())
            off += n
        if off != len(raw):
            raise UnsupportedError(f"the Hexagon runner wrote {len(raw)} bytes; the outputs need {off}")
        return outs


@hookimpl
def edgec_register_targets(registry):
    registry.register(HexagonTarget)
