"""Operator coverage: the ONNX backend node test suite through every target, and through two baselines.

The suite is the one the ``onnx`` package ships (``onnx.backend.test``): one small model per operator
variant with its inputs and expected outputs. Recent onnx wheels build these cases in memory instead of
shipping ``onnx/backend/test/data/node/*``; the harness then writes them once (``model.onnx`` +
``test_data_set_0/{input,output}_N.pb``, the layout of onnx's ``cmd_tools generate-data``) into ``--data``
or a temporary folder.

Each case goes through ``edgec.compile(model.onnx, target=T, use_cache=False)`` and the target's
``run_artifact``, and its outputs are compared as onnx's own backend runner compares them: the same number
of outputs, the same shape, the same dtype kind, ``np.testing.assert_allclose(rtol=1e-3, atol=1e-7)``
(booleans and strings exactly). Inputs that parametrize the operator rather than carry data (shapes, axes,
pads, starts / ends / steps, repeats, split sizes, TopK's k, Loop's trip count and initial condition, Resize's
roi / scales / sizes, Clip's min / max, Pad's constant value, quantization scales and zero points, Compress's
condition, ...: see
``PARAM_INPUTS``) are bound as constants in a copy of the model, as they are in real models, so targets
with static shapes can compile; an ``*_expanded`` case (the op's function body inlined) binds the inputs its
base case binds; every other input is fed at run time.

Categories: ``pass``; ``refused`` (edgec raised UnsupportedError / BadInputError / UsageError: an honest
refusal); ``wrong_result`` (values or dtype kind differ); ``wrong_shape`` (shape or number of outputs
differ); ``crash`` (any other exception, or the worker process died: a raw exception leak); ``timeout``.
Baselines, measured in the same run on the same cases: onnxruntime on the original model (every input fed)
and TVM's own Relax ONNX importer (``tvm.relax.frontend.onnx.from_onnx`` + ``relax.build`` + the VM) on the
bound copy edgec sees. A baseline's exception counts as ``refused``: it is a third-party library's way of
saying no, not a silent wrong answer.

``tensorrt`` runs as ``tensorrt{precision=fp32}`` (its fp16 default rounds by design); ``coreml`` computes in
fp16 by design, so its float outputs are compared at fp16 tolerance (rtol 1e-2, atol 1e-3): a ``wrong_result``
there is beyond what half precision explains.

    python benchmarks/coverage.py [--targets cpu,openvino,...] [--limit N] [--every N] [--filter REGEX] [--workers 2]
                                  [--timeout 300] [--data DIR] [--json FILE] [--no-write]

Every case runs in one of ``--workers`` long-lived worker processes (at most 2); a case that runs past
``--timeout`` seconds gets its worker killed and replaced, a worker that dies takes only its case down.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# benchmarks/ holds openvino.py (and this file is named like the coverage package): drop the folder from the
# path so `import openvino` finds OpenVINO, here and in the spawned workers.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
CATEGORIES = ("pass", "refused", "wrong_result", "wrong_shape", "crash", "timeout")
BAD = ("wrong_result", "wrong_shape", "crash")
RTOL, ATOL = 1e-3, 1e-7
FP16_RTOL, FP16_ATOL = 1e-2, 1e-3
BASELINES = ("onnxruntime", "tvm-relax-onnx")
DEFAULT_TARGETS = ("cpu", "openvino", "tensorrt{precision=fp32}", "coreml") + BASELINES
FP16_TARGETS = ("coreml", "tensorrt")  # targets whose default compute is fp16 (tensorrt only without precision=fp32)

# Formal input names (onnx schemas) that parametrize an operator rather than carry data: bound as constants.
PARAM_INPUTS = frozenset(
    {
        "shape",
        "axes",
        "axis",
        "pads",
        "constant_value",
        "starts",
        "ends",
        "steps",
        "repeats",
        "tiles",
        "k",
        "roi",
        "scales",
        "sizes",
        "split",
        "depth",
        "min",
        "max",
        "start",
        "limit",
        "delta",
        "ratio",
        "training_mode",
        "size",
        "image_shape",
        "block_shape",
        "output_shape",
        "max_output_boxes_per_class",
        "iou_threshold",
        "score_threshold",
        "dft_length",
        "frame_step",
        "frame_length",
        "num_mel_bins",
        "sample_rate",
        "lower_edge_hertz",
        "upper_edge_hertz",
        "x_scale",
        "x_zero_point",
        "y_scale",
        "y_zero_point",
        "a_scale",
        "a_zero_point",
        "b_scale",
        "b_zero_point",
        "w_scale",
        "w_zero_point",
    }
)
# (op, formal name) pairs whose name alone is ambiguous
PARAM_OP_INPUTS = frozenset(
    {("TopK", "K"), ("Compress", "condition"), ("ConstantOfShape", "input"), ("Loop", "M"), ("Loop", "cond")}
)


# ------------------------------------------------------------------------------------------------ the suite
def shipped_node_dir() -> str | None:
    import onnx

    d = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")
    return d if os.path.isdir(d) and os.listdir(d) else None


def _write_value(path: str, value: Any, type_proto) -> None:
    from onnx import TensorProto, numpy_helper

    if type_proto.HasField("sequence_type"):
        proto = numpy_helper.from_list(value)
    elif type_proto.HasField("optional_type"):
        proto = numpy_helper.from_optional(value)
    elif type_proto.HasField("map_type"):
        proto = numpy_helper.from_dict(value)
    else:
        proto = value if isinstance(value, TensorProto) else numpy_helper.from_array(np.asarray(value))
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def materialize(dest: str, names: list[str] | None = None) -> str:
    """Write onnx's in-memory node test cases (all, or those named) under ``dest`` in the on-disk layout;
    cases already there are kept. Returns ``dest``."""
    import warnings

    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_node_model_tests()
    want = set(names) if names is not None else None
    os.makedirs(dest, exist_ok=True)
    for case in cases:
        if want is not None and case.name not in want:
            continue
        out = os.path.join(dest, case.name)
        if os.path.exists(os.path.join(out, ".complete")):
            continue
        ds_dir = os.path.join(out, "test_data_set_0")
        os.makedirs(ds_dir, exist_ok=True)
        with open(os.path.join(out, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        inputs, outputs = case.data_sets[0]
        for j, v in enumerate(inputs):
            _write_value(os.path.join(ds_dir, f"input_{j}.pb"), v, case.model.graph.input[j].type)
        for j, v in enumerate(outputs):
            _write_value(os.path.join(ds_dir, f"output_{j}.pb"), v, case.model.graph.output[j].type)
        open(os.path.join(out, ".complete"), "w").close()
    return dest


def list_cases(root: str, pattern: str | None = None, limit: int | None = None, every: int = 1) -> list[str]:
    cases = sorted(d for d in glob.glob(os.path.join(root, "*")) if os.path.isfile(os.path.join(d, "model.onnx")))
    if pattern:
        rx = re.compile(pattern)
        cases = [c for c in cases if rx.search(os.path.basename(c))]
    cases = cases[::every]
    return cases[:limit] if limit else cases


def _read_value(path: str, type_proto) -> Any:
    import onnx
    from onnx import numpy_helper

    data = open(path, "rb").read()
    if type_proto.HasField("sequence_type"):
        p = onnx.SequenceProto()
        p.ParseFromString(data)
        return numpy_helper.to_list(p)
    if type_proto.HasField("optional_type"):
        p = onnx.OptionalProto()
        p.ParseFromString(data)
        return numpy_helper.to_optional(p)
    if type_proto.HasField("map_type"):
        p = onnx.MapProto()
        p.ParseFromString(data)
        return numpy_helper.to_dict(p)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def load_case(case_dir: str):
    """(model proto, inputs in graph-input order, expected outputs in graph-output order)."""
    import onnx

    model = onnx.load(os.path.join(case_dir, "model.onnx"))
    ds = os.path.join(case_dir, "test_data_set_0")
    n_in = len(glob.glob(os.path.join(ds, "input_*.pb")))
    n_out = len(glob.glob(os.path.join(ds, "output_*.pb")))
    inputs = [_read_value(os.path.join(ds, f"input_{i}.pb"), model.graph.input[i].type) for i in range(n_in)]
    outputs = [_read_value(os.path.join(ds, f"output_{i}.pb"), model.graph.output[i].type) for i in range(n_out)]
    return model, inputs, outputs


def _formal_names(node, opset: int) -> list[str]:
    """The schema's formal input name at each of ``node``'s input positions (variadic last input repeated)."""
    import onnx

    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:  # noqa: BLE001 - unknown op / domain: nothing is a parameter
        return [""] * len(node.input)
    formal = [f.name for f in schema.inputs]
    return [formal[min(i, len(formal) - 1)] if formal else "" for i in range(len(node.input))]


def param_inputs(model) -> set[str]:
    """Names of the graph inputs that parametrize an operator (see PARAM_INPUTS), looking into subgraphs."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 21)
    graph_inputs = {i.name for i in model.graph.input}
    found: set[str] = set()

    def walk(graph):
        for node in graph.node:
            for name, formal in zip(node.input, _formal_names(node, opset)):
                if name in graph_inputs and (formal in PARAM_INPUTS or (node.op_type, formal) in PARAM_OP_INPUTS):
                    found.add(name)
            for a in node.attribute:
                if a.g is not None and a.HasField("g"):
                    walk(a.g)
                for g in a.graphs:
                    walk(g)

    walk(model.graph)
    return found


