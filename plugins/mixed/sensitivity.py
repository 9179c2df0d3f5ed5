"""Per-layer sensitivity: quantize one layer at a time and measure how much the model's outputs move.

For every candidate configuration (a ``quantize{...}`` spec, e.g. ``quantize{bits=4}``), the whole model is
quantized once on a copy, which gives every layer's quantized weight under that configuration. Then, layer by
layer, only that layer's weight takes its quantized values in the float model, the calibration samples run, and
the outputs are compared with the float model's:

* ``kl``: mean KL(softmax(float) || softmax(quantized)) over the last axis of the first output (logits);
* ``sqnr``: 10 log10(sum(float^2) / sum((float - quantized)^2)) in dB over all outputs;
* ``cosine``: cosine similarity of all outputs, flattened.

How a (layer, candidate) is evaluated without running the whole model (:func:`plan_groups`):

* Layers are grouped in graph order (a transformer block per group); the model is cut into one **stage** per
  group: the nodes the group's weights influence and no later group's do. Each stage is one onnxruntime session,
  built once, its weights prepacked; the float model's values at every stage input are captured once
  (:class:`_Store`: in memory up to ``EDGEC_SENSITIVITY_MEMORY`` bytes, a quarter of the available memory by
  default, then memory-mapped files). A layer's evaluation runs its group's stages only, from the cached values:
  a layer in block k of n costs n - k blocks, half the model on average. The group's own stage takes the
  candidate weight as an input (a session with those weights fed); later stages keep theirs prepacked.
* The calibration samples run as one batch when the model takes one (symbolic first dimension).
* A language model's head (a Linear with >= HEAD_MIN_CLASSES classes producing the first output): the distance
  is taken on the logits of the SUBSET tokens the float model finds most probable at any position (softmax
  renormalized over them; SQNR and cosine over those logits too, other graph outputs not compared), computed
  from the head's input for those rows only; ``distance="full"`` compares all the outputs. benchmarks/RESULTS-scale.md measures how the two rank the candidates and what the solver picks.
* KL is computed as log1p(sum p (expm1(u) - u)) with u the centred logit change: no cancellation between two
  large log-sums, in float64 (:func:`_kl_rows`).

Candidates' outputs are compared with the same stages' run on the float weights, so an unchanged weight
measures exactly zero. With an executor (``ctx.executor``, several workers), groups are tasks, largest first; a
worker loads the model once and builds the stages it needs once: tables equal to the serial run's.

Results are cached under ``$XDG_CACHE_HOME/edgec/sensitivity`` (``~/.cache/...``) keyed by a hash of the
model (structure and weights), the candidates, the sample count, the distance and the calibration data: a
second run with the same inputs is a file read.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ...api.executor import cores, task_threads
from ...errors import EdgecError
from ...ir import Model, QuantizedTensor, ReferenceExecutor, Tensor
from ...ir.passes import PassContext

METRICS = ("kl", "sqnr", "cosine")
CACHE_VERSION = 3
FLOAT16 = "float16"  # the candidate "keep the layer in float16": weights rounded to half precision, 2 bytes each


def to_float16(arr: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest float16 (saturating at its largest finite value)."""
    return np.clip(arr, -65504.0, 65504.0).astype(np.float16).astype(np.float32)


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgec", "sensitivity")


@dataclasses.dataclass
class Sensitivity:
    """``table[layer][candidate] = {"kl", "sqnr", "cosine", "bytes"}``; ``float_bytes[layer]``; ``params``."""

    candidates: list[str]
    layers: list[str]  # weight names, graph order
    nodes: dict[str, str]  # weight -> node name
    params: dict[str, int]
    float_bytes: dict[str, int]
    table: dict[str, dict[str, dict[str, float]]]
    distance: str = "outputs"  # what the metrics compare: the model's outputs, or a head's logit subset
    cached: bool = False

    def cost(self, layer: str, cand: str, metric: str) -> float:
        """An additive 'damage' for the solver: KL as is, 1 - cosine, or the noise power 10^(-sqnr/10)."""
        r = self.table[layer][cand]
        if metric == "kl":
            return max(r["kl"], 0.0)
        if metric == "cosine":
            return max(1.0 - r["cosine"], 0.0)
        return 10.0 ** (-r["sqnr"] / 10.0)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("cached")
        return d


