"""The Hexagon toolchain around TVM's kernels: finding clang / ld.lld / llvm-nm / llvm-objcopy and qemu-hexagon,
the clang flags for the generated C, compiling and linking the artifact (``libmodel.so`` and the static
``runner``), checking that nothing is left undefined that the freestanding runtime does not provide, and running
the commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from typing import Any

from ...errors import UnsupportedError

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIME_C = os.path.join(HERE, "runtime.c")  # the freestanding runtime every artifact and kernel runner links
# Symbols the kernels may leave undefined: what runtime.c defines. Anything else is a build error.
RUNTIME_SYMBOLS = frozenset(
    {
        "memset",
        "memcpy",
        "memmove",
        "__hexagon_memcpy_likely_aligned_min32bytes_mult8bytes",
        "expf",
        "tanhf",
        "sqrtf",
        "fabsf",
        "edgec_fence",
        "erff",
        "floorf",
        "nearbyintf",
        "ceilf",
        "truncf",
        "roundf",
        "logf",
        "powf",
        "exp",
        "log",
        "__truncdfhf2",
        "__truncsfhf2",
        "__extendhfdf2",
        "__extendhfsf2",
        "sinf",
        "cosf",
        "tanf",
        "asinf",
        "acosf",
        "atanf",
        "sinhf",
        "coshf",
        "asinhf",
        "acoshf",
        "__hexagon_sqrtf",
        "__hexagon_divsf3",
        "__hexagon_divsi3",
        "__hexagon_modsi3",
        "__hexagon_udivsi3",
        "__hexagon_umodsi3",
        "__hexagon_divdi3",
        "__hexagon_moddi3",
        "__hexagon_udivdi3",
        "__hexagon_umoddi3",
        "__TVMBackendAllocWorkspace",
        "__TVMBackendFreeWorkspace",
        "__TVMBackendParallelLaunch",
        "_GLOBAL_OFFSET_TABLE_",
    }
)  # the last one the linker provides


def find_tools() -> dict[str, str]:
    """The paths of clang, ld.lld, llvm-nm and llvm-objcopy (or their ``-14`` names, as Debian 12 installs them)."""
    out = {}
    for t in ("clang", "ld.lld", "llvm-nm", "llvm-objcopy"):
        path = shutil.which(t) or shutil.which(t + "-14")
        if path is None:
            raise UnsupportedError(f"the hexagon target needs {t} (apt-get install clang lld llvm)")
        out[t] = path
    return out


QEMU_TIMEOUT_S = 600  # one run of an artifact's runner under qemu-hexagon


def find_qemu() -> str | None:
    """The path of qemu-hexagon, or None where it is not installed."""
    return shutil.which("qemu-hexagon")


def cflags(arch: str, hvx: int, ws_bytes: int, includes: tuple[str, ...] = ()) -> list[str]:
    """clang flags for the generated C (driver, runtime, runners) for ``arch``: freestanding, the TVM FFI /
    DLPack headers, the workspace size."""
    import tvm_ffi

    inc = os.path.join(os.path.dirname(tvm_ffi.__file__), "include")
    dl = [
        os.path.join(r, "")
        for r, _, _ in os.walk(os.path.dirname(tvm_ffi.__file__))
        if r.endswith(os.path.join("dlpack", "include"))
    ]
    # The driver and runtime are plain C: clang 14 (Debian 12) knows up to v69, which newer arches run.
    cpu = arch if arch in ("v67", "v68", "v69") else "v69"
    flags = [
        "--target=hexagon-unknown-linux-musl",
        f"-mcpu=hexagon{cpu}",
        "-ffreestanding",
        "-nostdlib",
        "-fno-builtin",
        "-O2",
        "-fPIC",
        "-mlong-calls",
        f"-I{inc}",
        f"-DEDGEC_WORKSPACE_BYTES={ws_bytes}",
    ] + [f"-I{d}" for d in (*dl, *includes)]
    return flags + (["-mhvx", "-mhvx-length=128b"] if hvx else [])


def link(tools: dict[str, str], flags: list[str], out_dir: str, work: str) -> None:
    """Compile the artifact's C and assembler sources in ``out_dir`` (``model.c``, ``runtime.c``, ``runner.c``,
    ``weights.S``; objects into ``work``) and link them with ``kernels.o`` into ``libmodel.so`` and the static
    ``runner``, whose symbols must all be defined."""
    objs = {}
    for src in ("model.c", "runtime.c", "runner.c", "weights.S"):
        obj = os.path.join(work, src[:-2] + ".o")
        run([tools["clang"], *flags, "-c", src, "-o", obj], f"compiling {src}", cwd=out_dir)
        objs[src] = obj
    blob = [objs["weights.S"]]
    kobj = os.path.join(out_dir, "kernels.o")
    run(
        [
            tools["ld.lld"],
            "-shared",
            "-o",
            os.path.join(out_dir, "libmodel.so"),
            objs["model.c"],
            objs["runtime.c"],
            kobj,
            *blob,
        ],
        "linking libmodel.so",
        cwd=out_dir,
    )
    run(
        [
            tools["ld.lld"],
            "-static",
            "-e",
            "_start",
            "-o",
            os.path.join(out_dir, "runner"),
            objs["runner.c"],
            objs["model.c"],
            objs["runtime.c"],
            kobj,
            *blob,
        ],
        "linking the runner",
        cwd=out_dir,
    )
    check_symbols(tools, os.path.join(out_dir, "runner"), allowed=frozenset(), what="the runner")


def strip_debug(tools: dict[str, str], path: str) -> None:
    """Drop the DWARF sections TVM's LLVM codegen writes into ``kernels.o``: they point at lines of edgec's own
    Python (the TVMScript kernels), so they made the artifact change with any edit of that source, and they were
    about two thirds of the object. The code is untouched."""
    run([tools["llvm-objcopy"], "--strip-debug", path], "stripping the kernels' debug information")


def check_symbols(tools: dict[str, str], path: str, allowed: frozenset[str], what: str) -> None:
    """Undefined symbols (and weak undefined ones, which resolve to NULL and crash on first call) must be
    in ``allowed``: a missing runtime hook is a build error, not a crash."""
    out = subprocess.run([tools["llvm-nm"], path], capture_output=True, text=True, check=True).stdout
    missing = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-2] in ("U", "w", "v") and parts[-1] not in allowed:
            missing.append(parts[-1])
    if missing:
        raise UnsupportedError(
            f"{what} need symbols edgec's Hexagon runtime does not provide: {', '.join(sorted(set(missing)))}"
        )


def count_packets(cmd: list[str], stdin: bytes, harness_symbols: tuple[bytes, ...]) -> tuple[int, int]:
    """Run a qemu-hexagon command that logs every executed packet (``-singlestep -d exec,nochain -D /dev/stderr``)
    and count the log's lines as it streams (a ResNet logs tens of millions): (all packets, those in
    ``harness_symbols``)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None  # both piped above
    feeder = threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True)
    feeder.start()
    timer = threading.Timer(QEMU_TIMEOUT_S, proc.kill)  # a runner that never ends must not hang the bench
    timer.start()
    total = harness = 0
    tail = b""
    ends = [b"] " + s + b"\n" for s in harness_symbols]
    while chunk := proc.stderr.read(1 << 20):
        buf = tail + chunk
        cut = buf.rfind(b"\n") + 1
        lines, tail = buf[:cut], buf[cut:]
        total += lines.count(b"\nTrace ") + lines.startswith(b"Trace ")
        harness += sum(lines.count(e) for e in ends)
    rc = proc.wait()
    timed_out = not timer.is_alive()
    timer.cancel()
    feeder.join()
    if rc != 0:
        why = f"did not finish in {QEMU_TIMEOUT_S} s" if timed_out else f"exit {rc}"
        raise UnsupportedError(f"hexagon: the runner failed under qemu-hexagon ({why}) while counting packets")
    return total, harness


def _feed(pipe: Any, data: bytes) -> None:
    """Write the runner's stdin (a runner that fails early closes it: its exit status says why)."""
    try:
        pipe.write(data)
    except BrokenPipeError:
        pass
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass


def run(cmd: list[str], what: str, cwd: str | None = None) -> None:
    """Run a toolchain command; its failure is an UnsupportedError quoting the start of its stderr."""
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        raise UnsupportedError(f"hexagon: {what} failed:\n{r.stderr.strip()[:2000]}")
