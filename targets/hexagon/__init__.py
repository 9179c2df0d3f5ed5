"""The ``hexagon`` target: edgec IR -> Relax -> fused TIR kernels -> a Hexagon object compiled by TVM's LLVM,
plus a generated C driver on a static arena planned by liveness, a freestanding runtime, a 128-byte
aligned weights blob, a header, a shared object and a static test runner linked with ``ld.lld``;
``--verify`` runs the runner under ``qemu-hexagon`` (v67).

Statically quantized int8 Conv / depthwise Conv / Linear run on HVX integer kernels (``vrmpy``, int32
accumulation, fixed-point requantization fused into the next kernel's input; :mod:`.qkernels`,
:mod:`.intops`), bit-exact with :mod:`edgec.ir.integer`. Float kernels are scalar on v67 (no HVX float);
float Linear and Conv layers use HVX qfloat (v68/v69) or IEEE float (v73/v75), compile-only here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
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
from ...target import Artifact, Capabilities, Target

HERE = os.path.dirname(os.path.abspath(__file__))
ARCHS = ("v67", "v68", "v69", "v73", "v75")
# Symbols the kernels may leave undefined: what runtime.c defines. Anything else is a build error.
RUNTIME_SYMBOLS = frozenset({
    "memset", "memcpy", "memmove", "__hexagon_memcpy_likely_aligned_min32bytes_mult8bytes", "expf", "tanhf",
    "sqrtf", "fabsf", "edgec_fence", "erff", "floorf", "nearbyintf", "ceilf", "truncf", "roundf", "logf", "powf", "exp", "log", "__truncdfhf2", "__truncsfhf2", "__extendhfdf2", "__extendhfsf2", "sinf", "cosf", "tanf", "asinf", "acosf", "atanf", "sinhf", "coshf", "asinhf", "acoshf", "__hexagon_sqrtf", "__hexagon_divsf3", "__hexagon_divsi3", "__hexagon_modsi3", "__hexagon_udivsi3", "__hexagon_umodsi3",
    "__hexagon_divdi3", "__hexagon_moddi3", "__hexagon_udivdi3", "__hexagon_umoddi3",
    "__TVMBackendAllocWorkspace", "__TVMBackendFreeWorkspace", "__TVMBackendParallelLaunch",
    "_GLOBAL_OFFSET_TABLE_"})  # the last one the linker provides
_DT = {"float32": ("kDLFloat", 32), "float16": ("kDLFloat", 16), "int8": ("kDLInt", 8), "uint8": ("kDLUInt", 8),
       "int32": ("kDLInt", 32), "int64": ("kDLInt", 64), "bool": ("kDLBool", 8), "float64": ("kDLFloat", 64),
       "int16": ("kDLInt", 16), "uint16": ("kDLUInt", 16), "uint32": ("kDLUInt", 32), "uint64": ("kDLUInt", 64)}


def _tools() -> dict[str, str]:
    out = {}
    for t in ("clang", "ld.lld", "llvm-nm"):
        path = shutil.which(t) or shutil.which(t + "-14")
        if path is None:
            raise UnsupportedError(f"the hexagon target needs {t} (apt-get install clang lld llvm)")
        out[t] = path
    return out


@dataclasses.dataclass
class _Tensor:
    name: str
    shape: list[int]
    dtype: str
    kind: str            # "input", "const", "temp", "output"
    index: int = 0       # input/output position, or const number
    offset: int = 0      # arena / blob offset in bytes
    first: int = 0
    last: int = 0
    data: np.ndarray | None = None  # a constant's values

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _c_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


_DIM = re.compile(r"T\.int(?:32|64)\((\d+)\)|\b(\d+)\b")


def _alloc_buffers(script: str):
    """(shape text, dtype) of every ``T.alloc_buffer`` / ``T.sblock_alloc_buffer`` in a PrimFunc's script."""
    for m in re.finditer(r"T\.(?:sblock_)?alloc_buffer\(", script):
        i = m.end()
        if script[i] != "(":
            continue
        depth, j = 0, i
        while j < len(script):
            depth += {"(": 1, ")": -1}.get(script[j], 0)
            if depth == 0:
                break
            j += 1
        rest = script[j + 1:j + 60]
        dt = re.match(r"\s*,\s*(?:dtype=)?\"(\w+)\"", rest)
        yield script[i + 1:j], dt.group(1) if dt else "float32"


