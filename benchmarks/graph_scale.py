"""How import, verification, the default cleanup and ``edgec inspect`` scale with the number of nodes.

The model is a long chain of cheap elementwise ops on a 16-element float tensor, ``Add`` (with a constant),
``Relu``, ``Neg``, ``Identity`` repeated, plus a dead ``Relu`` hanging off every 10th value, every node
unnamed (so import names them all). Two variants:

* ``chain``: every ``Add`` reads the same constant (one value with n/4 uses);
* ``consts``: the ``Add`` s read a pool of n/64 constants, each shared by ~16 of them.

The cleanup removes the ``Identity`` nodes (eliminate-identity) and the dead branches (dce), so graph
mutation is measured too. For each size :func:`measure` writes the ONNX file in a temporary folder, then in a
fresh Python process times ``edgec.compiler.load_model`` (ONNX import with shape inference),
``edgec.ir.verifier.verify`` and the default cleanup pipeline through the pass manager (verifying after every
pass), reporting that process's peak RSS (``resource.getrusage``); then it times a whole
``edgec inspect --json`` process.

    python benchmarks/graph_scale.py [n ...] [--variant chain|consts]

prints a markdown table (default sizes 10^4, 10^5, 10^6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

OPS = ("Add", "Relu", "Neg", "Identity")
DEAD_EVERY = 10  # a dead Relu hangs off every 10th value of the chain
WIDTH = 16


def build_onnx(path: str, n_nodes: int, variant: str = "chain") -> dict:
    """Write the chain model with ``n_nodes`` nodes (live and dead together) to ``path``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if variant not in ("chain", "consts"):
        raise ValueError(f"unknown variant {variant!r}: chain or consts")
    g = onnx.GraphProto()
    g.name = "chain"
    g.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [WIDTH]))
    pool = 1 if variant == "chain" else max(1, n_nodes // 64)
    rng = np.random.default_rng(0)
    for k in range(pool):
        g.initializer.append(numpy_helper.from_array(rng.standard_normal(WIDTH).astype(np.float32), f"c{k}"))
    prev, live, adds, made = "x", 0, 0, 0
    while made < n_nodes:
        if live % DEAD_EVERY == DEAD_EVERY - 1 and made + 1 < n_nodes:
            nd = g.node.add()
            nd.op_type = "Relu"
            nd.input.append(prev)
            nd.output.append(f"d{made}")
            made += 1
        op = OPS[live % len(OPS)]
        nd = g.node.add()
        nd.op_type = op
        nd.input.append(prev)
        if op == "Add":
            nd.input.append(f"c{adds % pool}")
            adds += 1
        out = f"t{made}"
        nd.output.append(out)
        prev = out
        live += 1
        made += 1
    g.output.append(helper.make_tensor_value_info(prev, TensorProto.FLOAT, [WIDTH]))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="graph_scale")
    m.ir_version = 8
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return {"nodes": len(g.node), "constants": pool, "bytes": os.path.getsize(path)}


def _worker(path: str) -> None:
    """In a fresh process: import, verify, cleanup; print the timings and peak RSS as JSON."""
    from edgec.compiler import load_model
    from edgec.host import host
    from edgec.ir.passes import PassManager, parse_pipeline
    from edgec.ir.verifier import verify
    from edgec.plugins.cleanup import DEFAULT_CLEANUP

    res = {}
    t0 = time.perf_counter()
    model = load_model(path)
    res["import_s"] = time.perf_counter() - t0
    res["nodes_in"] = len(model.graph)
    t0 = time.perf_counter()
    verify(model)
    res["verify_s"] = time.perf_counter() - t0
    passes = parse_pipeline(DEFAULT_CLEANUP, host().passes.as_dict())
    t0 = time.perf_counter()
    PassManager(passes).run(model)
    res["cleanup_s"] = time.perf_counter() - t0
    res["nodes_out"] = len(model.graph)
    print(json.dumps(res))


RSS_MARK = "graph_scale-peak-rss-kib:"
# Prefix for a child process: report its own peak RSS (getrusage) on stderr when it exits, however it exits.
_RSS_HOOK = (
    "import atexit, resource, sys; atexit.register(lambda: print(%r, "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)); " % RSS_MARK
)