def base_case_params(case_dir: str) -> set[str]:
    """An ``*_expanded`` case is its base case with the op's function body inlined, and the same graph inputs:
    the inputs that parametrize the op there (a CenterCropPad's shape, a Range's bounds) are parameters here too,
    although only the body's arithmetic reads them."""
    import onnx

    name = os.path.basename(os.path.normpath(case_dir))
    base = re.sub(r"_expanded(_ver\d+)?$", "", name)
    path = os.path.join(os.path.dirname(os.path.normpath(case_dir)), base, "model.onnx")
    if base == name or not os.path.isfile(path):
        return set()
    return param_inputs(onnx.load(path))


def bind_parameters(
    model, inputs: list, also: set[str] | frozenset[str] = frozenset()
) -> tuple[Any, dict[str, Any], list[str], list[str]]:
    """A copy of ``model`` with its parameter-like inputs (and the inputs named in ``also``) turned into
    initializers holding the case's values.

    Returns (the copy, feeds for the remaining inputs, their names in order, the names bound)."""
    import onnx
    from onnx import numpy_helper

    params = param_inputs(model) | (set(also) & {vi.name for vi in model.graph.input})
    values = {vi.name: v for vi, v in zip(model.graph.input, inputs)}
    bound = [n for n in sorted(params) if isinstance(values.get(n), np.ndarray)]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [vi for vi in m.graph.input if vi.name not in bound]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    for n in bound:
        m.graph.initializer.append(numpy_helper.from_array(values[n], n))
    names = [vi.name for vi in keep]
    return m, {n: values[n] for n in names}, names, sorted(bound)