def workspace_bytes(kernels) -> int:
    """The static workspace the kernels need: TVM turns every intermediate buffer of a fused kernel (padded
    inputs, dequantized weights, fused intermediates) into a LIFO workspace allocation, so the largest
    kernel's sum of buffers (each rounded up to 128 bytes) bounds it. At least 1 MiB."""
    need = 0
    for f in kernels.functions.values():
        total = 0
        for dims, dtype in _alloc_buffers(f.script()):
            n = 1
            for a, b in _DIM.findall(dims):
                n *= int(a or b)
            bits = re.search(r"\d+", dtype)
            total += (n * max(int(bits.group(0)) if bits else 8, 8) // 8 + 127) // 128 * 128
        need = max(need, total)
    return max(need, 1 << 20)


def plan_arena(temps: list[_Tensor], align: int = 128) -> int:
    """Offsets for the intermediate tensors so that two tensors alive at once never overlap (greedy by size,
    first fit among the live ranges already placed). Returns the arena size in bytes."""
    placed: list[_Tensor] = []
    size = 0
    for t in sorted(temps, key=lambda t: (-t.nbytes, t.first)):
        n = -(-t.nbytes // align) * align
        busy = sorted((p.offset, p.offset + -(-p.nbytes // align) * align) for p in placed
                      if not (p.last < t.first or t.last < p.first))
        off = 0
        for lo, hi in busy:
            if off + n <= lo:
                break
            off = max(off, hi)
        t.offset = off
        placed.append(t)
        size = max(size, off + n)
    return size


# Ops edgec.api.relax lowers through TVM's Relax ONNX converters (its FALLBACK_OPS) that were checked to
# compile and run right for Hexagon under qemu on onnx's node suite (benchmarks/coverage.py --targets hexagon):
# every case holding one of them (646 with the new dtypes), none wrong. Resize half_pixel_symmetric and
# RMSNormalization over every axis fail in TVM's build and are refused by check(). Left out: Compress, CumSum,
# NonZero, OneHot, TopK, Unique (their Relax ops need library calls the Hexagon runtime lacks: every case was
# refused) and GlobalLpPool, MaxRoiPool (no case in the suite to check them on).
HEXAGON_FALLBACK_OPS: frozenset[str] = frozenset({
    "Acos", "Acosh", "AffineGrid", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "BitwiseAnd", "BitwiseNot",
    "BitwiseOr", "BitwiseXor", "CastLike", "Ceil", "ConstantOfShape", "ConvTranspose", "Cos", "Cosh", "DepthToSpace",
    "DequantizeLinear", "Dropout", "DynamicQuantizeLinear", "Einsum", "Elu", "EyeLike", "Floor", "Gelu", "Gemm",
    "GlobalMaxPool", "GreaterOrEqual", "GridSample", "GroupNormalization", "Hardmax", "Identity",
    "InstanceNormalization", "IsNaN", "LRN", "LeakyRelu", "LessOrEqual", "LogSoftmax", "LpPool", "MatMulInteger",
    "MaxUnpool", "Mean", "MeanVarianceNormalization", "Mod", "Or", "PRelu", "Pad", "QuantizeLinear",
    "RMSNormalization", "Range", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
    "Resize", "RoiAlign", "Round", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sign",
    "Sin", "Sinh", "Size", "Softsign", "SpaceToDepth", "Split", "Sum", "Tan", "ThresholdedRelu", "Tile", "Trilu",
    "Upsample", "Xor"}) & FALLBACK_OPS


@dataclasses.dataclass(frozen=True)
class HexagonTarget(Target):
    name: ClassVar[str] = "hexagon"
    summary: ClassVar[str] = "Qualcomm Hexagon DSP: TVM kernels (int8 on HVX vrmpy), freestanding runtime, qemu-run"
    runtime: ClassVar[str] = "qemu-hexagon (v67) running the artifact's static test runner"
    # Weight-quantized models run as in the cpu target: codes stored packed in the blob, dequantized inside the
    # float kernels; static int8 Conv / Linear (quantized activations) run on the integer HVX kernels.
    capabilities: ClassVar[Capabilities] = Capabilities(
        ops=frozenset(LOWERINGS), dtypes=frozenset({"f32", "f16", "f64", "i64", "i32", "i16", "i8", "u8", "u16", "u32", "u64",
                                                          "bool"}),
        quant=frozenset({(s, b) for s in ("symmetric", "asymmetric", "affine") for b in range(2, 9)}),
        activation_quant=True, mixed=(4, 8), fallback_ops=HEXAGON_FALLBACK_OPS)
    act_quant_policy: ClassVar[dict | None] = {
        "min_cosine": 0.999, "max_rel_err": 0.05,
        "description": "static int8 Conv / Linear run as integer kernels with fixed-point requantization "
                       "(edgec.ir.integer), which differs from the float simulation by about one step at "
                       "rounding boundaries; the artifact must also match the integer reference at --tolerance"}
    arch: str = option("v67", choices=ARCHS, help="Hexagon architecture (qemu-hexagon 7.2 runs v67 only)")
    hvx: int = option(128, choices=(0, 128), help="HVX vector length in bytes (0: no HVX)")
    asm: bool = option(False, help="also write kernels.s, the kernels' assembly (slow for large models)")
    int8: bool = option(True, help="run statically quantized int8 Conv / Linear on the integer HVX kernels "
                                   "(false: simulate them in float, as the reference executor does)")

    def integer_semantics(self) -> bool:
        return self.int8 and self.hvx == 128

    def tvm_target(self):
        import tvm
        # long-calls: a large model's kernels exceed the 2 MiB reach of a direct call into the runtime
        # HVX float: qfloat from v68, IEEE float from v73 (v67's HVX has none: float kernels stay scalar).
        hvx_float = {"v68": ["+hvx-qfloat"], "v69": ["+hvx-qfloat"], "v73": ["+hvx-ieee-fp"],
                     "v75": ["+hvx-ieee-fp"]}.get(self.arch, [])
        attrs = ([f"+hvx{self.arch}", "+hvx-length128b"] + hvx_float if self.hvx else []) + ["+long-calls"]
        return tvm.target.Target({"kind": "llvm", "mtriple": "hexagon", "mcpu": f"hexagon{self.arch}",
                                  "mattr": attrs})

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
                    "half_pixel_symmetric", b"half_pixel_symmetric"):
                problems.append(f"node {n.name!r}: Resize with coordinate_transformation_mode half_pixel_symmetric "
                                "is not supported by this target (TVM's converter rejects it); use half_pixel")
            x = n.inputs[0] if n.qualified_op == "RMSNormalization" and n.inputs else None
            if x is not None and x.static_shape is not None and int(n.attr("axis", -1)) % max(len(x.static_shape),
                                                                                             1) == 0:
                problems.append(f"node {n.name!r}: RMSNormalization over every axis (axis {n.attr('axis', -1)}) "
                                "fails to compile for Hexagon in TVM 0.27; normalize over trailing axes only")
        return problems

    # ---- emission --------------------------------------------------------------------------------------------
    def emit(self, model: Model, out_dir: str, ctx: PassContext) -> Artifact:
        import tvm
        from tvm import relax

        from .intops import HexagonBuilder
        tools = _tools()
        target = self.tvm_target()
        builder = HexagonBuilder(model, integer=self.int8 and self.hvx == 128,
                                 float_hvx=self.hvx == 128 and self.arch != "v67",
                                 fallback_ops=self.capabilities.fallback_ops)
        mod = builder.build()
        seq = tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(), relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(), relax.transform.FuseOps(),
            relax.transform.FuseTIR(), relax.transform.DeadCodeElimination(), relax.transform.AttachGlobalSymbol()])
        with target:
            mod = seq(mod)
        calls, tensors, copies = self._walk(model, mod)
        kernels = tvm.IRModule({gv: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)})
        with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
            ex = tvm.compile(kernels, target=target)
        work = tempfile.mkdtemp(prefix="edgec-hexagon-")
        try:
            kobj = os.path.join(out_dir, "kernels.o")
            kmod = ex.mod if hasattr(ex, "mod") else ex
            kmod.write_to_file(kobj)
            if self.asm:  # LLVM generates the assembly a second time: minutes for a BERT-sized model
                with open(os.path.join(out_dir, "kernels.s"), "w") as f:
                    f.write(kmod.inspect_source("asm"))
            self._check_symbols(tools, kobj, allowed=RUNTIME_SYMBOLS, what="the kernels")
            temps = [t for t in tensors if t.kind == "temp"]
            arena = plan_arena(temps)
            blob = self._write_blob([t for t in tensors if t.kind == "const"], os.path.join(out_dir, "weights.bin"))
            self._write_header(model, os.path.join(out_dir, "model.h"))
            with open(os.path.join(out_dir, "io.json"), "w") as f:  # what the runner reads and writes, in order
                json.dump({"inputs": [{"name": v.name, "shape": list(v.static_shape), "dtype": v.dtype.numpy.name}
                                      for v in model.graph.inputs],
                           "outputs": [{"name": v.name, "shape": list(v.static_shape or ()),
                                        "dtype": v.dtype.numpy.name if v.dtype else "float32"}
                                       for v in model.graph.outputs]}, f, indent=1)
            self._write_driver(calls, tensors, copies, len(model.graph.outputs), arena,
                               os.path.join(out_dir, "model.c"))
            shutil.copy(os.path.join(HERE, "runtime.c"), os.path.join(out_dir, "runtime.c"))
            self._write_runner(model, os.path.join(out_dir, "runner.c"))
            self._link(tools, out_dir, work, ws_bytes=workspace_bytes(kernels))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        files = ["kernels.o", *(["kernels.s"] if self.asm else []), "weights.bin", "weights.S", "model.h", "model.c",
                 "runtime.c", "runner.c", "libmodel.so", "runner", "io.json"]
        return Artifact(files, {"tvm_version": tvm.__version__, "arch": self.arch, "hvx": self.hvx,
                                "kernels": sorted({c[0] for c in calls}), "calls": len(calls),
                                "arena_bytes": arena, "weights_bytes": blob,
                                "arithmetic": self._arithmetic(model, builder),
                                "integer_kernels": [k for k in builder.kernels if k.startswith("q")],
                                "hvx_float_kernels": [k for k in builder.kernels if k.startswith("f")],
                                "verification_runtime": "qemu-hexagon" if self.arch == "v67" else
                                f"none: qemu-hexagon 7.2 runs v67 only ({self.arch} is compile-only)"})

    @staticmethod
    def _arithmetic(model: Model, builder) -> str:
        fused = sum(c.fused is not None for c in builder.ops.values())
        parts = []
        if builder.ops:
            parts.append(f"{len(builder.ops)} int8 Conv/Linear on integer HVX kernels (vrmpy, int32 accumulation; "
                         f"{fused} requantize into the next kernel's codes, the rest dequantize to float32), "
                         "bit-exact with edgec.ir.integer")
        rest = [n for n in model.graph if n.qualified_op in ("Conv", "edgec::Linear") and id(n) not in builder.ops]
        simulated = any(v.quant is not None for v in model.graph.values())
        hvx_float = sum(k.startswith("f") for k in builder.kernels)
        if hvx_float:
            parts.append(f"{hvx_float} float Linear/Conv on HVX float kernels (v68 qfloat / v73+ IEEE float)")
        parts.append("scalar float32 kernels for everything else" if parts else "scalar float32 kernels")
        if simulated and rest:
            parts.append(f"{len(rest)} Conv/Linear with simulated int8 activations (quantize-dequantize in float)")
        return "; ".join(parts)

    @staticmethod
    def _walk(model: Model, mod) -> tuple[list, list[_Tensor], list[tuple[int, _Tensor]]]:
        """main's bindings as kernel calls [(kernel, [tensor...])], every tensor with its live range, and the
        copies [(output number, tensor)] for outputs that are an input, a constant or another output's tensor.

        Besides kernel calls, main may bind a variable to another variable, to a tuple of them or to an item
        of such a tuple (a model with several outputs returns a tuple): these only name existing tensors."""
        import tvm
        from tvm import relax
        fn = mod["main"]
        body = fn.body
        # Keyed by the Relax variable itself: Relax reuses name hints (two different "lv4"s in one function).
        # A value is a _Tensor, or a tuple of values for a tuple-typed variable.
        tensors: dict = {}
        every: list[_Tensor] = []
        for i, p in enumerate(fn.params):
            if not isinstance(p.ty, relax.TensorType) or p.ty.shape is None:
                raise UnsupportedError(f"main's parameter {p.name} is not a tensor of static shape: {p.ty!s:.80}")
            tensors[p] = _Tensor(f"in{i}_{_c_name(p.name)}", [int(s) for s in p.ty.shape], str(p.ty.dtype), "input", i)
            every.append(tensors[p])
        calls = []
        consts = [0]
        bindings = [b for blk in body.blocks for b in blk.bindings]
        call_tir = tvm.ir.Op.get("relax.call_tir")

        def const(a, step):
            arr = a.value.numpy()
            t = _Tensor(f"c{consts[0]}", list(arr.shape), str(arr.dtype), "const", consts[0], data=arr, first=step,
                        last=step)
            consts[0] += 1
            every.append(t)
            return t

        def value(e, step):
            """The tensor (or tuple of them) a non-call expression names."""
            if isinstance(e, tvm.ir.GenericConst):
                return const(e, step)
            if isinstance(e, relax.Tuple):
                return tuple(value(f, step) for f in e.fields)
            if isinstance(e, relax.TupleGetItem):
                v = value(e.tuple_value, step)
                if not isinstance(v, tuple):
                    raise UnsupportedError(f"main takes an item of a non-tuple: {e!s:.120}")
                return v[e.index]
            if isinstance(e, relax.Var) and e in tensors:
                return tensors[e]
            raise UnsupportedError(f"the hexagon target lowers only kernel calls, tuples and their items; main has "
                                   f"{e!s:.120}")

        def flat(v):
            return [x for y in v for x in flat(y)] if isinstance(v, tuple) else [v]

        def temp(name, ty, step):
            if not isinstance(ty, relax.TensorType) or ty.shape is None:
                raise UnsupportedError(f"kernel result {name} is not a tensor of static shape: {ty!s:.80}")
            t = _Tensor(f"t{step}_{len(every)}_{_c_name(name)}", [int(s) for s in ty.shape], str(ty.dtype), "temp",
                        first=step, last=step)
            every.append(t)
            return t

        for step, b in enumerate(bindings):
            call = b.value
            if not (isinstance(call, relax.Call) and call.op == call_tir):
                tensors[b.var] = value(call, step)
                continue
            if len(call.args) > 2:
                raise UnsupportedError(f"kernel {call.args[0].name_hint} takes symbolic shape arguments")
            args = []
            for a in call.args[1].fields:
                for t in flat(value(a, step)):
                    t.last = step
                    args.append(t)
            ty = b.var.ty
            if isinstance(ty, relax.TupleType):  # a kernel with several results: they follow its inputs
                outs = tuple(temp(f"{b.var.name}_{k}", f, step) for k, f in enumerate(ty.fields))
            else:
                outs = temp(b.var.name, ty, step)
            tensors[b.var] = outs
            calls.append((call.args[0].name_hint, args + flat(outs)))
        results = value(body.body, len(bindings))
        outs = list(results) if isinstance(results, tuple) else [results]
        if len(outs) != len(model.graph.outputs):
            raise UnsupportedError(f"main returns {len(outs)} values; the model has {len(model.graph.outputs)} "
                                   "outputs")
        copies = []
        for k, (t, v) in enumerate(zip(outs, model.graph.outputs)):
            if isinstance(t, tuple):
                raise UnsupportedError(f"output {v.name!r} is a nested tuple in main")
            want = list(v.static_shape or ()), (v.dtype.numpy.name if v.dtype else "float32")
            if (t.shape, t.dtype) != want and not (int(np.prod(t.shape)) == int(np.prod(want[0])) and
                                                     t.dtype == want[1]):
                raise UnsupportedError(f"output {v.name!r}: main computes {t.dtype}{t.shape}, the model declares "
                                       f"{want[1]}{want[0]}")
            if t.kind == "temp":   # the kernel writes straight into the caller's output buffer
                t.kind, t.index = "output", k
            else:                  # an input, a constant or another output: copied after the kernels
                t.last = len(bindings)
                copies.append((k, t))
        return calls, every, copies

    @staticmethod
    def _write_blob(consts: list[_Tensor], path: str, align: int = 128) -> int:
        off = 0
        with open(path, "wb") as f:
            for t in consts:
                pad = -off % align
                f.write(b"\0" * pad)
                off += pad
                t.offset = off
                data = np.ascontiguousarray(t.data).tobytes()
                f.write(data)
                off += len(data)
        return off

    @staticmethod
    def _write_header(model: Model, path: str) -> None:
        lines = ["/* Generated by edgec: the model's entry point and I/O shapes. */", "#pragma once",
                 "#include <stdint.h>", ""]
        for k, v in enumerate(model.graph.inputs):
            lines.append(f"#define EDGEC_INPUT{k}_SHAPE {{{', '.join(map(str, v.static_shape))}}}  /* {v.name} */")
        for k, v in enumerate(model.graph.outputs):
            lines.append(f"#define EDGEC_OUTPUT{k}_SHAPE {{{', '.join(map(str, v.static_shape or ()))}}}  "
                         f"/* {v.name} */")
        args = [f"const void *in{k}" for k in range(len(model.graph.inputs))]
        args += [f"void *out{k}" for k in range(len(model.graph.outputs))]
        lines += ["", "/* Runs the model once; returns 0 on success, the failing kernel's number otherwise. */",
                  f"int edgec_model_run({', '.join(args)});", ""]
        with open(path, "w") as f:
            f.write("\n".join(lines))

    @staticmethod
    def _write_driver(calls, tensors: list[_Tensor], copies: list[tuple[int, _Tensor]], n_out: int, arena: int,
                      path: str) -> None:
        n_in = sum(t.kind == "input" for t in tensors)
        lines = ["/* Generated by edgec: calls the kernels in order on a static arena planned by liveness. */",
                 "#include <stddef.h>", "#include <stdint.h>", "#include <tvm/ffi/c_api.h>", '#include "model.h"', "",
                 "void *memcpy(void *, const void *, size_t);",
                 "extern const unsigned char _binary_weights_bin_start[];",
                 f"static unsigned char arena[{max(arena, 1)}] __attribute__((aligned(128)));"]
        for k in sorted({c[0] for c in calls}):
            lines.append(f"extern int32_t __tvm_ffi_{k}(void *, const TVMFFIAny *, int32_t, TVMFFIAny *);")
        for t in tensors:
            lines.append(f"static int64_t shape_{t.name}[] = {{{', '.join(map(str, t.shape)) or '1'}}};")

        def ptr(t: _Tensor) -> str:
            return {"input": f"(void *)in{t.index}", "output": f"out{t.index}",
                    "const": f"(void *)(_binary_weights_bin_start + {t.offset})",
                    "temp": f"(void *)(arena + {t.offset})"}[t.kind]
        args = [f"const void *in{k}" for k in range(n_in)] + [f"void *out{k}" for k in range(n_out)]
        lines += ["", f"int edgec_model_run({', '.join(args)}) {{", "  DLTensor t[16]; TVMFFIAny a[16]; "
                  "TVMFFIAny ret;"]
        for i, (kernel, ts) in enumerate(calls):
            if len(ts) > 16:
                raise UnsupportedError(f"kernel {kernel} takes {len(ts)} tensors (at most 16)")
            for j, t in enumerate(ts):
                code, bits = _DT.get(t.dtype, (None, None))
                if code is None:
                    raise UnsupportedError(f"tensor {t.name}: dtype {t.dtype} is not supported yet")
                lines.append(f"  t[{j}] = (DLTensor){{.data = {ptr(t)}, .device = {{kDLCPU, 0}}, "
                             f".ndim = {len(t.shape)}, .dtype = {{{code}, {bits}, 1}}, .shape = shape_{t.name}, "
                             f".strides = 0, .byte_offset = 0}};")
                lines.append(f"  a[{j}].type_index = kTVMFFIDLTensorPtr; a[{j}].zero_padding = 0; "
                             f"a[{j}].v_ptr = &t[{j}];")
            lines.append(f"  ret.type_index = 0; if (__tvm_ffi_{kernel}(0, a, {len(ts)}, &ret) != 0) return {i + 1};")
        # outputs that are an input, a constant or another output's tensor: copied once every kernel has run
        for k, t in copies:
            lines.append(f"  memcpy(out{k}, {ptr(t)}, {t.nbytes});  /* {t.name} */")
        lines += ["  return 0;", "}", ""]
        with open(path, "w") as f:
            f.write("\n".join(lines))

    @staticmethod
    def _write_runner(model: Model, path: str) -> None:
        """A static test runner: reads the inputs (raw, in order) from stdin, writes the outputs to stdout."""
        ins = [int(np.prod(v.static_shape)) * v.dtype.numpy.itemsize for v in model.graph.inputs]
        outs = [int(np.prod(v.static_shape)) * (v.dtype.numpy.itemsize if v.dtype else 4) for v in model.graph.outputs]
        lines = ["/* Generated by edgec: test runner for qemu-hexagon (stdin -> inputs, outputs -> stdout). */",
                 '#include "model.h"',
                 "static long sys3(long n, long a, long b, long c) {",
                 '  register long r0 __asm__("r0") = a; register long r1 __asm__("r1") = b;',
                 '  register long r2 __asm__("r2") = c; register long r6 __asm__("r6") = n;',
                 '  __asm__ volatile("trap0(#1)" : "+r"(r0) : "r"(r1), "r"(r2), "r"(r6) : "memory");',
                 "  return r0;", "}",
                 "static long io(long nr, int fd, unsigned char *b, long n) { long done = 0; while (done < n) {",
                 "  long r = sys3(nr, fd, (long)(b + done), n - done); if (r <= 0) break; done += r; } return done; }"]
        for k, n in enumerate(ins):
            lines.append(f"static unsigned char in{k}[{n}] __attribute__((aligned(128)));")
        for k, n in enumerate(outs):
            lines.append(f"static unsigned char out{k}[{n}] __attribute__((aligned(128)));")
        lines.append("void _start(void) {")
        lines += [f"  if (io(63, 0, in{k}, {n}) != {n}) sys3(93, 100, 0, 0);" for k, n in enumerate(ins)]
        call_args = [f"in{k}" for k in range(len(ins))] + [f"out{k}" for k in range(len(outs))]
        lines.append(f"  int rc = edgec_model_run({', '.join(call_args)});")
        lines += [f"  io(64, 1, out{k}, {n});" for k, n in enumerate(outs)]
        lines += ["  sys3(93, rc, 0, 0);", "  for (;;) {}", "}", ""]
        with open(path, "w") as f:
            f.write("\n".join(lines))

    def cflags(self, ws_bytes: int, includes: tuple[str, ...] = ()) -> list[str]:
        """clang flags for the generated C (driver, runtime, runners): freestanding, the TVM FFI / DLPack
        headers, the workspace size."""
        import tvm_ffi
        inc = os.path.join(os.path.dirname(tvm_ffi.__file__), "include")
        dl = [os.path.join(r, "") for r, _, _ in os.walk(os.path.dirname(tvm_ffi.__file__))
              if r.endswith(os.path.join("dlpack", "include"))]
        # The driver and runtime are plain C: clang 14 (Debian 12) knows up to v69, which newer arches run.
        cpu = self.arch if self.arch in ("v67", "v68", "v69") else "v69"
        flags = ["--target=hexagon-unknown-linux-musl", f"-mcpu=hexagon{cpu}", "-ffreestanding",
                 "-nostdlib", "-fno-builtin", "-O2", "-fPIC", "-mlong-calls", f"-I{inc}",
                 f"-DEDGEC_WORKSPACE_BYTES={ws_bytes}"] + [f"-I{d}" for d in (*dl, *includes)]
        return flags + (["-mhvx", "-mhvx-length=128b"] if self.hvx else [])

    def _link(self, tools: dict[str, str], out_dir: str, work: str, ws_bytes: int) -> None:
        cflags = self.cflags(ws_bytes, (out_dir,))
        # The weights blob is included by an assembler file rather than ld's --format=binary, whose section is
        # byte-aligned: the integer kernels load their weights with aligned 128-byte vector loads.
        with open(os.path.join(out_dir, "weights.S"), "w") as f:
            f.write('/* Generated by edgec: the weights blob, 128-byte aligned. */\n'
                    '.section .rodata.edgec_weights,"a"\n.p2align 7\n.globl _binary_weights_bin_start\n'
                    '_binary_weights_bin_start:\n.incbin "weights.bin"\n')
        objs = {}
        for src in ("model.c", "runtime.c", "runner.c", "weights.S"):
            obj = os.path.join(work, src[:-2] + ".o")
            self._run([tools["clang"], *cflags, "-c", src, "-o", obj], f"compiling {src}", cwd=out_dir)
            objs[src] = obj
        blob = [objs["weights.S"]]
        kobj = os.path.join(out_dir, "kernels.o")
        self._run([tools["ld.lld"], "-shared", "-o", os.path.join(out_dir, "libmodel.so"), objs["model.c"],
                   objs["runtime.c"], kobj, *blob], "linking libmodel.so", cwd=out_dir)
        self._run([tools["ld.lld"], "-static", "-e", "_start", "-o", os.path.join(out_dir, "runner"),
                   objs["runner.c"], objs["model.c"], objs["runtime.c"], kobj, *blob], "linking the runner",
                  cwd=out_dir)
        self._check_symbols(tools, os.path.join(out_dir, "runner"), allowed=frozenset(), what="the runner")

    @staticmethod
    def _check_symbols(tools: dict[str, str], path: str, allowed: frozenset[str], what: str) -> None:
        """Undefined symbols (and weak undefined ones, which resolve to NULL and crash on first call) must be
        in ``allowed``: a missing runtime hook is a build error, not a crash."""
        out = subprocess.run([tools["llvm-nm"], path], capture_output=True, text=True, check=True).stdout
        missing = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[-2] in ("U", "w", "v") and parts[-1] not in allowed:
                missing.append(parts[-1])
        if missing:
            raise UnsupportedError(f"{what} need symbols edgec's Hexagon runtime does not provide: "
                                   f"{', '.join(sorted(set(missing)))}")

    @staticmethod
    def _run(cmd: list[str], what: str, cwd: str | None = None) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
        if r.returncode != 0:
            raise UnsupportedError(f"hexagon: {what} failed:\n{r.stderr.strip()[:2000]}")

    # ---- execution --------------------------------------------------------------------------------------------
    def run_artifact(self, out_dir: str, feeds: Mapping[str, np.ndarray], input_names=None) -> list[np.ndarray]:
        qemu = shutil.which("qemu-hexagon")
        if qemu is None:
            raise NotImplementedError("qemu-hexagon is not installed (apt-get install qemu-user): the artifact was "
                                      "built and its symbols checked, but not executed")
        if self.arch != "v67":
            raise NotImplementedError(f"qemu-hexagon 7.2 runs v67 only; the {self.arch} artifact is compile-only")
        with open(os.path.join(out_dir, "io.json")) as f:
            io = json.load(f)
        missing = [i["name"] for i in io["inputs"] if i["name"] not in feeds]
        if missing:
            raise UnsupportedError(f"the Hexagon runner needs the inputs {missing}")
        data = b"".join(np.ascontiguousarray(feeds[i["name"]], dtype=i["dtype"]).reshape(i["shape"]).tobytes()
                        for i in io["inputs"])
        r = subprocess.run([qemu, os.path.join(out_dir, "runner")], input=data, capture_output=True, timeout=600)
        if r.returncode != 0:
            raise UnsupportedError(f"the Hexagon runner failed under qemu-hexagon (exit {r.returncode}): "
                                   f"{r.stderr.decode(errors='replace')[:500]}")
        outs, off, raw = [], 0, r.stdout
        for o in io["outputs"]:
            dt = np.dtype(o["dtype"])
            n = int(np.prod(o["shape"], dtype=np.int64)) * dt.itemsize
            outs.append(np.frombuffer(raw[off:off + n], dt).reshape(o["shape"]).copy())
            off += n
        if off != len(raw):
            raise UnsupportedError(f"the Hexagon runner wrote {len(raw)} bytes; the outputs need {off}")
        return outs


@hookimpl
def edgec_register_targets(registry):
    registry.register(HexagonTarget)
