"""The host ``cpu`` target: edgec IR -> TVM Relax -> a compiled library.

``arch=x86_64`` (default) emits ``model.so``, loaded and run here by TVM's runtime for ``--verify``.
``arch=aarch64`` cross-compiles for 64-bit Arm Linux: it emits the object files (``model.tar``) and,
when clang and ld.lld are installed, a linked ``model.so`` (not runnable on this machine).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...errors import UnsupportedError
from ...hookspecs import hookimpl
from ...ir import Model, Node, QuantizedTensor
from ...ir.integer import plan
from ...ir.passes import PassContext, option
from ...ir.schemes import Vector
from ...target import Artifact, Capabilities, Target
from ...api.relax import (
    FALLBACK_OPS,
    LINEAR_WEIGHTS,
    RelaxBuilder,
    pack_codes,
    refuse_variant,
    supported_ops,
    vector_arrays,
)

_TRIPLES = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
_QUANT = LINEAR_WEIGHTS.quant(
    {"symmetric": range(2, 9), "asymmetric": range(2, 9), "affine": range(2, 9), "vector": range(1, 17)}
)


def _tvm():
    try:
        import tvm
        from tvm import relax  # noqa: F401
    except ImportError:
        raise UnsupportedError("the cpu target needs TVM: pip install 'edgec[tvm]' (apache-tvm 0.27)") from None
    return tvm


def use_all_cores(threads: int = 0) -> None:
    """TVM's thread pool counts one core on some VMs; give it ``threads``, or every core this process may use
    (unless the user set TVM_NUM_THREADS). Must run before the first parallel kernel in the process."""
    os.environ.setdefault("TVM_NUM_THREADS", str(threads or len(os.sched_getaffinity(0))))


@dataclasses.dataclass(frozen=True)
class CpuTarget(Target):
    name: ClassVar[str] = "cpu"
    summary: ClassVar[str] = "host CPU through TVM (x86_64 runs here; aarch64 is cross-compiled)"
    runtime: ClassVar[str] = "TVM runtime (x86_64)"
    compile_cost: ClassVar[float] = 10.0  # TVM generates and compiles kernels (LLVM)
    capabilities: ClassVar[Capabilities] = Capabilities(
        ops=supported_ops(),
        dtypes=frozenset({"f32", "f16", "f64", "i64", "i32", "i16", "i8", "u8", "u16", "u32", "u64", "bool"}),
        quant=_QUANT,
        activation_quant=True,
        mixed=(2, 3, 4, 8),
        fallback_ops=FALLBACK_OPS - supported_ops(),
    )
    arch: str = option("x86_64", choices=tuple(_TRIPLES), help="instruction set of the emitted library")
    mcpu: str = option(
        "auto",
        help="LLVM -mcpu: 'auto' (default) is this machine's CPU for x86_64 (AVX2 / AVX-512 where it has them; the "
        "library then refuses to load on a CPU without those features) and the generic baseline for a "
        "cross-compile; 'native' the same for x86_64 only; empty, or a name such as x86-64 / x86-64-v3 / "
        "znver4 / cortex-a76, for a library that runs on every CPU of that level",
    )
    schedule: bool = option(True, help="parallel + vectorized kernel schedules (false: TVM's scalar default)")
    tune: int = option(
        0,
        help="MetaSchedule trials per matmul / convolution kernel, searched on this machine (0: the default "
        "schedules); the database is kept per CPU in the compile cache's tuning/ folder and reused",
    )
    int8: bool = option(
        True,
        help="run statically quantized int8 Conv / Linear (quantize-activations) as integer kernels, bit-exact "
        "with edgec.ir.integer (AVX-512 VNNI where the CPU has it); false: simulate them in float, as the "
        "reference executor does",
    )
    threads: int = option(
        0,
        help="CPU threads for --verify (0: every core); a deployed library runs on TVM's thread pool, sized by "
        "TVM_NUM_THREADS (every core when unset)",
    )

    def accepts_node(self, node: Node, model: Model) -> bool:
        """A node through TVM's converters only in the variants measured right there (others are rewritten by
        the decompose pass where it can, and refused by name otherwise)."""
        if not super().accepts_node(node, model):
            return False
        return node.qualified_op not in self.capabilities.fallback_ops or refuse_variant(node) is None

    def check(self, model: Model) -> list[str]:
        problems = super().check(model)
        for v in model.graph.initializers.values():
            if isinstance(v.const, QuantizedTensor) and not all(
                (u.node.qualified_op in ("edgec::Linear", "Conv") and u.index == 1)
                or (u.node.qualified_op == "Gather" and u.index == 0)
                for u in v.uses
            ):
                problems.append(
                    f"weight {v.name!r}: quantized weights are carried only as Linear/Conv weights and Gather tables"
                )
            elif (
                isinstance(v.const, QuantizedTensor)
                and isinstance(v.const.scheme_type, Vector)
                and not all(u.node.qualified_op == "edgec::Linear" for u in v.uses)
            ):
                problems.append(f"weight {v.name!r}: vector-quantized weights are carried only as Linear weights")
        return problems

    def integer_semantics(self) -> bool:
        return self.int8 and self.schedule

    def tvm_target(self):
        tvm = _tvm()
        spec = {"kind": "llvm", "mtriple": _TRIPLES[self.arch]}
        if self.mcpu == "native" or (self.mcpu == "auto" and self.arch == "x86_64"):
            if self.arch != "x86_64":
                raise UnsupportedError("mcpu=native describes this x86_64 machine; name the Arm CPU instead")
            from tvm.target import codegen

            spec["mcpu"] = codegen.llvm_get_system_cpu()
        elif self.mcpu and self.mcpu != "auto":
            spec["mcpu"] = self.mcpu
        if self.arch == "x86_64":
            # LLVM keeps to 256-bit vectors on AVX-512 CPUs unless told otherwise (a frequency precaution of
            # older server parts); the register tiles are sized for the full 512-bit registers
            spec["mattr"] = ["-prefer-256-bit"]
            if self.mcpu in ("native", "auto"):
                # a virtual machine may hide extensions its CPU model has: turn off what this one does not show
                flags = _host_flags()
                model_features = vector_features(tvm.target.Target(spec))
                spec["mattr"] += [
                    f"-{_LLVM_NAMES.get(f, f.replace('_', '-'))}" for f in model_features if flags and f not in flags
                ]
        return tvm.target.Target(spec)

    def emit(self, model: Model, out_dir: str, ctx: PassContext) -> Artifact:
        tvm = _tvm()
        from tvm import relax

        target = self.tvm_target()
        from tvm.target.codegen import llvm_get_vector_width

        from .gemv import CpuBuilder

        # float32 lanes of the vector registers, for the kernels the builder schedules itself (none unscheduled)
        lanes = llvm_get_vector_width(target) // 32 if self.schedule else 0
        builder: RelaxBuilder = CpuBuilder(model, lanes)
        ops = plan(model, self.integer_limits()) if self.integer_semantics() else {}
        if ops:
            from .intops import IntBuilder, has_vnni

            builder = IntBuilder(model, ops, vnni=has_vnni(target), lanes=lanes)
        mod = builder.build()
        try:
            if self.schedule:
                from .schedule import SplitGemm, build_pipeline, exact_target

                tuned = self._tune(mod, target, ctx) if self.tune else None
                exact = exact_target(target)
                if exact is None:
                    ex = relax.build(mod, target=target, relax_pipeline=build_pipeline(target, None, tuned))
                else:
                    # matmul / convolution kernels with FMA, every other kernel without (see SplitGemm)
                    split = SplitGemm(target)
                    ex = relax.build(mod, target=exact, relax_pipeline=build_pipeline(target, split, tuned))
                    lib = split.library()
                    if lib is not None:
                        ex.mod.import_module(lib)
            else:
                ex = relax.build(mod, target=target)
        except Exception as e:
            converted = [
                f"node {n.name!r} ({n.qualified_op})"
                for n in model.graph
                if n.qualified_op not in self.capabilities.ops
            ]
            if not converted:
                raise
            reason = ([x.strip() for x in str(e).strip().splitlines() if x.strip()] or [type(e).__name__])[-1]
            raise UnsupportedError(
                f"TVM could not compile the model ({type(e).__name__}: {reason[:300]}); it holds "
                "nodes lowered through TVM's ONNX converters, the likeliest cause",
                converted,
            ) from None
        files = []
        if self.arch == "x86_64":
            ex.export_library(os.path.join(out_dir, "model.so"))
            files.append("model.so")
        else:
            ex.export_library(os.path.join(out_dir, "model.tar"))
            files.append("model.tar")
            if shutil.which("clang") and shutil.which("ld.lld"):
                from tvm.support import cc

                fcompile = cc.cross_compiler(
                    "clang", options=[f"--target={_TRIPLES[self.arch]}", "-fuse-ld=lld", "-nostdlib", "-shared"]
                )
                ex.export_library(os.path.join(out_dir, "model.so"), fcompile=fcompile)
                files.append("model.so")
        packed = {}
        for v in model.graph.initializers.values():
            if isinstance(v.const, QuantizedTensor) and isinstance(v.const.scheme_type, Vector):
                codes, book = vector_arrays(v.const)
                assert v.const.codebook is not None  # a vector-quantized weight carries its codebooks
                packed[v.name] = {
                    "stored_dtype": str(codes.dtype),
                    "stored_bytes": int(codes.nbytes + book.nbytes),
                    "codebook": list(v.const.codebook.shape),
                }
            elif isinstance(v.const, QuantizedTensor):
                arr, per_byte = pack_codes(v.const)
                packed[v.name] = {
                    "stored_dtype": str(arr.dtype),
                    "stored_bytes": int(arr.nbytes),
                    "codes_per_byte": per_byte,
                }
        return Artifact(
            files,
            {
                "tvm_version": tvm.__version__,
                "triple": _TRIPLES[self.arch],
                "mcpu": str(target.attrs.get("mcpu", "")) or "generic",
                # the vector ISA extensions the library may execute: checked against the CPU before it is loaded
                "cpu_features": vector_features(target) if self.arch == "x86_64" else [],
                "packed_weights": packed,
                "integer_kernels": list(getattr(builder, "kernels", [])),
                "arithmetic": _arithmetic(model, builder),
                "entry": "main",
            },
        )

    def _tune(self, mod, target, ctx: PassContext):
        """MetaSchedule over the model's matmul / convolution kernels (``tune`` trials each, those not yet in this
        CPU's database); the pass that applies the database's schedules."""
        tvm = _tvm()
        from .schedule import front_passes, gemm_kernels
        from .tuning import apply_pass, database_dir, tune

        if self.arch != "x86_64" or self.mcpu not in ("auto", "native"):
            raise UnsupportedError(
                "tune= measures candidate kernels on this machine, so it needs a library for this CPU: "
                "drop mcpu= / arch= (mcpu=auto), or leave tune= out"
            )
        config = ctx.config if ctx is not None else {}
        with target:
            kernels = gemm_kernels(tvm.transform.Sequential(front_passes(target))(mod), target)
        db = tune(kernels, target, self.tune, database_dir(config.get("cache_dir"), target), int(config.get("seed", 0)))
        return apply_pass(db, target)

    def run_artifact(self, out_dir: str, feeds: Mapping[str, np.ndarray], input_names=None) -> list[np.ndarray]:
        if self.arch != "x86_64":
            raise NotImplementedError(f"a {self.arch} library cannot run on this x86_64 machine")
        use_all_cores(self.threads)
        return self._load(out_dir, list(input_names or feeds))(feeds)

    def runner(self, out_dir: str, files, input_names, threads: int):
        """The library loaded once in a Relax VM; TVM's thread pool takes ``TVM_NUM_THREADS`` (edgec bench sets it
        to ``threads`` before the pool starts)."""
        if self.arch != "x86_64":
            raise UnsupportedError(
                f"a {self.arch} library cannot run on this x86_64 machine: run edgec bench on an {self.arch} machine"
            )
        os.environ.setdefault("TVM_NUM_THREADS", str(threads))
        return self._load(out_dir, list(input_names))

    def _load(self, out_dir: str, names: list[str]):
        """``run(feeds) -> outputs`` of model.so in a Relax VM on the host CPU (after checking that this CPU has
        the vector extensions the library was built for: a missing one would kill the process with SIGILL)."""
        tvm = _tvm()
        from tvm import relax

        check_cpu_features(out_dir)

        vm = relax.VirtualMachine(tvm.runtime.load_module(os.path.join(out_dir, "model.so")), tvm.cpu())
        main = vm["main"]

        def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            res = main(*[tvm.runtime.tensor(_contiguous(feeds[n])) for n in names])
            return [res.numpy()] if hasattr(res, "numpy") else [r.numpy() for r in res]

        return run


def _arithmetic(model: Model, builder: RelaxBuilder) -> str:
    """How the artifact computes the model's int8 layers, for the manifest."""
    ops = getattr(builder, "ops", {})
    parts = []
    if ops:
        fused = sum(c.fused is not None for c in ops.values())
        how = "AVX-512 VNNI vpdpbusd" if getattr(builder, "vnni", False) else "int32 vector arithmetic"
        parts.append(
            f"{len(ops)} int8 Conv/Linear on integer kernels ({how}, int32 accumulation; {fused} requantize into "
            "the next kernel's codes, the rest dequantize to float32), bit-exact with edgec.ir.integer"
        )
    rest = [n for n in model.graph if n.qualified_op in ("Conv", "edgec::Linear") and id(n) not in ops]
    parts.append("float32 kernels for everything else" if parts else "float32 kernels")
    if rest and any(v.quant is not None for v in model.graph.values()):
        parts.append(f"{len(rest)} Conv/Linear with simulated int8 activations (quantize-dequantize in float)")
    return "; ".join(parts)