# ------------------------------------------------------------------------------------------------ comparing
def _shorten(text: str, n: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _compare_one(exp: Any, got: Any, where: str, fp16: bool) -> tuple[str, str]:
    if isinstance(exp, list):
        if not isinstance(got, (list, tuple)):
            return "wrong_result", f"{where}: a {type(got).__name__}, expected a sequence"
        if len(got) != len(exp):
            return "wrong_shape", f"{where}: {len(got)} sequence elements, expected {len(exp)}"
        for j, (e, g) in enumerate(zip(exp, got)):
            r = _compare_one(e, g, f"{where}[{j}]", fp16)
            if r[0] != "pass":
                return r
        return "pass", ""
    if exp is None:
        return ("pass", "") if got is None else ("wrong_result", f"{where}: a value, expected an empty optional")
    exp = np.asarray(exp)
    got = np.asarray(got)
    if got.shape != exp.shape:
        return "wrong_shape", f"{where}: shape {list(got.shape)}, expected {list(exp.shape)}"
    if exp.dtype == object:
        ok = np.array_equal(got.astype(object), exp)
        return ("pass", "") if ok else ("wrong_result", f"{where}: strings differ")
    if exp.dtype.name == "bfloat16" or got.dtype.name == "bfloat16":
        exp, got = exp.astype(np.float32), got.astype(np.float32)
    ek, gk = exp.dtype.kind, got.dtype.kind
    if ek != gk:
        return "wrong_result", f"{where}: dtype {got.dtype}, expected {exp.dtype}"
    if ek == "b":
        if np.array_equal(got, exp):
            return "pass", ""
        return "wrong_result", f"{where}: {int((got != exp).sum())} of {exp.size} booleans differ"
    if ek not in "iufc":  # float8 and friends: compare as float32
        exp, got = exp.astype(np.float32), got.astype(np.float32)
    rtol, atol = (FP16_RTOL, FP16_ATOL) if fp16 and ek == "f" else (RTOL, ATOL)
    try:
        np.testing.assert_allclose(got, exp, rtol=rtol, atol=atol)
        return "pass", ""
    except AssertionError:
        pass
    g64, e64 = got.astype(np.float64), exp.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), exp.shape)) if exp.ndim else ()
    return "wrong_result", (
        f"{where}: {int(bad.sum())} of {exp.size} differ (rtol {rtol:g}, atol {atol:g}); "
        f"at {list(idx)} got {float(g64[idx])!r}, expected {float(e64[idx])!r}"
    )