def _model_hash(model: Model) -> tuple[str, str]:
    """(sha256 of the model's saved form, the temporary folder it was saved to) - the folder also serves as
    the source of copies."""
    from ...ir.serde import save

    d = tempfile.mkdtemp(prefix="edgec-sens-")
    save(model, os.path.join(d, "m"))
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(d)):
        for f in sorted(files):
            h.update(f.encode())
            with open(os.path.join(root, f), "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest(), d


def _kl_rows(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KL(softmax(a) || softmax(b)) per row, ``p = softmax(a)``, in float64, without cancellation:
    with ``d = b - a`` and ``u = d - sum(p d)``, KL = log(sum p e^u) = log1p(sum p (expm1(u) - u)), a sum of
    non-negative terms (sum p u = 0) where the textbook form subtracts two large log-sums."""
    u = np.subtract(b, a)
    t = p * u
    u -= t.sum(-1, keepdims=True)
    top = u.max(-1)
    big = top > 50.0  # e^u would overflow: those rows in the log-sum-exp form, exact at that size
    v = np.minimum(u, 50.0) if big.any() else u
    np.expm1(v, out=t)
    t -= v
    t *= p
    kl = np.log1p(t.sum(-1))
    if big.any():
        lu = np.log(np.maximum(p[big], 1e-300)) + u[big]
        m = lu.max(-1, keepdims=True)
        kl[big] = m[:, 0] + np.log(np.sum(np.exp(lu - m), -1))
    return np.maximum(kl, 0.0)


class _Reference:
    """The float model's outputs on the calibration samples (one list of output arrays per sample run) and
    what every comparison with them reuses: float64 copies, the first output's softmax, the norms."""

    KEEP = 64 << 20  # float64 copies kept up to this many bytes (a 49k-class vocabulary is converted per call)

    def __init__(self, outs: list[list[np.ndarray]]):
        self.outs = outs
        self.norm = sum(float(np.sum(np.square(x, dtype=np.float64))) for r in outs for x in r)
        size = 8 * sum(int(np.asarray(x).size) for r in outs for x in r)
        self.kept = [[self._f64(x) for x in r] for r in outs] if size <= self.KEEP else None
        self.p = [self._softmax(r[0]) for r in self.kept] if self.kept is not None else None

    @staticmethod
    def _f64(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64)

    @staticmethod
    def _softmax(a: np.ndarray) -> np.ndarray | None:
        if a.ndim < 1 or a.shape[-1] <= 1:
            return None
        p = np.exp(a - a.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return p

    def distance(self, got: list[list[np.ndarray]]) -> dict[str, float]:
        """KL on the first output's last axis (mean over rows), SQNR and cosine over all outputs."""
        kl, n = 0.0, 0
        den = dot = nb = 0.0
        for k, (r_outs, g_outs) in enumerate(zip(self.outs, got)):
            for j, (x, y) in enumerate(zip(r_outs, g_outs)):
                x64 = self.kept[k][j] if self.kept is not None else self._f64(x)
                y64 = self._f64(y)
                if j == 0 and x64.ndim >= 1 and x64.shape[-1] > 1:
                    p = self.p[k] if self.p is not None else self._softmax(x64)
                    assert p is not None  # the first output has a last axis of more than one class
                    c = x64.shape[-1]
                    kl += float(np.sum(_kl_rows(p.reshape(-1, c), x64.reshape(-1, c), y64.reshape(-1, c))))
                    n += x64.size // c
                # sums of products without temporaries or numpy's BLAS (its threads would spin beside the stages')
                x1, y1 = x64.ravel(), y64.ravel()
                diff = x1 - y1
                den += float(np.einsum("i,i->", diff, diff))
                dot += float(np.einsum("i,i->", x1, y1))
                nb += float(np.einsum("i,i->", y1, y1))
        sqnr = 10 * np.log10(self.norm / den) if den > 0 else 200.0
        cos = dot / np.sqrt(self.norm * nb) if self.norm > 0 and nb > 0 else 1.0
        return {"kl": kl / max(n, 1), "sqnr": float(min(sqnr, 200.0)), "cosine": float(min(cos, 1.0))}


def compare(ref: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> dict[str, float]:
    """KL on the first output's last axis, SQNR and cosine over all outputs (one list of outputs per sample)."""
    return _Reference(ref).distance(got)


def _quantized_weights(src_dir: str, spec: str, ctx: PassContext) -> dict[str, tuple[int, QuantizedTensor]]:
    """Quantize a copy of the model with ``spec``; node name -> (weight input index, quantized weight). Passes
    that do not need calibration data run without it: a quantizer then skips its per-layer output-error
    report, which nobody reads here (over half of a round-to-nearest copy's time)."""
    from ...ir.passes import PassManager, parse_pipeline
    from ...ir.serde import load

    m = load(os.path.join(src_dir, "m"))
    passes = parse_pipeline(spec, ctx.passes)
    if not any(p.needs_calibration() for p in passes):
        ctx = dataclasses.replace(ctx, calibration=None)
    PassManager(passes).run(m, ctx)
    out = {}
    for n in m.graph:
        for i, v in enumerate(n.inputs):
            if v is not None and v.is_const and isinstance(v.const, QuantizedTensor):
                out[n.name] = (i, v.const)
    return out


# -- the measurement: each layer's candidates from the float activations cached at its input --------------------

Item = tuple[str, int, str, dict[str, "QuantizedTensor | None"]]  # node, weight input, weight, candidate -> weight
HEAD_MIN_CLASSES = 8192  # a Linear producing the first output with this many classes is a language model's head
SUBSET = 4096  # tokens in the logit subset (the float model's most probable ones)
MERGE_WASTE = 0.03  # layers share a session while none recomputes more than this share of the model's work


@dataclasses.dataclass
class Stage:
    """One onnxruntime session: from the float values ``inputs`` to ``outputs``, the ``weights`` it reads of the
    layers under study fed on every run."""

    inputs: list[str]
    outputs: list[str]
    weights: list[str]
    consts: list[str] = dataclasses.field(default_factory=list)  # every float32 weight it reads


@dataclasses.dataclass
class Group:
    """Layers measured together: a run of one of them is the ``chain`` of stages (indices into the plan's
    stages), each fed what earlier stages of the run computed and otherwise the float model's captured values."""

    items: list[int]  # indices into the analysis' items
    chain: list[int]
    outputs: list[str]  # what the distance compares: the graph outputs, or the head's input
    work: float  # estimated multiply-adds of one run, relative (scheduling)


@dataclasses.dataclass
class Plan:
    groups: list[Group]
    stages: list[Stage]
    fed: bool = False  # every stage's weights fed instead of prepacked (no second copy of the weights)

    def captured(self) -> list[str]:
        """The float values a run may read without computing them: every stage input and every output."""
        names = {n: None for st in self.stages for n in st.inputs}
        names.update({n: None for grp in self.groups for n in grp.outputs})
        return list(names)


@dataclasses.dataclass
class Head:
    """A language model's output head ``logits = h @ W^T + b`` (``h`` its input): the distance is taken on the
    logits of ``tokens`` only, computed from ``h``, so no run computes the full vocabulary."""

    node: str
    input: str
    weight: str
    tokens: np.ndarray
    w: np.ndarray  # W[tokens], float32
    b: np.ndarray | None
    classes: int = 0  # the head's whole vocabulary
    threads: int = 0
    _sessions: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:  # sessions stay in their process
        d = dict(self.__dict__)
        d["_sessions"] = {}
        return d

    def logits(self, h: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """``h @ W[tokens]^T + b[tokens]``, or with ``w`` in place of ``W[tokens]``. On onnxruntime like the
        stages (numpy's BLAS would leave its own spinning threads beside the next stage's)."""
        s = self._session(w is not None)
        feeds = {"h": np.asarray(h, np.float32)}
        if w is not None:
            feeds["w"] = np.ascontiguousarray(np.asarray(w, np.float32).T)
        return s.run(None, feeds)[0]

    def _session(self, fed: bool):
        if fed not in self._sessions:
            import onnxruntime as ort
            from onnx import TensorProto, helper, numpy_helper

            k = self.w.shape[1]
            wt = np.ascontiguousarray(self.w.T)
            inits = [] if fed else [numpy_helper.from_array(wt, "w")]
            nodes = [helper.make_node("MatMul", ["h", "w"], ["z" if self.b is None else "zb"])]
            if self.b is not None:
                inits.append(numpy_helper.from_array(self.b.astype(np.float32), "b"))
                nodes.append(helper.make_node("Add", ["zb", "b"], ["z"]))
            ins = [helper.make_tensor_value_info("h", TensorProto.FLOAT, None)]
            if fed:
                ins.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [k, len(self.tokens)]))
            graph = helper.make_graph(
                nodes, "head", ins, [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits
            )
            proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            if self.threads:
                opts.intra_op_num_threads = self.threads
            opts.add_session_config_entry("session.force_spinning_stop", "1")
            self._sessions[fed] = ort.InferenceSession(
                proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        return self._sessions[fed]


def _node_work(n) -> float:
    """Multiply-adds of a weighted node per output position: its constant float weights' elements times the
    output's spatial size where static (a Conv's feature map; 1 for a Linear, whose rows all layers share)."""
    w = sum(
        int(np.prod(v.static_shape))
        for v in n.inputs
        if v is not None and v.is_const and v.static_shape and len(v.static_shape) >= 2
    )
    if not w or n.op_type == "Gather":
        return 0.0
    o = n.outputs[0].static_shape if n.outputs else None
    return float(w * (int(np.prod(o[2:])) if o and len(o) > 2 and n.op_type.startswith("Conv") else 1))


def _affected(model: Model, weight: str) -> set[int]:
    """ids of the nodes a weight's value reaches: its consumers and everything downstream of them."""
    todo = [u.node for u in model.graph.value(weight).uses]
    seen: set[int] = set()
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        for o in n.outputs:
            todo.extend(u.node for u in o.uses)
    return seen


def find_head(model: Model) -> tuple | None:
    """(node, input, weight, bias) of a Linear with a constant weight of >= HEAD_MIN_CLASSES rows that produces
    the first graph output: a language model's vocabulary head. None otherwise."""
    g = model.graph
    if not g.outputs:
        return None
    n = g.outputs[0].producer
    if n is None or n.qualified_op != "edgec::Linear" or not n.arg(1).is_const:
        return None
    w = n.arg(1)
    b = n.inputs[2] if len(n.inputs) > 2 else None
    if w.static_shape is None or len(w.static_shape) != 2 or w.static_shape[0] < HEAD_MIN_CLASSES:
        return None
    if b is not None and not b.is_const:
        return None
    return n, n.arg(0), w, b


def plan_groups(model: Model, items: list[Item], head_node=None) -> Plan:
    """Consecutive layers (graph order) whose influenced parts nearly coincide form a group: a layer joins the
    current group while no member would recompute more than MERGE_WASTE of the model's work that does not depend
    on its own weight. The model is cut into one stage per group, each session built once: every weight is
    prepacked once, whichever groups run through its stage."""
    g = model.graph
    nodes = list(g)
    work = {id(n): _node_work(n) for n in nodes}
    total = sum(work.values()) or 1.0
    reach = [_affected(model, it[2]) for it in items]
    parts: list[tuple[list[int], set[int]]] = []
    for k, r in enumerate(reach):
        if parts:
            members, d = parts[-1]
            u = d | r
            wu = sum(work[i] for i in u)
            if all(wu - sum(work[i] for i in reach[j]) <= MERGE_WASTE * total for j in [*members, k]):
                members.append(k)
                parts[-1] = (members, u)
                continue
        parts.append(([k], set(r)))
    head_id = id(head_node) if head_node is not None else None
    if head_node is not None:
        want = [head_node.arg(0)]
    else:
        want = list(g.outputs)
    # stage j: the nodes group j influences and no later group does. A node's consumers are influenced by every
    # group that influences it, so a stage feeds only later stages, and a group's run is the stages after it
    # that hold anything it influences, in order (a chain of blocks: its own stage and every later one).
    sets: list[set[int]] = [set() for _ in parts]
    later: set[int] = set()
    for j in reversed(range(len(parts))):
        sets[j] = parts[j][1] - later
        later |= parts[j][1]
    stages = []
    for x in sets:
        inside = [n for n in nodes if id(n) in x and id(n) != head_id]
        made = {id(o) for n in inside for o in n.outputs}
        ins: dict[str, None] = {}
        outs: dict[str, None] = {}
        for n in inside:
            for v in n.inputs:
                if v is not None and not v.is_const and id(v) not in made:
                    ins[v.name] = None
            for o in n.outputs:
                if any(id(u.node) not in x or id(u.node) == head_id for u in o.uses) or any(o is w for w in want):
                    outs[o.name] = None
        ws = [it[2] for it in items if any(id(u.node) in x for u in g.value(it[2]).uses)]
        cs = [v.name for n in inside for v in n.inputs if v is not None and v.is_const and _is_free(v) and v.rank]
        stages.append(Stage(list(ins), list(outs), list(dict.fromkeys(ws)), list(dict.fromkeys(cs))))
    groups = []
    for j, (members, d) in enumerate(parts):
        chain = [k for k in range(j, len(parts)) if stages[k].outputs and not sets[k].isdisjoint(d)]
        groups.append(Group(members, chain, [w.name for w in want], sum(work[i] for i in d)))
    return Plan(groups, stages)


def _batched(model: Model, calib: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The samples as one run when the model takes a batch: every input of rank >= 2 with the same symbolic
    first dimension, every sample the same shapes, and the batched run's float outputs equal to the samples'
    own (a Reshape that folds the batch away, or attention across it, would change them): one forward pass per
    (layer, candidate) instead of one per sample."""
    ins = model.graph.inputs
    if len(calib) < 2 or not ins:
        return calib
    dims = {v.shape[0] if v.shape and len(v.shape) >= 2 else None for v in ins}
    if len(dims) != 1 or not isinstance(next(iter(dims)), str):
        return calib
    first = calib[0]
    if any(set(s) != set(first) or any(s[k].shape != first[k].shape for k in s) for s in calib):
        return calib
    batch = {k: np.concatenate([s[k] for s in calib]) for k in first}
    try:
        ex = ReferenceExecutor(model)
        one = [ex.run(x) for x in calib]
        together = ex.run(batch)
    except Exception:  # noqa: BLE001 - the model does not take this batch: one run per sample
        return calib
    for o in model.graph.outputs:
        want = np.concatenate([np.asarray(r[o.name]) for r in one])
        got = np.asarray(together[o.name])
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            return calib
    return [batch]


class _Store:
    """Captured float activations: in memory up to ``limit`` bytes, then written to .npy files in a temporary
    folder and read back memory-mapped (the page cache decides what stays in RAM)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self.arrays: dict[str, np.ndarray] = {}
        self.dir: str | None = None

    def put(self, name: str, a: np.ndarray) -> None:
        if self.used + a.nbytes > self.limit:
            if self.dir is None:
                self.dir = tempfile.mkdtemp(prefix="edgec-sens-acts-")
            path = os.path.join(self.dir, f"{len(self.arrays)}.npy")
            np.save(path, a)
            a = np.load(path, mmap_mode="r")
        else:
            self.used += a.nbytes
        self.arrays[name] = a

    def close(self) -> None:
        import shutil

        self.arrays.clear()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def memory_limit() -> int:
    """Bytes of captured activations held in memory (``EDGEC_SENSITIVITY_MEMORY``, default a quarter of the
    memory available now); the rest goes to disk."""
    env = os.environ.get("EDGEC_SENSITIVITY_MEMORY")
    if env:
        try:
            limit = int(float(env))
        except ValueError:
            limit = -1
        if limit < 0:
            from ...errors import UsageError

            raise UsageError(
                f"EDGEC_SENSITIVITY_MEMORY={env!r} is not a byte count: set it to the bytes of activations to keep "
                "in memory (e.g. 2e9), or unset it for a quarter of the available memory"
            )
        return limit
    try:
        import psutil

        return int(psutil.virtual_memory().available // 4)
    except ImportError:  # pragma: no cover - psutil ships with edgec's dependencies
        return 2 << 30


def prepack_budget() -> int:
    """Bytes the stage sessions' prepacked weight copies may take: half the memory available now."""
    try:
        import psutil

        return int(psutil.virtual_memory().available // 2)
    except ImportError:  # pragma: no cover - psutil ships with edgec's dependencies
        return 8 << 30


def _weight_bytes(model: Model) -> int:
    return sum(
        4 * int(np.prod(v.static_shape or ())) for v in model.graph.initializers.values() if _is_free(v) and v.rank
    )


def capture(model: Model, runs: list[dict[str, np.ndarray]], names: list[str], store: _Store, threads: int = 0):
    """The float model's values ``names`` on every run into ``store`` (key ``"run/name"``), in chunks that fit
    its memory: the first value alone, whose size sets how many values each later capture run may hold (one
    forward pass per chunk; onnxruntime returns a chunk's values together)."""
    inputs = {v.name for v in model.graph.inputs}
    for nm in names:
        if nm in inputs:  # a graph input: the run's own array
            for i, feeds in enumerate(runs):
                store.put(f"{i}/{nm}", np.asarray(feeds[nm]))
    names = [nm for nm in names if nm not in inputs]
    k = 0
    chunk = 1
    while k < len(names):
        part = names[k : k + chunk]
        ex = ReferenceExecutor(model, capture=part, capture_only=True, threads=threads)
        size = 0
        for i, feeds in enumerate(runs):
            r = ex.run(feeds)
            for nm in part:
                size += r[nm].nbytes
                store.put(f"{i}/{nm}", r[nm])
        del ex
        if k == 0:
            chunk = max(1, int(store.limit // max(size, 1)))
        k += len(part)


def measure_group(
    model: Model,
    plan: Plan,
    index: int,
    items: Mapping[int, Item],
    runs: list[dict[str, np.ndarray]],
    values: Mapping[str, np.ndarray],
    head: Head | None,
    sessions: dict[tuple[int, bool], ReferenceExecutor],
    threads: int = 0,
    lock: Any = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Every (layer, candidate) of group ``index``: its chain of stage sessions (built on first use into
    ``sessions``) from the float values captured at its start (``values``: ``"run/name"`` -> array), the layer's
    weight fed with the candidate's values; the chain's run with the float weights is the reference the
    candidates' outputs are compared with."""
    g = model.graph
    group = plan.groups[index]

    mine = {items[k][2] for k in group.items}

    def build(k: int, free: bool) -> ReferenceExecutor:
        """Stage ``k``'s session: the group's weights it reads fed on every run (free), or every weight a constant,
        prepacked by onnxruntime (a quarter faster on this group's later stages). Where prepacked copies of all
        the weights would not fit in memory (``plan.fed``), every weight is fed from the model's own arrays."""
        st = plan.stages[k]
        cut = {f: values[f"0/{f}"] for f in st.inputs}
        fed = [w for w in st.weights if _is_free(g.value(w))] if free else []
        if plan.fed:
            fed = list(dict.fromkeys([*fed, *st.consts]))
        return ReferenceExecutor(
            model, capture=st.outputs, capture_only=True, cut=cut, free=fed, threads=threads, spin=False
        )

    keys = [(k, not mine.isdisjoint(plan.stages[k].weights)) for k in group.chain]

    def run(extra: dict[str, np.ndarray], head_w: np.ndarray | None, chain: list[ReferenceExecutor]):
        res = []
        for i in range(len(runs)):
            env: dict[str, np.ndarray] = {}
            for k, ex in zip(group.chain, chain):
                st = plan.stages[k]
                env.update(ex.run({**{f: env[f] if f in env else values[f"{i}/{f}"] for f in st.inputs}, **extra}))
            outs = [env[o] if o in env else values[f"{i}/{o}"] for o in group.outputs]
            res.append([head.logits(outs[0], head_w)] if head is not None else outs)
        return res

    with lock or contextlib.nullcontext():  # groups measured on threads share the stage sessions
        chain = [sessions[key] if key in sessions else sessions.setdefault(key, build(*key)) for key in keys]
    ref = _Reference(run({}, None, chain))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for k in group.items:
        nname, idx, wname, cands = items[k]
        w = g.value(wname)
        wshape = w.static_shape
        assert wshape is not None  # a constant weight: its shape is its tensor's
        row = out.setdefault(wname, {})
        for c, q in cands.items():
            if q is None:  # float16
                vals = to_float16(np.asarray(w.numpy()))
                nbytes = 2 * int(np.prod(wshape))
            else:
                vals = np.asarray(q.dequantize(), np.float32)
                nbytes = int(q.nbytes)
            head_w = vals[head.tokens] if head is not None and wname == head.weight else None
            if _is_free(w):
                got = run({wname: vals}, head_w, chain)
            else:  # a weight that is not a float32 constant: sessions with the candidate in its place
                tmp = g.add_const(g.unique_name(wname + "_sens"), q if q is not None else Tensor(vals))
                uses = [(u.node, u.index) for u in w.uses]
                for node, i in uses:
                    node.replace_input_with(i, tmp)
                try:
                    got = run({}, head_w, [build(*key) for key in keys])
                finally:
                    for node, i in uses:
                        node.replace_input_with(i, w)
                    g.remove_const(tmp.name)
            row[c] = {**ref.distance(got), "bytes": nbytes}
    return out


def _is_free(w) -> bool:
    return w.dtype is not None and w.dtype.numpy == np.float32 and not isinstance(w.const, QuantizedTensor)


def write_temp(data: bytes) -> str:
    """A saved model's bytes written to a temporary file, removed when this (worker) process ends."""
    fd, path = tempfile.mkstemp(prefix="edgec-model-", suffix=".edgec")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    atexit.register(os.remove, path)
    return path


_WORKER: dict[
    str, tuple[Model, dict[tuple[int, bool], ReferenceExecutor]]
] = {}  # in a worker: digest -> model, sessions


def _measure_shard(task: tuple, shared: dict) -> dict[str, dict[str, dict[str, float]]]:
    """One group, in a worker. The model is loaded once per worker process (with the stage sessions it builds,
    which later groups reuse): from the file the analysis saved (a worker on this machine), else from the saved
    bytes the executor sent once (``shared["model"]``: Ray's object store)."""
    from ...ir.serde import load

    index, items = task
    digest = shared["run"]  # one analysis: its model, plan and sessions (a later one may cut the model otherwise)
    if digest not in _WORKER:
        path = shared.get("path")
        if path is None or not os.path.exists(path):
            path = write_temp(shared["model"])
        _WORKER.clear()  # one analysis at a time per worker
        _WORKER[digest] = (load(path), {})
    model, sessions = _WORKER[digest]
    threads = task_threads()
    head = shared["head"]
    if head is not None:
        head.threads = threads
    return measure_group(model, shared["plan"], index, items, shared["runs"], shared["values"], head, sessions, threads)


def _head(hd: tuple, runs: list, store: _Store) -> Head:
    """The head with its token subset: the SUBSET classes with the highest float probability at any position
    (every position's most likely tokens first), from the captured head input."""
    node, x, w, b = hd
    wf = np.asarray(w.numpy(), np.float32)
    bf = np.asarray(b.numpy(), np.float32) if b is not None else None
    best = np.zeros(wf.shape[0], np.float32)
    for i in range(len(runs)):
        h = np.asarray(store.arrays[f"{i}/{x.name}"], np.float32)
        h2 = h.reshape(-1, h.shape[-1])
        for r in range(0, len(h2), 1024):
            z = h2[r : r + 1024] @ wf.T
            if bf is not None:
                z += bf
            z -= z.max(-1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(-1, keepdims=True)
            np.maximum(best, z.max(0), out=best)
    tokens = np.sort(np.argsort(-best, kind="stable")[: min(SUBSET, len(best))])
    return Head(
        node.name,
        x.name,
        w.name,
        tokens,
        np.ascontiguousarray(wf[tokens]),
        bf[tokens] if bf is not None else None,
        classes=int(wf.shape[0]),
    )


def _run_here(model, plan: Plan, order: list[int], items, runs, store, head, say) -> dict:
    """Every group in this process: on one thread per core, each with single-threaded sessions (onnxruntime's
    per-session pools waking for every operator of 30 short stages cost more than they share; the stages are
    shared), largest groups first. One thread where a candidate must replace a weight inside the model (a weight
    that is not a float32 constant)."""
    import concurrent.futures as cf
    import threading

    groups = plan.groups
    ncores = cores()
    shared_model = not all(_is_free(model.graph.value(it[2])) for it in items)
    n = 1 if shared_model or len(groups) <= 1 else min(ncores, len(groups))
    threads = 1 if n > 1 else 0  # one thread: onnxruntime's own pool on every core
    if head is not None:
        head.threads = threads
    sessions: dict[tuple[int, bool], ReferenceExecutor] = {}
    lock = threading.Lock()
    parts: dict[str, dict[str, dict[str, float]]] = {}
    pool = cf.ThreadPoolExecutor(n)
    bar = _bar(len(groups))
    try:
        futures = {
            pool.submit(measure_group, model, plan, j, items, runs, store.arrays, head, sessions, threads, lock): j
            for j in order
        }
        for done, f in enumerate(cf.as_completed(futures)):
            j = futures[f]
            parts.update(f.result())
            with lock:  # fed-weight sessions: rebuilt if a later group (a tied weight's) needs one again
                for k in groups[j].chain:
                    sessions.pop((k, True), None)
            bar.update()
            say(f"sensitivity: group {done + 1}/{len(groups)} done ({len(groups[j].items)} layers)")
    finally:
        bar.close()
        pool.shutdown(cancel_futures=True)  # a failed group: the queued ones are not run
    return parts


def _bar(groups: int):
    """The measurement's progress bar (on a terminal only), one step per group."""
    from tqdm import tqdm

    return tqdm(total=groups, desc="sensitivity", unit="group", leave=False, disable=None)


def _run_groups(model, plan: Plan, items, runs, store, head, run_id, src, ctx, say) -> dict:
    """Every group measured, in this process or as tasks on the context's executor (largest first)."""
    ex = getattr(ctx, "executor", None)
    groups = plan.groups
    parts: dict[str, dict[str, dict[str, float]]] = {}
    order = sorted(range(len(groups)), key=lambda k: -groups[k].work * sum(len(items[j][3]) for j in groups[k].items))
    if ex is None or not ex.fans_out or len(groups) <= 1:
        return _run_here(model, plan, order, items, runs, store, head, say)
    tasks = [(k, {j: items[j] for j in groups[k].items}) for k in order]
    say(f"sensitivity: {len(groups)} groups on {ex.name} x{ex.workers}")
    saved = os.path.join(src, "m")
    values = {k: np.asarray(v) for k, v in store.arrays.items()}
    shared: dict[str, Any] = {"runs": runs, "head": head, "plan": plan, "values": values, "run": run_id}
    shared["path"] = saved
    if not getattr(ex, "same_machine", True):  # workers elsewhere: the saved model travels, once
        with open(saved, "rb") as f:
            shared["model"] = f.read()
        shared["path"] = None
    bar = _bar(len(tasks))

    def finished(r) -> None:
        bar.update()
        say(f"sensitivity: task {r.index + 1}/{len(tasks)} done ({r.seconds:.2f} s)")

    try:
        done = ex.run(_measure_shard, tasks, shared=shared, on_done=finished)
    finally:
        bar.close()
    for r in done:
        if not r.ok:
            raise EdgecError(
                f"sensitivity: task {r.index + 1} of {len(tasks)} (group {order[r.index] + 1}) failed on the "
                f"{ex.name} executor: "
                f"{r.error}; measure in this process (no --workers / --executor) to see it alone"
            )
        parts.update(r.value)  # each weight is measured in one item, so in one group
    return parts


def analyse(
    model: Model,
    candidates: Sequence[str],
    ctx: PassContext,
    *,
    samples: int = 8,
    use_cache: bool = True,
    progress: Callable[[str], None] | None = None,
    distance: str = "auto",
    seq: int = 0,
) -> Sensitivity:
    """Measure every quantizable layer's sensitivity to each candidate ``quantize{...}`` spec.

    ``distance``: ``auto`` compares a language model's logits on its SUBSET most probable tokens (a head of at
    least HEAD_MIN_CLASSES classes; the model's outputs otherwise); ``full`` always compares the outputs.
    ``seq``: a language model's windows are measured on their first ``seq`` tokens (0: whole windows); the
    measurement's cost is linear in the tokens (benchmarks/RESULTS-scale.md)."""
    if distance not in ("auto", "full"):
        raise ValueError(f"distance must be 'auto' or 'full', not {distance!r}")
    if seq < 0:
        raise ValueError(f"seq must be >= 0, not {seq}")
    import shutil

    say = progress or (lambda m: None)
    if ctx.calibration is None:
        from ...errors import UsageError

        raise UsageError(
            "sensitivity analysis needs calibration data: pass --calib (a .npz, a folder of samples, "
            "or 'random' for a smoke test)"
        )
    limit = memory_limit()  # a bad setting is reported before any work
    from ...api.llm import first_tokens

    calib = first_tokens(model, list(ctx.calibration.samples[:samples]), seq)
    digest, src = _model_hash(model)
    try:
        h = hashlib.sha256(f"v{CACHE_VERSION}|{digest}|{list(candidates)}|{len(calib)}|{distance}".encode())
        for s in calib:
            for k in sorted(s):
                a = np.ascontiguousarray(s[k])
                h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
        key = h.hexdigest()
        path = os.path.join(cache_dir(), key[:32] + ".json")
        if use_cache and os.path.exists(path):
            with open(path) as f:
                d = json.load(f)
            say(f"sensitivity: cached ({path})")
            return Sensitivity(**d, cached=True)
        g = model.graph
        import concurrent.futures as cf

        specs = [c for c in candidates if c != FLOAT16]
        say(f"sensitivity: quantizing {len(specs)} copies ({', '.join(specs)})")
        # one copy per core at a time (each loads the saved model; numpy releases the interpreter lock)
        with cf.ThreadPoolExecutor(max(1, min(cores(), len(specs)))) as pool:
            per_cand = dict(zip(specs, pool.map(lambda c: _quantized_weights(src, c, ctx), specs)))
        nodes = {n.name: n for n in g}
        layer_nodes = [n.name for n in g if any(n.name in q for q in per_cand.values())]
        weights = {}
        for nname in layer_nodes:
            idx = next(q[nname][0] for q in per_cand.values() if nname in q)
            weights[nname] = (idx, nodes[nname].arg(idx))
        free = {w.name for _, w in weights.values() if _is_free(w)}  # float16 candidates need float32 weights
        params: dict[str, int] = {}
        fbytes: dict[str, int] = {}
        wnames: dict[str, str] = {}
        items: list[Item] = []
        seen: set[tuple[str, str]] = set()
        for nname in layer_nodes:
            idx, w = weights[nname]
            wnames.setdefault(w.name, nname)
            wshape = w.static_shape
            assert wshape is not None  # a constant weight: its shape is its tensor's
            params[w.name] = int(np.prod(wshape))
            fbytes[w.name] = int(np.asarray(w.numpy()).nbytes)
            cands: dict[str, QuantizedTensor | None] = {}
            for c in candidates:
                if c == FLOAT16:
                    if w.name in free and (w.name, c) not in seen:
                        cands[c] = None
                elif nname in per_cand[c] and (w.name, c) not in seen:
                    cands[c] = per_cand[c][nname][1]
                seen.update((w.name, c2) for c2 in cands)
            if cands:  # a weight shared by several layers is measured at its first one
                items.append((nname, idx, w.name, cands))
        hd = find_head(model) if distance != "full" else None
        runs = _batched(model, calib)
        plan = plan_groups(model, items, hd[0] if hd else None)
        plan.fed = _weight_bytes(model) > prepack_budget()
        store = _Store(limit)
        try:
            want = plan.captured()
            say(
                f"sensitivity: {len(items)} layers in {len(plan.groups)} groups, {len(plan.stages)} stages; "
                f"capturing {len(want)} float values"
                + ("; weights fed, not prepacked (two copies would not fit in memory)" if plan.fed else "")
            )
            capture(model, runs, want, store)
            head = _head(hd, runs, store) if hd and items else None
            parts = _run_groups(model, plan, items, runs, store, head, key, src, ctx, say) if items else {}
        finally:
            store.close()
        # every layer's weight in graph order, whatever order the shards finished in (a row may be empty: no
        # candidate quantizes that layer)
        table = {wname: parts.get(wname, {}) for wname in wnames}
        dist = f"logit subset ({len(head.tokens)} of {head.classes} classes)" if head else "outputs"
        sens = Sensitivity(list(candidates), list(table), wnames, params, fbytes, table, dist)
        if use_cache:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp_path = path + f".{os.getpid()}.tmp"
            with open(tmp_path, "w") as f:
                json.dump(sens.to_json(), f)
            os.replace(tmp_path, path)
        return sens
    finally:
        shutil.rmtree(src, ignore_errors=True)


def label(spec: str) -> str:
    """A short name for a candidate spec: '4 bit', 'palette 3 bit', 'Q4_K', 'float16'."""
    if spec == FLOAT16:
        return "float16"
    gg = re.search(r"gguf=(\w+)", spec)
    if gg:
        return gg.group(1)
    bits = re.search(r"bits=(\d+)", spec)
    if not bits:
        return spec
    return ("palette " if "method=codebook" in spec else "") + f"{bits.group(1)} bit"


def plot(sens: Sensitivity, path: str, metric: str = "kl") -> str:
    """A PNG of every layer's sensitivity per candidate (log scale for kl / 1 - cosine); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(sens.layers) + 2), 4.2))
    x = np.arange(len(sens.layers))
    for c in sens.candidates:
        ys = [sens.table[w][c][metric] if c in sens.table[w] else np.nan for w in sens.layers]
        if metric == "cosine":
            ys = [1 - y for y in ys]
        ax.plot(x, ys, marker="o", ms=3, lw=1, label=label(c))
    if metric != "sqnr":
        ax.set_yscale("log")
    ax.set_ylabel({"kl": "KL(float || quantized)", "cosine": "1 - cosine", "sqnr": "SQNR (dB)"}[metric])
    ax.set_xticks(x)
    ax.set_xticklabels([sens.nodes.get(w, w)[-28:] for w in sens.layers], rotation=90, fontsize=6)
    ax.set_title("per-layer sensitivity (one layer quantized at a time)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