# LLVM's names of the x86 vector extensions -> the flag /proc/cpuinfo shows for each (those not listed: the name
# with '-' as '_')
_CPUINFO_FLAGS = {
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avx512vbmi2": "avx512_vbmi2",
    "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq",
    "avx512vp2intersect": "avx512_vp2intersect",
    "avxvnni": "avx_vnni",
}


def vector_features(target) -> list[str]:
    """The AVX / AVX-512 / AMX / FMA / F16C extensions an x86_64 TVM target enables, as /proc/cpuinfo names them."""
    from tvm.target import codegen

    names = codegen.llvm_get_cpu_features(target)
    keep = [f for f in names if f.startswith(("avx", "amx-")) or f in ("fma", "f16c")]
    return sorted(_CPUINFO_FLAGS.get(f, f.replace("-", "_")) for f in keep)


_LLVM_NAMES = {v: k for k, v in _CPUINFO_FLAGS.items()}


def _host_flags() -> set[str]:
    """The feature flags /proc/cpuinfo shows for this CPU (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return set(next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), []))
    except OSError:
        return set()


def check_cpu_features(out_dir: str) -> None:
    """Refuse (UnsupportedError) to load a library whose manifest lists vector extensions this CPU lacks."""
    import json

    try:
        with open(os.path.join(out_dir, "manifest.json"), encoding="utf-8") as f:
            need = json.load(f).get("target", {}).get("cpu_features") or []
    except (OSError, ValueError, AttributeError):
        return  # no manifest (a bare library): nothing to check against
    flags = _host_flags()
    missing = [x for x in need if x not in flags]
    if flags and missing:
        raise UnsupportedError(
            f"{out_dir}: the library was compiled for a CPU with {', '.join(missing)}, which this CPU lacks; "
            "recompile with --target 'cpu{mcpu=x86-64-v3}' (AVX2), 'cpu{mcpu=x86-64}' (any x86_64) or on this "
            "machine"
        )


def _contiguous(x) -> np.ndarray:
    """A C-contiguous array of ``x``'s shape (np.ascontiguousarray turns a 0-d array into shape (1,))."""
    a = np.asarray(x)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(a.shape)


@hookimpl
def edgec_register_targets(registry):
    registry.register(CpuTarget)