def compare(expected: list, got: list, fp16: bool = False) -> tuple[str, str]:
    if len(got) != len(expected):
        return "wrong_shape", f"{len(got)} outputs, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        r = _compare_one(e, g, f"output {i}", fp16)
        if r[0] != "pass":
            return r
    return "pass", ""


# ------------------------------------------------------------------------------------------------ running
def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback inside edgec (or the last one): where a raw exception came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "/edgec" in f.filename or "/main/" in f.filename] or frames
    if not mine:
        return ""
    f = mine[-1]
    return f" [{os.path.basename(os.path.dirname(f.filename))}/{os.path.basename(f.filename)}:{f.lineno}]"


def _run_edgec(case_dir: str, target: str, work: str) -> tuple[str, str]:
    import onnx

    import edgec
    from edgec.compiler import parse_target
    from edgec.errors import BadInputError, UnsupportedError, UsageError

    refusals = (UnsupportedError, BadInputError, UsageError)
    model, inputs, expected = load_case(case_dir)
    bound_model, feeds, names, _ = bind_parameters(model, inputs, base_case_params(case_dir))
    path = os.path.join(work, "model.onnx")
    onnx.save(bound_model, path)
    out = os.path.join(work, "out")
    try:
        tgt = parse_target(target)
        res = edgec.compile(path, target=target, output=out, use_cache=False)
    except refusals as e:
        return "refused", f"{type(e).__name__}: {_shorten(str(e).replace(path, 'model.onnx'))}"
    except Exception as e:  # noqa: BLE001 - a raw exception (or edgec's internal error) is what this counts
        return "crash", f"compile: {type(e).__name__}: {_shorten(str(e).replace(path, 'model.onnx'))}{_where(e)}"
    try:
        got = tgt.run_model_types(res.output_dir, feeds, res.manifest, names)
    except refusals as e:
        return "refused", f"run: {type(e).__name__}: {_shorten(e)}"
    except Exception as e:  # noqa: BLE001
        return "crash", f"run: {type(e).__name__}: {_shorten(e)}{_where(e)}"
    return compare(expected, list(got), fp16=tgt.name in FP16_TARGETS and "fp32" not in target)


def _run_onnxruntime(case_dir: str) -> tuple[str, str]:
    import onnxruntime as ort

    model, inputs, expected = load_case(case_dir)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {vi.name: v for vi, v in zip(model.graph.input, inputs)})
    except Exception as e:  # noqa: BLE001
        return "refused", f"{type(e).__name__}: {_shorten(e)}"
    # onnxruntime returns float8 / bfloat16 outputs as their bits (uint8 / uint16): read them as the type
    got = [
        g.view(e.dtype)
        if isinstance(g, np.ndarray)
        and isinstance(e, np.ndarray)
        and e.dtype.kind == "V"
        and g.dtype.kind == "u"
        and g.dtype.itemsize == e.dtype.itemsize
        else g
        for g, e in zip(got, expected)
    ]
    return compare(expected, list(got))


