"""Runs one TIR kernel alone under qemu-hexagon: for kernel tests (bit-exactness against numpy, codegen
regressions) and for counting the instruction packets a kernel executes (``benchmarks/hexagon.py``).

The kernel is compiled by the target's own TVM/LLVM settings, its inputs are embedded (128-byte aligned) in
a static runner that calls it once and writes its outputs to stdout, linked with the artifact runtime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence

import numpy as np

from ...errors import UnsupportedError
from . import toolchain

_DL = {"uint8": "kDLUInt, 8", "int8": "kDLInt, 8", "int32": "kDLInt, 32", "float32": "kDLFloat, 32"}


def build(
    func,
    inputs: Sequence[np.ndarray],
    outputs: Sequence[tuple[tuple, str]],
    work: str,
    *,
    arch: str = "v67",
    hvx: int = 128,
) -> str:
    """Compile ``func`` (a PrimFunc whose parameters are ``inputs`` then ``outputs``) into a static runner
    in ``work``; returns the runner's path. Also leaves ``kernel.s`` (the assembly) there."""
    import tvm

    from . import HexagonTarget

    tools = toolchain.find_tools()
    os.makedirs(work, exist_ok=True)
    t = HexagonTarget(arch=arch, hvx=hvx)
    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        ex = tvm.compile(tvm.IRModule({"kern": func.with_attr("global_symbol", "kern")}), target=t.tvm_target())
    mod = ex.mod if hasattr(ex, "mod") else ex
    mod.write_to_file(os.path.join(work, "kernel.o"))
    with open(os.path.join(work, "kernel.s"), "w") as f:
        f.write(mod.inspect_source("asm"))
    blob, offs = b"", []
    for a in inputs:
        offs.append(len(blob))
        raw = np.ascontiguousarray(a).tobytes()
        blob += raw + b"\0" * (-len(raw) % 128)
    with open(os.path.join(work, "data.bin"), "wb") as f:
        f.write(blob)
    with open(os.path.join(work, "data.S"), "w") as f:
        f.write('.section .rodata.edgec_data,"a"\n.p2align 7\n.globl edgec_data\nedgec_data:\n.incbin "data.bin"\n')
    main_c = _main_c(inputs, outputs, offs)
    with open(os.path.join(work, "main.c"), "w") as f:
        f.write(main_c)
    cflags = t.cflags(ws_bytes=65536)
    for src, obj in (("data.S", "data.o"), ("main.c", "main.o"), (toolchain.RUNTIME_C, "rt.o")):
        toolchain.run([tools["clang"], *cflags, "-c", src, "-o", obj], f"compiling {os.path.basename(src)}", cwd=work)
    toolchain.run(
        [tools["ld.lld"], "-static", "-e", "_start", "-o", "runner", "main.o", "rt.o", "kernel.o", "data.o"],
        "linking the kernel runner",
        cwd=work,
    )
    toolchain.check_symbols(tools, os.path.join(work, "runner"), allowed=frozenset(), what="the kernel runner")
    return os.path.join(work, "runner")


def _main_c(inputs: Sequence[np.ndarray], outputs: Sequence[tuple[tuple, str]], offs: list[int]) -> str:
    """The runner's C: calls the kernel once on the embedded inputs (at ``offs`` in ``edgec_data``), writes its
    outputs (each 128-byte aligned) to stdout and exits with its return code."""
    total = sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in outputs)
    specs = [(a.shape, str(a.dtype)) for a in inputs] + [(tuple(s), d) for s, d in outputs]
    c = [
        "#include <tvm/ffi/c_api.h>",
        "extern const unsigned char edgec_data[];",
        f"static unsigned char outb[{total + 128}] __attribute__((aligned(128)));",
        "extern int __tvm_ffi_kern(void *, const TVMFFIAny *, int, TVMFFIAny *);",
        "static long sys3(long n, long a, long b, long c) {",
        '  register long r0 __asm__("r0") = a; register long r1 __asm__("r1") = b;',
        '  register long r2 __asm__("r2") = c; register long r6 __asm__("r6") = n;',
        '  __asm__ volatile("trap0(#1)" : "+r"(r0) : "r"(r1), "r"(r2), "r"(r6) : "memory"); return r0; }',
    ]
    for i, (s, _) in enumerate(specs):
        c.append(f"static int64_t s{i}[] = {{{', '.join(map(str, s)) or '1'}}};")
    c.append(f"void _start(void) {{ DLTensor t[{len(specs)}]; TVMFFIAny a[{len(specs)}]; TVMFFIAny ret;")
    out_off = 0
    for i, (s, d) in enumerate(specs):
        if d not in _DL:
            raise UnsupportedError(f"harness: dtype {d} is not supported")
        if i < len(inputs):
            ptr = f"(void *)(edgec_data + {offs[i]})"
        else:
            ptr = f"(void *)(outb + {out_off})"
            out_off += int(np.prod(s)) * np.dtype(d).itemsize
            out_off += -out_off % 128
        c.append(
            f"  t[{i}] = (DLTensor){{.data = {ptr}, .device = {{kDLCPU, 0}}, .ndim = {len(s)}, "
            f".dtype = {{{_DL[d]}, 1}}, .shape = s{i}}}; a[{i}].type_index = kTVMFFIDLTensorPtr; "
            f"a[{i}].zero_padding = 0; a[{i}].v_ptr = &t[{i}];"
        )
    c.append(f"  ret.type_index = 0; int rc = __tvm_ffi_kern(0, a, {len(specs)}, &ret);")
    c.append(f"  sys3(64, 1, (long)outb, {out_off}); sys3(93, rc, 0, 0); for (;;) {{}} }}")
    return "\n".join(c) + "\n"


def run(runner: str, outputs: Sequence[tuple[tuple, str]]) -> list[np.ndarray]:
    """Run a kernel runner under qemu-hexagon; its outputs as arrays."""
    qemu = shutil.which("qemu-hexagon")
    if qemu is None:
        raise NotImplementedError("qemu-hexagon is not installed (apt-get install qemu-user)")
    r = subprocess.run([qemu, runner], capture_output=True, timeout=toolchain.QEMU_TIMEOUT_S)
    if r.returncode != 0:
        raise UnsupportedError(f"the kernel runner failed under qemu-hexagon (exit {r.returncode})")
    res, off = [], 0
    for s, d in outputs:
        n = int(np.prod(s)) * np.dtype(d).itemsize
        res.append(np.frombuffer(r.stdout[off : off + n], d).reshape(s).copy())
        off += n + (-n % 128)
    return res


def count_packets(
    runner: str, stdin: bytes = b"", inside: Callable[[bytes], bool] = lambda sym: b"kern" in sym
) -> tuple[int, int]:
    """(packets executed in functions ``inside`` accepts, all packets) of one run, counted with
    ``qemu-hexagon -singlestep -d exec,nochain`` (one log line per packet, naming its function)."""
    p = subprocess.Popen(
        ["qemu-hexagon", "-singlestep", "-d", "exec,nochain", "-D", "/dev/stderr", runner],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def feed():
        p.stdin.write(stdin)
        p.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    n_in = n_all = 0
    assert p.stderr is not None  # stderr=PIPE
    for raw in p.stderr:
        if raw.startswith(b"Trace"):
            n_all += 1
            if inside(raw.rsplit(b"]", 1)[-1].strip()):
                n_in += 1
    if p.wait() != 0:
        raise RuntimeError(f"the runner failed under qemu-hexagon (exit {p.returncode})")
    return n_in, n_all
