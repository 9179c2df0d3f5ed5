"""Robustness probes (issue 19): edgec tried as an attacker and a careless user would, each probe a whole
`edgec` process (or several), with what was expected, what was observed, the process's peak RSS and time.

Probes:

* code execution: crafted ``.pt2`` archives whose pickles / expressions would run ``touch MARKER`` (each also
  loaded with plain ``torch.export.load`` in a child process, to show the probe is live);
* external data: ONNX models whose external-data locations lead outside the model folder;
* size bombs: ONNX, GGUF and safetensors files and input shapes that declare more memory than the machine
  has (peak RSS must stay within the memory budget);
* graph size: import + verify of 10^4, 10^5 and 10^6-node graphs (benchmarks/graph_scale.py);
* data loss: outputs and caches that are not edgec's;
* corrupt cache entries;
* user errors, which must not be reported as internal errors (exit 70);
* kill -9 / SIGTERM / SIGINT at several moments of a compile, then the next run;
* 8 workers x 60 compiles into one output with a shared cache.

    python benchmarks/robustness.py [--quick]      # --quick: 10^4/10^5 nodes and 8 x 10 compiles

writes benchmarks/RESULTS-robustness.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

from _results import HERE, write_results

ROOT = os.path.dirname(HERE)
TINY_CNN = os.path.join(ROOT, "examples", "models", "tiny_cnn.onnx")
ROWS: list[dict] = []
GOALS = {
    "code executed": 0,
    "user files deleted": 0,
    "corrupt cache hits": 0,
    "exit 70 on user errors": 0,
    "bombs over the memory budget": 0,
}


_RSS_MARK = "EDGEC-BENCH-MAXRSS"
_RSS_HOOK = (
    "import atexit, resource, runpy, sys; atexit.register(lambda: print(%r, resource.getrusage("
    "resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)); sys.argv = ['edgec'] + sys.argv[1:]; "
    "runpy.run_module('edgec.cli', run_name='__main__', alter_sys=True)"
) % _RSS_MARK


def run(args, *, cwd=None, env=None, timeout=600):
    """(exit code or "timeout", stderr, seconds, peak RSS bytes) of one `edgec` process. It is started by /bin/sh
    and reports its own ru_maxrss at exit: a child forked straight from this process would report this one's
    peak as its own (Linux keeps the larger across exec). A killed process (SIGKILL, timeout) reports none."""
    e = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    p = subprocess.Popen(
        ["/bin/sh", "-c", '"$0" "$@"', sys.executable, "-c", _RSS_HOOK, *args],
        cwd=cwd,
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate()
        rc = "timeout"
    marks = [x for x in err.splitlines() if x.startswith(_RSS_MARK)]
    rss = int(marks[-1].split()[1]) * 1024 if marks else 0
    err = "\n".join(x for x in err.splitlines() if not x.startswith(_RSS_MARK))
    return rc, err, time.perf_counter() - t0, rss


def row(group, probe, expected, observed, ok, rss=None, secs=None):
    ROWS.append(
        {"group": group, "probe": probe, "expected": expected, "observed": observed, "ok": ok, "rss": rss, "secs": secs}
    )
    print(f"[{'ok' if ok else 'FAIL'}] {group}: {probe}: {observed}", flush=True)


def first_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.startswith("edgec:") or x.startswith("warning:")]
    return (lines[0] if lines else (err.strip().splitlines() or [""])[-1])[:110].replace("|", "/")


# ------------------------------------------------------------------------------------------ code execution
class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _pt2_variants(good: str, work: str, marker: str) -> dict[str, str]:
    with zipfile.ZipFile(good) as z:
        names = z.namelist()
        root = names[0].split("/")[0]
        files = {n[len(root) + 1 :]: z.read(n) for n in names}
    payload = pickle.dumps(_Touch(marker))

    def write(name, edit):
        f = dict(files)
        edit(f)
        path = os.path.join(work, name + ".pt2")
        with zipfile.ZipFile(path, "w") as z:
            for rel, data in f.items():
                z.writestr(f"{root}/{rel}", data)
        return path

    def constants_path(f):
        cfg = json.loads(f["data/constants/model_constants_config.json"])
        cfg["config"]["evil"] = {
            "path_name": "opaque_obj_0/x",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }
        f["data/constants/model_constants_config.json"] = json.dumps(cfg).encode()
        f["data/constants/opaque_obj_0/x"] = payload

    def weight_pickle(f):
        cfg = json.loads(f["data/weights/model_weights_config.json"])
        k = next(iter(cfg["config"]))
        cfg["config"][k]["use_pickle"] = True
        f["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
        f["data/weights/" + cfg["config"][k]["path_name"]] = payload

    def legacy(f):
        del f["data/weights/model_weights_config.json"]
        f["data/weights/model.pt"] = payload

    def sample_inputs(f):
        f["data/sample_inputs/model.pt"] = payload

    def sympy(f):
        prog = json.loads(f["models/model.json"])
        tv = prog["graph_module"]["graph"]["tensor_values"]
        k = next(iter(tv))
        tv[k]["sizes"][0] = {
            "as_expr": {"expr_str": f"__import__('os').system(\"touch '{marker}'\")", "hint": {"as_int": 1}}
        }
        f["models/model.json"] = json.dumps(prog).encode()

    return {
        "constants path_name opaque_obj_0/x": write("c", constants_path),
        "weight use_pickle": write("w", weight_pickle),
        "legacy data/weights/model.pt": write("l", legacy),
        "pickled sample inputs": write("s", sample_inputs),
        "shape expression (sympify)": write("e", sympy),
    }


def probe_pt2(work: str) -> None:
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
            self.c = torch.arange(2.0)

        def forward(self, x):
            return self.fc(x) + self.c

    good = os.path.join(work, "good.pt2")
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(3, 4),)), good)
    for name, path in _pt2_variants(good, work, os.path.join(work, "MARKER")).items():
        marker = os.path.join(work, "MARKER")
        rcs = []
        for cmd in (["compile", path, "-o", os.path.join(work, "o")], ["inspect", path]):
            rc, err, secs, rss = run(cmd)
            rcs.append(rc)
        edgec_ran = os.path.exists(marker)
        GOALS["code executed"] += edgec_ran
        if edgec_ran:
            os.unlink(marker)
        subprocess.run(
            [sys.executable, "-c", f"import torch; torch.export.load({path!r})"],
            capture_output=True,
            env={**os.environ, "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"},
        )
        torch_ran = os.path.exists(marker)
        if torch_ran:
            os.unlink(marker)
        row(
            "code execution",
            f".pt2: {name}",
            "exit 3 (compile, inspect), no code run",
            f"exit {rcs[0]}/{rcs[1]}, code run: {'YES' if edgec_ran else 'no'} (plain torch.export.load: "
            f"{'runs it' if torch_ran else 'refuses'})",
            rcs == [3, 3] and not edgec_ran,
            None,
            secs,
        )


# ----------------------------------------------------------------------------------------- external data
def _external(path: str, location: str) -> str:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    t = numpy_helper.from_array(np.ones((16, 4), np.float32), "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "256")):
        e = t.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [t],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def probe_external(work: str) -> None:
    secret = os.path.join(work, "secret.bin")
    with open(secret, "wb") as f:
        f.write(os.urandom(256))
    digest = hashlib.sha256(open(secret, "rb").read()).hexdigest()
    d = os.path.join(work, "m")
    os.makedirs(d)
    os.symlink(secret, os.path.join(d, "link.bin"))
    for loc in (
        "../../../../../../proc/self/pagemap",
        "../../../../../../etc/shadow",
        "/etc/passwd",
        "../secret.bin",
        "link.bin",
    ):
        model = _external(os.path.join(d, "model.onnx"), loc)
        cache = os.path.join(work, "cache-" + hashlib.md5(loc.encode()).hexdigest()[:6])
        rc, err, secs, rss = run(
            ["compile", model, "-o", os.path.join(work, "o")], env={"EDGEC_CACHE_DIR": cache}, timeout=120
        )
        leaked = []
        for r, _, files in os.walk(cache):
            for f in files:
                text = open(os.path.join(r, f), "rb").read()
                leaked += [w for w in (b"pagemap", b"shadow", b"passwd", digest.encode()) if w in text]
        row(
            "external data",
            f"location {loc}",
            "exit 3, nothing outside the folder read or recorded",
            f"exit {rc} in {secs:.1f} s; recorded: {leaked or 'nothing'}: {first_line(err)}",
            rc == 3 and not leaked,
            None,
            secs,
        )


# -------------------------------------------------------------------------------------------- size bombs
def _gguf_absurd(path: str) -> str:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = bytearray(open(path, "rb").read())
    i = data.find(b"token_embd.weight") + len(b"token_embd.weight")
    struct.pack_into("<QQ", data, i + 4, 1 << 40, 1 << 40)  # the two dims, after n_dims
    open(path, "wb").write(bytes(data))
    return path


def _safetensors_sparse(folder: str, gib: float) -> str:
    """A Hugging Face folder whose one tensor declares ``gib`` GiB in a sparse file (no disk used)."""
    os.makedirs(folder, exist_ok=True)
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_hidden_layers": 1,
        "vocab_size": 32000,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 128,
    }
    json.dump(cfg, open(os.path.join(folder, "config.json"), "w"))
    rows = int(gib * 2**30 / 4 / 64)  # declared by the file's header, not the config
    n = rows * 64 * 4
    header = json.dumps(
        {"model.embed_tokens.weight": {"dtype": "F32", "shape": [rows, 64], "data_offsets": [0, n]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    path = os.path.join(folder, "model.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + n)
    return folder


def probe_bombs(work: str) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgec.ir.budget import memory_budget

    budget = memory_budget()

    def onnx_model(name, nodes, inits, shape=(4,)):
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            inits,
        )
        p = os.path.join(work, name + ".onnx")
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
        return p

    i64 = lambda n, v: numpy_helper.from_array(np.array(v, np.int64), n)  # noqa: E731
    cases = [
        (
            "ONNX ConstantOfShape 2^50 elements",
            [
                "compile",
                onnx_model(
                    "cos",
                    [helper.make_node("ConstantOfShape", ["s"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])],
                    [i64("s", [1 << 20, 1 << 20, 1 << 10])],
                ),
                "--verify",
            ],
        ),
        (
            "ONNX input of 2^60 elements",
            [
                "compile",
                onnx_model("inp", [helper.make_node("Relu", ["x"], ["y"])], [], (1 << 30, 1 << 30)),
                "--verify",
            ],
        ),
        (
            "--input-shape image=100000x3x32x32 --verify",
            ["compile", TINY_CNN, "--input-shape", "image=100000x3x32x32", "--verify"],
        ),
        ("GGUF tensor of 2^80 elements", ["compile", _gguf_absurd(os.path.join(work, "absurd.gguf")), "-t", "gguf"]),
        (
            "safetensors 8 GiB tensor (sparse file)",
            ["compile", _safetensors_sparse(os.path.join(work, "st8"), 8), "-t", "gguf"],
        ),
        (
            "safetensors 40 GiB tensor (sparse file)",
            ["compile", _safetensors_sparse(os.path.join(work, "st40"), 40), "-t", "gguf"],
        ),
    ]
    for name, args in cases:
        rc, err, secs, rss = run(args + ["-o", os.path.join(work, "o")], timeout=600)
        over = rss > budget
        GOALS["bombs over the memory budget"] += over
        row(
            "size bombs",
            name,
            f"refused (exit 3; 4 if malformed), peak RSS <= budget ({budget / 2**30:.1f} GiB)",
            f"exit {rc}: {first_line(err)}",
            rc in (3, 4) and not over,
            rss,
            secs,
        )
        shutil.rmtree(os.path.join(work, "o"), ignore_errors=True)


# --------------------------------------------------------------------------------------------- graph size
def probe_graphs(quick: bool) -> None:
    from graph_scale import measure

    for n in (10**4, 10**5) if quick else (10**4, 10**5, 10**6):
        m = measure(n)
        t = m.get("import_s", 0) + m.get("verify_s", 0)
        row(
            "graph size",
            f"{n:,} nodes: import + verify",
            "linear; < 60 s at 10^6",
            f"import {m.get('import_s', 0):.1f} s + verify {m.get('verify_s', 0):.1f} s; cleanup "
            f"{m.get('cleanup_s', 0):.1f} s; inspect process {m.get('inspect_s', 0):.1f} s",
            t < 60,
            m.get("peak_rss_bytes"),
            t,
        )


# ----------------------------------------------------------------------------------------------- data loss
def probe_data_loss(work: str) -> None:
    v = os.path.join(work, "v")
    os.makedirs(os.path.join(v, "src"))
    open(os.path.join(v, "src", "a.c"), "w").write("int x;")
    rc, err, secs, _ = run(["compile", TINY_CNN, "-o", v])
    lost = not os.path.exists(os.path.join(v, "src", "a.c"))
    GOALS["user files deleted"] += lost
    row(
        "data loss",
        "-o DIR holding a user's files",
        "exit 2 naming --force, nothing deleted",
        f"exit {rc}, files {'DELETED' if lost else 'kept'}: {first_line(err)}",
        rc == 2 and not lost,
        None,
        secs,
    )
    home = os.path.join(work, "home")
    os.makedirs(os.path.join(home, "docs"))
    open(os.path.join(home, "docs", "thesis.tex"), "w").write("x")
    rc, err, secs, _ = run(["cache", "--clear"], env={"EDGEC_CACHE_DIR": home})
    lost = not os.path.exists(os.path.join(home, "docs", "thesis.tex"))
    GOALS["user files deleted"] += lost
    row(
        "data loss",
        "edgec cache --clear with EDGEC_CACHE_DIR=$HOME-like dir",
        "refused, nothing deleted",
        f"exit {rc}, files {'DELETED' if lost else 'kept'}: {first_line(err)}",
        rc == 2 and not lost,
        None,
        secs,
    )
    w = os.path.join(work, "w")
    os.makedirs(w)
    shutil.copy(TINY_CNN, os.path.join(w, "m.onnx"))
    for out, extra in ((".", []), (w, ["--force"])):
        rc, err, secs, _ = run(["compile", os.path.join(w, "m.onnx"), "-o", out, *extra], cwd=w)
        lost = not os.path.exists(os.path.join(w, "m.onnx"))
        GOALS["user files deleted"] += lost
        row(
            "data loss",
            f"-o {'.' if out == '.' else 'the model folder'} {' '.join(extra)}".strip(),
            "exit 2, the model kept",
            f"exit {rc}, model {'DELETED' if lost else 'kept'}: {first_line(err)}",
            rc == 2 and not lost,
            None,
            secs,
        )
    out = os.path.join(work, "good")
    run(["compile", TINY_CNN, "-o", out, "--verify"])
    before = open(os.path.join(out, "manifest.json"), "rb").read()
    rc, err, secs, _ = run(["compile", TINY_CNN, "-o", out, "-p", "quantize{bits=8}", "--verify", "--tolerance", "0"])
    kept = open(os.path.join(out, "manifest.json"), "rb").read() == before
    GOALS["user files deleted"] += not kept
    row(
        "data loss",
        "a failed --verify over a good output",
        "exit 1, the good output kept",
        f"exit {rc}, previous output {'kept' if kept else 'REPLACED'}",
        rc == 1 and kept,
        None,
        secs,
    )


# -------------------------------------------------------------------------------------------- corrupt cache
def probe_cache(work: str) -> None:
    for damage in ("truncate", "flip a byte", "remove a file", "add a file", "tamper manifest"):
        cache = os.path.join(work, "cache-" + damage.replace(" ", "-"))
        a = os.path.join(work, "a")
        run(["compile", TINY_CNN, "-o", a, "--verify"], env={"EDGEC_CACHE_DIR": cache})
        good = open(os.path.join(a, "model.so"), "rb").read()
        entry = next(os.path.dirname(os.path.join(r, f)) for r, _, fs in os.walk(cache) for f in fs if f == "sums.json")
        out = os.path.join(entry, "out")
        so = os.path.join(out, "model.so")
        if damage == "truncate":
            os.truncate(so, 100)
        elif damage == "flip a byte":
            b = bytearray(open(so, "rb").read())
            b[len(b) // 2] ^= 0xFF
            open(so, "wb").write(bytes(b))
        elif damage == "remove a file":
            os.unlink(so)
        elif damage == "add a file":
            open(os.path.join(out, "x.bin"), "wb").write(b"x")
        else:
            m = json.load(open(os.path.join(out, "manifest.json")))
            m["notes"].append("tampered")
            json.dump(m, open(os.path.join(out, "manifest.json"), "w"))
        b_out = os.path.join(work, "b")
        rc, err, secs, _ = run(["compile", TINY_CNN, "-o", b_out, "--verify"], env={"EDGEC_CACHE_DIR": cache})
        served = (
            open(os.path.join(b_out, "model.so"), "rb").read() != good
            or "tampered" in open(os.path.join(b_out, "manifest.json")).read()
        )
        GOALS["corrupt cache hits"] += served
        row(
            "corrupt cache",
            f"entry: {damage}",
            "evicted, recompiled, a correct output",
            f"exit {rc}, {'CORRUPT output served' if served else 'correct output'}: {first_line(err)}",
            rc == 0 and not served,
            None,
            secs,
        )
        shutil.rmtree(a, ignore_errors=True)
        shutil.rmtree(b_out, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ user errors
def probe_user_errors(work: str) -> None:
    import onnx

    m = onnx.load(TINY_CNN)
    d = m.graph.input[0].type.tensor_type.shape.dim
    for i, name in ((2, "H"), (3, "W")):
        d[i].ClearField("dim_value")
        d[i].dim_param = name
    del m.graph.value_info[:]
    dyn = os.path.join(work, "dyn.onnx")
    onnx.save(m, dyn)
    ro = os.path.join(work, "ro")
    os.makedirs(ro)
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro], capture_output=True).returncode == 0
    )
    imm = os.path.join(work, "imm")
    os.makedirs(imm)
    immutable = subprocess.run(["chattr", "+i", imm], capture_output=True).returncode == 0
    cases = [
        ("read-only mount", ["-o", os.path.join(ro, "o")], mounted),
        ("immutable directory", ["-o", os.path.join(imm, "o")], immutable),
        ("-o /proc/self/x", ["-o", "/proc/self/x"], True),
        ("-o .", ["-o", "."], True),
        ("--input-shape image=0x3x32x32", ["--input-shape", "image=0x3x32x32"], True),
        ("--input-shape image=1x3x-32x32", ["--input-shape", "image=1x3x-32x32"], True),
        ("include=[unclosed regex", ["-p", "quantize{include=[unclosed}"], True),
        ("--tolerance nan", ["--verify", "--tolerance", "nan"], True),
        ("--tolerance -1", ["--verify", "--tolerance", "-1"], True),
        ("dynamic H/W on cpu", ["MODEL", dyn], True),
    ]
    for name, args, possible in cases:
        if not possible:
            row("user errors", name, "exit 2 with a fix", "not run: needs root (mount/chattr)", True)
            continue
        model = TINY_CNN
        if args[:1] == ["MODEL"]:
            model, args = args[1], []
        if "-o" not in args:
            args = args + ["-o", os.path.join(work, "o")]
        rc, err, secs, _ = run(["compile", model, *args], cwd=work)
        GOALS["exit 70 on user errors"] += rc == 70
        row("user errors", name, "exit 2 with a fix", f"exit {rc}: {first_line(err)}", rc == 2, None, secs)
    if mounted:
        subprocess.run(["umount", ro], capture_output=True)
    if immutable:
        subprocess.run(["chattr", "-i", imm], capture_output=True)


# -------------------------------------------------------------------------------------------------- signals
def probe_signals(work: str) -> None:
    out = os.path.join(work, "sig")
    run(["compile", TINY_CNN, "-o", out, "--no-cache"])
    before = open(os.path.join(out, "manifest.json"), "rb").read()
    moments = [("at import", 0.8), ("during emission", "scratch"), ("emission + 1 s", ("scratch", 1.0))]
    for sig, label in ((signal.SIGKILL, "kill -9"), (signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
        for moment, when in moments:
            p = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgec.cli",
                    "compile",
                    TINY_CNN,
                    "-o",
                    out,
                    "--no-cache",
                    "-p",
                    "quantize{bits=8}",
                    "--verify",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            t0 = time.time()
            if isinstance(when, float):
                time.sleep(when)
            else:
                while time.time() - t0 < 120 and not any(n.startswith(".sig.edgec-tmp-") for n in os.listdir(work)):
                    time.sleep(0.02)
                if isinstance(when, tuple):
                    time.sleep(when[1])
            p.send_signal(sig)
            p.communicate(timeout=120)
            left = [n for n in os.listdir(work) if n.startswith(".sig.")]
            kept = open(os.path.join(out, "manifest.json"), "rb").read() == before
            rc2, _, _, _ = run(["compile", TINY_CNN, "-o", os.path.join(work, "sig2"), "--no-cache"])
            rc3, _, _, _ = run(["compile", TINY_CNN, "-o", out, "--no-cache"])  # the next run into the same output
            after = [n for n in os.listdir(work) if n.startswith(".sig.")]
            before = open(os.path.join(out, "manifest.json"), "rb").read()
            expect = {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}[sig]
            ok = kept and not after and rc3 == 0 and (p.returncode in (expect, 0))
            row(
                "signals",
                f"{label} {moment}",
                f"exit {expect} (or done first), previous output kept, nothing left after the next run",
                f"exit {p.returncode}; leftovers {len(left)} -> {len(after)} after the next run; previous output "
                f"{'kept' if kept else 'LOST'}",
                ok,
            )


# ---------------------------------------------------------------------------------------------- concurrency
def probe_concurrency(work: str, workers: int, each: int) -> None:
    cache = os.path.join(work, "ccache")
    out = os.path.join(work, "shared")
    run(["compile", TINY_CNN, "-o", out], env={"EDGEC_CACHE_DIR": cache})
    good = open(os.path.join(out, "model.so"), "rb").read()
    t0 = time.perf_counter()

    def worker(k):
        fails = []
        for i in range(each):
            rc, err, _, _ = run(["compile", TINY_CNN, "-o", out, "-q"], env={"EDGEC_CACHE_DIR": cache})
            if rc != 0:
                fails.append(first_line(err))
        return fails

    with ThreadPoolExecutor(workers) as ex:
        fails = [f for fs in ex.map(worker, range(workers)) for f in fs]
    secs = time.perf_counter() - t0
    intact = open(os.path.join(out, "model.so"), "rb").read() == good
    left = [n for n in os.listdir(work) if n.startswith(".shared.")]
    row(
        "concurrency",
        f"{workers} workers x {each} compiles into one output, shared cache",
        "every compile succeeds, output intact, nothing left over",
        f"{len(fails)} of {workers * each} failed{': ' + fails[0] if fails else ''}; output "
        f"{'intact' if intact else 'CORRUPT'}; leftovers {len(left)}; {secs:.0f} s",
        not fails and intact and not left,
        None,
        secs,
    )


def main() -> None:
    quick = "--quick" in sys.argv
    sys.path.insert(0, HERE)
    work = tempfile.mkdtemp(prefix="edgec-robustness-")
    os.environ["EDGEC_CACHE_DIR"] = os.path.join(work, "default-cache")
    t0 = time.time()
    try:
        for name, fn in (
            ("pt2", probe_pt2),
            ("external", probe_external),
            ("bombs", probe_bombs),
            ("data", probe_data_loss),
            ("cache", probe_cache),
            ("user", probe_user_errors),
            ("signals", probe_signals),
        ):
            d = os.path.join(work, name)
            os.makedirs(d)
            fn(d)
        os.makedirs(os.path.join(work, "conc"))
        probe_concurrency(os.path.join(work, "conc"), 8, 10 if quick else 60)
        probe_graphs(quick)
    finally:
        subprocess.run(["chattr", "-R", "-i", work], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    from edgec.ir.budget import memory_budget

    lines = [
        "## Robustness (issue 19)",
        "",
        f"`python benchmarks/robustness.py{' --quick' if quick else ''}`: each probe is a whole `edgec` process "
        f"(or several); memory budget {memory_budget() / 2**30:.1f} GiB (75% of this machine's memory); "
        f"{len(ROWS)} probes in {time.time() - t0:.0f} s. Peak RSS (where shown) is the edgec process's own "
        "ru_maxrss, reported at its exit.",
        "",
        "| | group | probe | expected | observed | peak RSS | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in ROWS:
        rss = f"{r['rss'] / 2**20:.0f} MiB" if r["rss"] else ""
        secs = f"{r['secs']:.1f} s" if r["secs"] is not None else ""
        lines.append(
            f"| {'ok' if r['ok'] else '**FAIL**'} | {r['group']} | {r['probe']} | {r['expected']} | "
            f"{r['observed']} | {rss} | {secs} |"
        )
    lines += [
        "",
        "Goals: "
        + "; ".join(f"{k}: {v} (goal 0)" for k, v in GOALS.items())
        + f"; probes failing: {sum(not r['ok'] for r in ROWS)}.",
    ]
    write_results("RESULTS-robustness.md", lines)


if __name__ == "__main__":
    main()