def _tvm_value(v: Any) -> Any:
    import tvm

    if hasattr(v, "numpy"):
        return v.numpy()
    if isinstance(v, tvm.runtime.ShapeTuple):
        return np.array(list(v), np.int64)
    if isinstance(v, (list, tuple)) or hasattr(v, "__len__"):
        return [_tvm_value(x) for x in v]
    return np.asarray(v)


def _run_tvm(case_dir: str) -> tuple[str, str]:
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model, inputs, expected = load_case(case_dir)
    bound_model, feeds, names, _ = bind_parameters(model, inputs, base_case_params(case_dir))
    try:
        shapes = {n: list(np.shape(feeds[n])) for n in names}
        dtypes = {n: str(np.asarray(feeds[n]).dtype) for n in names}
        mod = from_onnx(bound_model, shape_dict=shapes, dtype_dict=dtypes)
        ex = relax.build(mod, target="llvm")
        vm = relax.VirtualMachine(ex, tvm.cpu())
        res = vm["main"](*[tvm.runtime.tensor(np.asarray(feeds[n])) for n in names])
    except Exception as e:  # noqa: BLE001
        return "refused", f"{type(e).__name__}: {_shorten(str(e).strip().splitlines()[-1] if str(e).strip() else '')}"
    got = _tvm_value(res)
    if len(expected) == 1:
        single = isinstance(got, list) and len(got) == 1 and not isinstance(expected[0], list)
        got = got if single else [got]
    return compare(expected, got)


def run_case(case_dir: str, target: str) -> tuple[str, str]:
    """Run one case on ``target`` (an edgec target spec, or a baseline: 'onnxruntime', 'tvm-relax-onnx');
    returns (category, detail). In-process: a hang or a segfault takes the caller down (the suite runner
    isolates cases in worker processes)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if target == "onnxruntime":
            return _run_onnxruntime(case_dir)
        if target == "tvm-relax-onnx":
            return _run_tvm(case_dir)
        work = tempfile.mkdtemp(prefix="edgec-coverage-")
        try:
            return _run_edgec(case_dir, target, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ workers
def _worker(conn, quiet: bool) -> None:
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if quiet:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        case_dir, target = msg
        try:
            res = run_case(case_dir, target)
        except BaseException as e:  # noqa: BLE001 - the harness itself must survive anything
            res = ("crash", f"harness: {type(e).__name__}: {_shorten(e)}{_where(e)}")
        conn.send(res)


class _Slot:
    def __init__(self, ctx, quiet: bool):
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, quiet), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple[str, str] | None = None
        self.deadline = 0.0
        self.done = 0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.parent.close()


def run_suite(
    cases: list[str],
    targets: list[str],
    workers: int = 2,
    timeout: float = 300.0,
    quiet: bool = True,
    recycle: int = 150,
    progress: bool = True,
) -> dict[str, dict[str, tuple[str, str]]]:
    """Every (case, target) in worker processes; returns ``{target: {case name: (category, detail)}}``."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    tasks = collections.deque((c, t) for t in targets for c in cases)
    total = len(tasks)
    results: dict[str, dict[str, tuple[str, str]]] = {t: {} for t in targets}
    slots = [_Slot(ctx, quiet) for _ in range(max(1, min(workers, 2)))]
    t0 = time.time()
    finished = 0

    def record(task, res):
        nonlocal finished
        results[task[1]][os.path.basename(task[0])] = res
        finished += 1
        if progress and (finished % 50 == 0 or finished == total):
            counts = collections.Counter(r[0] for t in results.values() for r in t.values())
            print(
                f"[{finished}/{total}] {time.time() - t0:.0f}s "
                + " ".join(f"{k}={counts[k]}" for k in CATEGORIES if counts[k]),
                flush=True,
            )

    try:
        while tasks or any(s.task for s in slots):
            for i, s in enumerate(slots):
                if s.task is None and tasks:
                    if s.done >= recycle:
                        s.parent.send(None)
                        s.kill()
                        slots[i] = s = _Slot(ctx, quiet)
                    s.task = tasks.popleft()
                    s.deadline = time.time() + timeout
                    s.parent.send(s.task)
            busy = [s for s in slots if s.task]
            ready = wait([s.parent for s in busy], timeout=max(0.1, min(s.deadline for s in busy) - time.time()))
            for i, s in enumerate(slots):
                if s.task is None:
                    continue
                if s.parent in ready:
                    try:
                        res = s.parent.recv()
                        s.done += 1
                    except (EOFError, OSError):
                        s.proc.join(5)
                        res = ("crash", f"the worker process died (exit code {s.proc.exitcode})")
                        record(s.task, res)
                        s.kill()
                        slots[i] = _Slot(ctx, quiet)
                        continue
                    record(s.task, res)
                    s.task = None
                elif time.time() > s.deadline:
                    record(s.task, ("timeout", f"no result after {timeout:.0f} s"))
                    s.kill()
                    slots[i] = _Slot(ctx, quiet)
    finally:
        for s in slots:
            try:
                s.parent.send(None)
            except (OSError, BrokenPipeError):
                pass
            s.kill()
    return results