def _run_timed(code: str, args: list[str], timeout: float | None) -> tuple[float, float, str]:
    """Run ``python -c code args``; (wall seconds, that process's peak RSS in MB, stdout).

    Started by a shell that forks it rather than by this process directly: a process exec'd from this one
    inherits this one's peak RSS as its own ru_maxrss (Linux keeps the larger across exec), so the numbers
    would depend on what the caller held (e.g. the previous, larger model); a grandchild starts from the
    shell's."""
    t0 = time.perf_counter()
    p = subprocess.run(
        ["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, "-c", _RSS_HOOK + code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"python -c {code[:60]!r}... failed ({p.returncode}):\n{p.stderr[-3000:]}")
    rss = [ln for ln in p.stderr.splitlines() if ln.startswith(RSS_MARK)]
    return wall, int(rss[-1].split()[-1]) / 1024 if rss else float("nan"), p.stdout


def measure(n_nodes: int, variant: str = "chain", timeout: float | None = None) -> dict:
    """Build an ``n_nodes`` chain (see the module docstring) and time what edgec does with it.

    Returns a dict: ``nodes``, ``constants``, ``onnx_mb``, ``build_s`` (writing the ONNX file),
    ``import_s`` (``load_model``: ONNX import with shape inference), ``verify_s``, ``cleanup_s`` (the default
    cleanup pipeline through the pass manager, verifying after every pass), ``nodes_after_cleanup``,
    ``peak_rss_mb`` / ``peak_rss_bytes`` (that process's), ``inspect_s`` (a whole ``edgec inspect --json``
    process), ``inspect_rss_mb`` / ``inspect_rss_bytes``.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory(prefix="graph_scale-") as work:
        path = os.path.join(work, f"chain-{n_nodes}.onnx")
        t0 = time.perf_counter()
        info = build_onnx(path, n_nodes, variant)
        build_s = time.perf_counter() - t0
        code = f"sys.path.insert(0, {here!r}); import graph_scale; graph_scale._worker({path!r})"
        _, rss, out = _run_timed(code, [], timeout)
        w = json.loads(out.strip().splitlines()[-1])
        # the `edgec` console script's own code (edgec.cli:main), run so the process can report its RSS
        cli = "sys.argv[0] = 'edgec'; from edgec.cli import main; main()"
        inspect_s, inspect_rss, out = _run_timed(cli, ["inspect", path, "--json"], timeout)
        json.loads(out)  # a complete JSON document
    return {
        "variant": variant,
        "nodes": info["nodes"],
        "constants": info["constants"],
        "onnx_mb": info["bytes"] / 1e6,
        "build_s": build_s,
        "import_s": w["import_s"],
        "verify_s": w["verify_s"],
        "cleanup_s": w["cleanup_s"],
        "nodes_after_cleanup": w["nodes_out"],
        "peak_rss_mb": rss,
        "peak_rss_bytes": _bytes(rss),
        "inspect_s": inspect_s,
        "inspect_rss_mb": inspect_rss,
        "inspect_rss_bytes": _bytes(inspect_rss),
    }


def _bytes(mb: float) -> int | None:
    return None if mb != mb else int(mb * 2**20)  # NaN: not reported


def table(rows: list[dict]) -> str:
    """Markdown; ``us/node`` is (import + verify) per node, flat when that work is linear."""
    head = (
        "| variant | nodes | constants | import s | verify s | import+verify s | us/node | cleanup s | "
        "inspect --json s | peak RSS MB (import+verify+cleanup) | inspect RSS MB |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        iv = r["import_s"] + r["verify_s"]
        lines.append(
            f"| {r['variant']} | {r['nodes']:,} | {r['constants']:,} | {r['import_s']:.2f} | "
            f"{r['verify_s']:.2f} | {iv:.2f} | {1e6 * iv / r['nodes']:.1f} | {r['cleanup_s']:.2f} | "
            f"{r['inspect_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['inspect_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[10**4, 10**5, 10**6])
    ap.add_argument("--variant", action="append", choices=("chain", "consts"), help="repeatable; default: both")
    args = ap.parse_args(argv)
    rows = []
    for variant in args.variant or ["chain", "consts"]:
        for n in args.sizes:
            r = measure(n, variant)
            print(json.dumps(r), file=sys.stderr, flush=True)
            rows.append(r)
    print(table(rows))


if __name__ == "__main__":
    main()