# ------------------------------------------------------------------------------------------------ report
_REFUSAL_CLASSES = (  # (class, regular expression on the refusal's text), first match wins
    (
        "import: element type the IR has no dtype for (float8 / float4 / int2 / e8m0, ...)",
        r"not a tensor of a supported element type",
    ),
    (
        "import: control flow / sequences / optionals",
        r"control flow|Sequence|sequence|Optional|optional|is not defined before use",
    ),
    ("import: dtype or domain", r"cannot be imported|imports no default-domain opset|operator domain"),
    ("dtype the target does not take", r"dtype \S+ is not supported|takes \S+ on |does not cast to|with dtype"),
    ("op the target does not take", r"is not supported by this target|has no \S+ lowering"),
    (
        "op variant (attribute, mode, run-time parameter)",
        r"through TVM's ONNX|through OpenVINO's ONNX|does not "
        r"take|does not support|not supported|needs|cannot|refused|only",
    ),
    ("empty tensors (input shapes)", r"leave the model with empty tensors"),
)


def refusal_class(detail: str) -> str:
    for name, rx in _REFUSAL_CLASSES:
        if re.search(rx, detail):
            return name
    return "other"


def _label(target: str) -> str:
    return target + (" (baseline)" if target in BASELINES else "")


def report(results: dict[str, dict[str, tuple[str, str]]], n_cases: int, seconds: float, note: str) -> list[str]:
    import onnx
    import onnxruntime
    import tvm

    lines = [
        "## Operator coverage: the ONNX backend node test suite",
        "",
        f"{n_cases} cases of onnx {onnx.__version__}'s backend node suite (`onnx.backend.test`), each compiled "
        "by `edgec.compile(..., use_cache=False)` and run by the target's `run_artifact`; outputs compared as "
        "onnx's runner does (same count, shape and dtype kind; `assert_allclose(rtol=1e-3, atol=1e-7)`). "
        "Parameter-like inputs (shapes, axes, pads, slice bounds, repeats, k, scales, clip bounds, "
        "quantization scales, ...) are bound as constants (an `_expanded` case binds what its base case binds); "
        "data inputs are fed at run time. Baselines on "
        f"the same cases in the same run: onnxruntime {onnxruntime.__version__} on the original model, and "
        f"TVM {tvm.__version__}'s own Relax ONNX importer on the bound copy (a baseline's exception counts as "
        f"refused). {note}Written by `python benchmarks/coverage.py` in {seconds / 60:.0f} min.",
        "",
        "**refused** is an honest refusal (UnsupportedError / BadInputError / UsageError); **wrong_result**, "
        "**wrong_shape** and **crash** (a raw exception) are bugs; a wrong answer is worse than a refusal.",
        "",
        "| target | " + " | ".join(CATEGORIES) + " |",
        "|---|" + "---:|" * len(CATEGORIES),
    ]
    for t, res in results.items():
        c = collections.Counter(r[0] for r in res.values())
        lines.append(f"| {_label(t)} | " + " | ".join(str(c[k]) for k in CATEGORIES) + " |")
    lines.append("")
    fp16 = [t for t in results if t.split("{")[0] in FP16_TARGETS and "fp32" not in t]
    if fp16:
        lines += [
            f"{', '.join(fp16)}: computes in fp16 by design (the default: what the Neural Engine runs); float "
            f"outputs compared at rtol {FP16_RTOL:g}, atol {FP16_ATOL:g}, integer outputs exactly. A "
            "`{precision=fp32}` row computes in fp32 and is compared at onnx's own tolerance.",
            "",
        ]
    edgec_targets = [t for t in results if t not in BASELINES]
    classes = [name for name, _ in _REFUSAL_CLASSES] + ["other"]
    counts = {
        t: collections.Counter(refusal_class(r[1]) for r in results[t].values() if r[0] == "refused")
        for t in edgec_targets
    }
    if edgec_targets:
        lines += [
            "### Why cases are refused (first matching class of each refusal's message)",
            "",
            "| class | " + " | ".join(_label(t) for t in edgec_targets) + " |",
            "|---|" + "---:|" * len(edgec_targets),
        ]
        lines += [f"| {c} | " + " | ".join(str(counts[t][c]) for t in edgec_targets) + " |" for c in classes]
        lines.append("")
    for t, res in results.items():
        if t in BASELINES:
            continue
        bad = sorted((name, r) for name, r in res.items() if r[0] in BAD + ("timeout",))
        if not bad:
            continue
        lines += [
            f"### {t}: {len(bad)} wrong_result / wrong_shape / crash / timeout",
            "",
            "| case | category | detail |",
            "|---|---|---|",
        ]
        for name, (cat, detail) in bad:
            lines.append(f"| {name} | {cat} | {detail.replace('|', '/')} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated edgec target specs and baselines (onnxruntime, tvm-relax-onnx)",
    )
    ap.add_argument("--limit", type=int, default=None, help="the first N cases only")
    ap.add_argument("--every", type=int, default=1, help="every Nth case only (e.g. 10 for hexagon under qemu)")
    ap.add_argument("--filter", default=None, help="only cases whose name matches this regular expression")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (at most 2)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per case before its worker is killed")
    ap.add_argument("--data", default=None, help="folder holding (or to receive) the suite's cases")
    ap.add_argument("--json", default=None, help="also write every case's result to this JSON file")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS-coverage.md")
    ap.add_argument("--verbose", action="store_true", help="let the workers print (TVM / OpenVINO logs)")
    ap.add_argument("--report-from", default=None, help="print the report of a saved --json run (no cases run)")
    args = ap.parse_args(argv)
    if args.report_from:
        with open(args.report_from) as f:
            saved = json.load(f)
        print("\n".join(report(saved, len(next(iter(saved.values()))), 0.0, "")))
        return
    targets = [t.strip() for t in re.split(r",(?![^{]*\})", args.targets) if t.strip()]
    tmp = None
    root = args.data or shipped_node_dir()
    if root is None:
        tmp = tempfile.mkdtemp(prefix="onnx-node-suite-")
        root = tmp
    try:
        if args.data or tmp:
            print(f"writing onnx's node test cases to {root}", flush=True)
            materialize(root)
        cases = list_cases(root, args.filter, args.limit, max(1, args.every))
        print(f"{len(cases)} cases x {len(targets)} targets: {', '.join(targets)}", flush=True)
        t0 = time.time()
        results = run_suite(cases, targets, workers=args.workers, timeout=args.timeout, quiet=not args.verbose)
        seconds = time.time() - t0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    subset = (
        (
            f"Subset: {'--filter ' + args.filter if args.filter else ''} {'--limit ' + str(args.limit) if args.limit else ''}"
            f" {'--every ' + str(args.every) if args.every > 1 else ''}. "
        )
        if args.filter or args.limit or args.every > 1
        else ""
    )
    lines = report(results, len(cases), seconds, subset)
    if args.no_write:
        print("\n".join(lines))
    else:
        sys.path.insert(0, HERE)
        from _results import write_results

        write_results("RESULTS-coverage.md", lines)


if __name__ == "__main__":
    main()
