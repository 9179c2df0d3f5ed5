"""quantize: weight quantization (rtn, mse, gptq, awq, nf4, codebook) with an explicit, exact grid.

Layers are processed one group at a time in graph order (layers reading the same input form a group). For
calibrated methods each group's input is captured from the model *as quantized so far*, so every layer
compensates for the error of the layers before it, and only one group's activations are in memory.

Every quantized weight gets a report (bits, method, weight SQNR, relative output error on the
calibration data) stored in the model's metadata and copied into the manifest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ...api import gguf as gg
from ...api.capture import Stream, fix_mmap_threshold, trim_heap
from ...api.layers import Layer, find_layers, layer_rows
from ...errors import EdgecError, UsageError
from ...ir import Model, QuantizedTensor
from ...ir.passes import Pass, PassContext, option
from ...ir.schemes import SCHEMES
from . import methods
from .grid import GridSpec, as_matrix, dequantize_codes, sqnr_db
from .scaling import apply_input_scale, foldable, linear_groups

REPORT_KEY = "edgec.quantization"
GROUPS = (0, 16, 32, 64, 128, 256)
CALIBRATED = ("gptq", "awq")
# methods whose per-layer work is worth a task on an executor (the others cost less than sending the weight)
SOLVED_ELSEWHERE = ("gptq", "mse", "codebook")


def keep_zeros(q: QuantizedTensor, zero: np.ndarray) -> tuple[QuantizedTensor, str]:
    """A pruned weight stays pruned: the positions in ``zero`` get the grid's exact zero (symmetric code 0,
    asymmetric code = zero point, the codebook entry nearest zero set to exactly 0). Returns the tensor and,
    when the grid has no exact zero (affine), a note that the sparsity was lost."""
    if not zero.any():
        return q, ""
    kept = q.scheme_type.exact_zero(q, zero)
    if kept is not None:
        return kept, ""
    return q, f"the {q.scheme} grid has no exact zero: the weight's sparsity is not kept"


def quad(d: np.ndarray, h: np.ndarray) -> float:
    """sum_i d_i H d_i^T: the output energy of a weight (difference) under input Hessian H (via BLAS)."""
    return float(np.sum((d.astype(np.float32) @ h).astype(np.float64) * d))


REPORT_SAMPLES = 4  # calibration windows behind the output-error report of a quantizer that reads no data


def output_error(layer: Layer, xs: list[np.ndarray] | None, w: np.ndarray, deq: np.ndarray) -> float | None:
    """||X (Q - W)^T|| / ||X W^T|| on the calibration inputs, streamed sample by sample (no Hessian)."""
    if not xs:
        return None
    w2, d2 = as_matrix(w), as_matrix(deq) - as_matrix(w)
    num = den = 0.0
    for x in xs:
        rows = layer_rows(layer, np.asarray(x, np.float32))
        if rows is None:
            return None
        num += float(np.sum((rows @ d2.T).astype(np.float64) ** 2))
        den += float(np.sum((rows @ w2.T).astype(np.float64) ** 2))
    return float(np.sqrt(num / den)) if den > 0 else None


def layer_groups(model: Model, layers: list[Layer]) -> list[list[Layer]]:
    """Layers reading the same input, in graph order of their first member."""
    out: dict[int, list[Layer]] = {}
    for l in layers:
        key = id(l.node.inputs[0]) if l.kind != "embedding" else id(l)
        out.setdefault(key, []).append(l)
    return list(out.values())


def hessian(layer: Layer, xs: list[np.ndarray] | None, perm: np.ndarray | None = None):
    """``X^T X / rows`` in float32 (columns in ``perm`` order if given), accumulated sample by sample
    into one K x K buffer."""
    from scipy.linalg import blas

    if not xs:
        return None
    h, count = None, 0
    for x in xs:
        rows = layer_rows(layer, np.asarray(x, np.float32))
        if rows is None:
            return None
        if perm is not None:
            rows = rows[:, perm]
        rows = np.asfortranarray(rows, dtype=np.float32)
        if h is None:
            h = np.zeros((rows.shape[1], rows.shape[1]), np.float32, order="F")
        # h += rows^T rows in place (no K x K temporary per sample).
        h = blas.sgemm(1.0, rows, rows, beta=1.0, c=h, trans_a=True, overwrite_c=True)
        count += rows.shape[0]
    assert h is not None  # xs is not empty, and each sample either returned or accumulated into h
    h /= max(count, 1)
    return h


def replace_weight(model: Model, layer: Layer, q: QuantizedTensor, w: np.ndarray, h, xs, note: str) -> dict:
    """Put ``q`` in place of ``layer``'s float weight ``w`` (keeping a pruned weight's zeros where the grid has
    one) and return the layer's report: bits, method, SQNR, output error (from ``h`` when given, else streamed
    over ``xs``) and bytes."""
    sparsity = layer.weight.sparsity
    if sparsity is not None:
        q, lost = keep_zeros(q, w == 0)
        if lost:
            note = (note + "; " if note else "") + lost
            sparsity = None
    errs = q.validate()
    if errs:
        raise RuntimeError(f"internal: quantized {layer.weight.name} breaks its grid: {errs}")
    deq = q.dequantize()
    g = model.graph
    new = g.add_const(g.unique_name(layer.weight.name + "_q"), q)
    if sparsity is not None:
        new.sparsity = dataclasses.replace(sparsity, ratio=round(float(np.mean(deq == 0)), 6))
    for u in list(layer.weight.uses):
        u.node.replace_input_with(u.index, new)
    if h is not None:
        d = as_matrix(deq) - as_matrix(w)
        num, den = quad(d, h), quad(as_matrix(w), h)
        rel = float(np.sqrt(max(num, 0.0) / den)) if den > 0 else None
    else:
        rel = output_error(layer, xs, w, deq) if layer.kind != "embedding" else None
    rep = {
        "node": layer.node.name,
        "op": layer.node.qualified_op,
        "role": layer.role,
        "bits": q.bits,
        "method": q.method,
        "scheme": q.scheme,
        "group_size": q.group_size,
        "shape": list(w.shape),
        "sqnr_db": round(sqnr_db(w, deq), 3),
        "rel_output_error": rel,
        "bytes_before": int(w.nbytes),
        "bytes_after": int(q.nbytes),
    }
    if not layer.weight.uses and layer.weight.name in g.initializers:
        # Release the float weights now, not at the end of the pass (after the last read of ``w``: a
        # memory-mapped weight's pages are dropped and would fault back in).
        g.remove_const(layer.weight.name)
    if q.layout:
        rep["layout"] = q.layout
    if note:
        rep["note"] = note
    return rep


@dataclasses.dataclass
class LayerWork:
    """A layer's quantization, split so that its costly part may run in another process: ``solve(args)`` is a
    module-level function of picklable ``args`` (no model, no graph) and ``finish(result)`` puts its result into the
    model and returns the layer's report. A layer function returns one of these for work worth a task (GPTQ, an MSE
    search, k-means), or its report directly for cheap work."""

    solve: Callable[[Any], Any]
    args: Any
    finish: Callable[[Any], dict]


def _writable(x: Any) -> Any:
    """``x`` with every read-only array in it copied (Ray hands a task its arrays read-only, from the object store;
    a solve factors its Hessian in place)."""
    if isinstance(x, np.ndarray):
        return x if x.flags.writeable else x.copy()
    if isinstance(x, tuple | list):
        return type(x)(_writable(v) for v in x)
    if isinstance(x, dict):
        return {k: _writable(v) for k, v in x.items()}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):  # a methods.Job: only its arrays change
        changed = {f.name: _writable(getattr(x, f.name)) for f in dataclasses.fields(x) if f.init}
        changed = {k: v for k, v in changed.items() if v is not getattr(x, k)}
        return dataclasses.replace(x, **changed) if changed else x
    return x


def _solve_task(item: tuple[Callable[[Any], Any], Any], shared: Any) -> Any:
    solve, args = item
    return solve(_writable(args))


def _solve_group(work: list[tuple[Layer, LayerWork]], executor: Any, desc: str) -> list[Any]:
    """The group's solves as tasks on ``executor`` (one per layer; results in the layers' order)."""
    results = executor.run(_solve_task, [(w.solve, w.args) for _, w in work])
    for (layer, _), r in zip(work, results, strict=True):
        if not r.ok:
            raise EdgecError(
                f"{desc}: quantizing {layer.weight.name} failed on the {executor.name} executor: {r.error}; "
                "run without --workers / --executor to see it alone"
            )
    return [r.value for r in results]


def quantize_layers(
    model: Model, layers: list[Layer], samples: list[dict], quantize_layer, desc: str, executor: Any = None
) -> None:
    """Quantize ``layers`` one input group at a time in graph order: each group's input is captured on
    ``samples`` from the model as quantized so far (none for embeddings or without samples), then
    ``quantize_layer(model, layer, xs)`` returns each layer's report or a :class:`LayerWork`, whose report
    comes from its ``finish``; reports are stored under :data:`REPORT_KEY` (``model.reports``) with the reports
    of earlier passes.

    The layers of one group read the same input and none reads another's output, so where ``executor`` has
    workers (``--workers`` / ``--executor``) their solves run there as tasks, at the same time; the groups stay
    in order (each group's input comes from the model with the earlier groups quantized, as GPTQ requires). A
    solve is the same function on the same arrays wherever it runs: the weights are byte-identical to a serial
    run. Without workers each layer is prepared, solved and finished before the next (one layer's temporaries in
    memory at a time)."""
    from tqdm import tqdm

    fix_mmap_threshold()
    reports = model.report(REPORT_KEY)
    stream = Stream(model, samples)
    fan_out = executor is not None and executor.fans_out
    for group in tqdm(layer_groups(model, layers), desc=desc, unit="layer group", leave=False, disable=None):
        xs = stream.capture(group[0].node.inputs[0]) if samples and group[0].kind != "embedding" else None
        done: list[tuple[Layer, dict | LayerWork]] = []
        for layer in group:
            r = quantize_layer(model, layer, xs)
            if not fan_out:
                if isinstance(r, LayerWork):
                    r = r.finish(r.solve(r.args))
                trim_heap()  # the layer's temporaries: freed, and handed back before the next one
            done.append((layer, r))
        work = [(layer, r) for layer, r in done if isinstance(r, LayerWork)]
        if len(work) > 1:
            values = iter(_solve_group(work, executor, desc))
        else:  # one solve: here, without sending its arrays anywhere
            values = iter([w.solve(w.args) for _, w in work])
        for layer, r in done:  # reports in the layers' order, however they were solved
            reports[layer.weight.name] = r.finish(next(values)) if isinstance(r, LayerWork) else r
        trim_heap()
    model.graph.remove_unused_consts()


def _gguf_gptq(args: tuple) -> QuantizedTensor:
    """GPTQ onto a GGUF block type's grid (a task: picklable arguments, no model)."""
    w, tname, h, perm, damp, act_order, block = args
    grid = gg.fit(w, gg.TYPES[tname])
    codes = methods.gptq(w, None, h, damp=damp, act_order=act_order, block=block, perm=perm, grid=grid)
    return grid.tensor(codes, "gptq")


def _gguf_matrix(args: tuple) -> QuantizedTensor:
    """A GGUF block type's rtn or clipping-searched (mse) grid; ``method`` is recorded on the tensor."""
    w, tname, how, method = args
    return dataclasses.replace(gg.quantize_matrix(w, gg.TYPES[tname], how), method=method)


@dataclasses.dataclass(frozen=True)
class Quantize(Pass):
    """Weight quantization. See ``edgec passes`` for the options."""

    name: ClassVar[str] = "quantize"
    lossy: ClassVar[bool] = True  # changes the numbers on purpose: --verify judges fidelity
    summary: ClassVar[str] = "weight quantization: rtn, mse, gptq, awq, nf4, codebook"
    bits: int = option(8, choices=range(1, 9), help="weight bits (1: method=codebook only)")
    method: str = option("rtn", choices=tuple(methods.METHODS), help="algorithm")
    scheme: str = option("symmetric", choices=("symmetric", "asymmetric"), help="integer grid")
    granularity: str = option("channel", choices=("tensor", "channel", "group"), help="scale sharing")
    group: int = option(0, choices=GROUPS, help="group size along the input axis (implies granularity=group)")
    ops: str = option("Linear:Conv", help="op types to quantize, ':'-separated (Linear, Conv)")
    include: str = option(".*", help="regex on weight or node names to quantize")
    exclude: str = option("", help="regex on weight or node names to leave alone")
    embedding_bits: int = option(8, choices=(0, *range(2, 9)), help="embedding tables (0: keep float)")
    head_bits: int = option(8, choices=(0, *range(2, 9)), help="output head Linear (0: keep float)")
    objective: str = option(
        "weight",
        choices=("weight", "output"),
        help="mse: error on weights or on outputs; "
        "codebook: output fits palettes weighted by input energy and assigns codes GPTQ-style",
    )
    damp: float = option(0.01, check=lambda v: 0 < v < 1, allowed="0 < damp < 1", help="gptq Hessian dampening")
    act_order: bool = option(True, help="gptq: quantize columns by decreasing activation energy")
    block: int = option(128, check=lambda v: v > 0, allowed="a positive integer", help="gptq lazy-update block")
    per_channel_codebook: bool = option(
        False, help="codebook: one palette per output channel (with group=: one per group of each channel)"
    )
    conv_group: bool = option(
        False,
        help="group= also applies to Conv weights: one scale per `group` input "
        "channels x the whole kernel (scales [O, I/group, 1, 1], coremltools' per_block)",
    )
    samples: int = option(32, check=lambda v: v > 0, allowed="a positive integer", help="calibration samples used")
    gguf: str = option(
        "",
        choices=("", *gg.TYPES),
        help="quantize on this GGUF block format's exact grid "
        "(bits/scheme/group are the format's); embedding/head bits pick Q8_0/Q6_K/Q5_K/Q4_K/...",
    )
    scale_dtype: str = option(
        "f32",
        choices=("f32", "f16"),
        help="f16: scales rounded to float16 before the "
        "codes are chosen (exact grid, half the scale storage in openvino/tensorrt)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits == 1 and self.method != "codebook":
            raise UsageError("quantize: bits=1 is a 2-entry palette: use method=codebook, or bits >= 2")
        if self.group and self.granularity == "tensor":
            raise UsageError("quantize: group= conflicts with granularity=tensor; drop one of them")
        if self.method == "nf4" and self.bits != 4 and self.bits != 8:
            raise UsageError("quantize: method=nf4 is 4-bit by definition; drop bits= or set bits=4")
        if self.gguf and self.scale_dtype != "f32":
            raise UsageError("quantize: scale_dtype= does not apply with gguf= (each GGUF format fixes its scales)")
        if self.gguf and self.method in ("nf4", "codebook"):
            raise UsageError(
                f"quantize: method={self.method} has no GGUF encoding; with gguf= use rtn, mse, gptq "
                "or awq (IQ4_NL is GGUF's non-uniform 4-bit grid)"
            )
        for role in ("embedding_bits", "head_bits"):
            if self.gguf and getattr(self, role) not in (0, *gg.TYPE_FOR_BITS):
                raise UsageError(
                    f"quantize: with gguf= {role} must be one of 0, "
                    f"{', '.join(map(str, gg.TYPE_FOR_BITS))} (the GGUF types "
                    f"{', '.join(gg.TYPE_FOR_BITS.values())})"
                )
        bad = set(self.ops.split(":")) - {"Linear", "Conv"}
        if bad:
            raise UsageError(f"quantize: ops={self.ops!r} names {sorted(bad)}; allowed: Linear, Conv")

    # ---- helpers --------------------------------------------------------------------------------------------
    def spec_for(self, layer: Layer) -> GridSpec:
        bits = {"embedding": self.embedding_bits, "head": self.head_bits}.get(layer.role, self.bits)
        if layer.role == "embedding":
            return GridSpec(bits, True, "channel", scale_dtype=self.scale_dtype)  # one scale per token row
        gran = "group" if self.group else self.granularity
        shape = layer.weight.static_shape
        assert shape is not None  # a constant weight: its shape is its tensor's
        k = int(np.prod(shape[1:]))
        if (
            gran == "group"
            and self.conv_group
            and layer.kind == "conv"
            and len(shape) > 2
            and shape[1] % self.group == 0
        ):
            # Whole kernels of `group` input channels are consecutive in the flattened [O, I*kh*kw] matrix.
            kernel = int(np.prod(shape[2:]))
            return GridSpec(bits, SCHEMES[self.scheme].signed, "group", self.group * kernel, self.scale_dtype)
        if gran == "group" and (layer.weight.rank != 2 or k % (self.group or 128)):
            gran = "channel"  # conv weights and indivisible K fall back to per channel (reported)
        return GridSpec(bits, SCHEMES[self.scheme].signed, gran, self.group or 128, self.scale_dtype)

    def method_for(self, layer: Layer) -> str:
        """The role changes the default bits, not the algorithm; embedding tables (no Hessian) use rtn."""
        if layer.role == "embedding":
            return "rtn"
        if layer.role == "head" and self.method in ("nf4", "codebook") and self.head_bits != self.bits:
            return "mse"  # the head keeps its own (uniform) bit width
        return self.method

    def select(self, model: Model) -> list[Layer]:
        """The layers this pass quantizes (roles whose bits are 0 stay float)."""
        op_names = tuple({"Linear": "edgec::Linear", "Conv": "Conv"}[o] for o in self.ops.split(":"))
        layers = find_layers(model, op_names, self.include, self.exclude)
        return [
            l
            for l in layers
            if not (l.role == "embedding" and not self.embedding_bits) and not (l.role == "head" and not self.head_bits)
        ]

    def needs_calibration(self) -> bool:
        """rtn and weight-objective mse / codebook read no data (with it they add each layer's output error to
        the report)."""
        return self.method in CALIBRATED or (self.method in ("mse", "codebook") and self.objective == "output")

    def run(self, model: Model, ctx: PassContext) -> bool:
        layers = self.select(model)
        if not layers:
            return False
        calib = ctx.calibration
        if self.needs_calibration() and calib is None:
            raise UsageError(
                f"quantize{{method={self.method}}} needs calibration data: pass --calib "
                "(a .npz, a folder of samples, or 'random' for a smoke test)"
            )
        samples = calib.samples[: self.samples] if calib is not None else []
        if not self.needs_calibration():
            # the data only feeds the report's per-layer output error: a few windows measure it (all 32 of
            # SmolLM2's 512-token windows took minutes, longer than the quantization)
            samples = samples[:REPORT_SAMPLES]
        fix_mmap_threshold()
        if self.method == "awq":
            self._awq_scales(model, [l for l in layers if l.kind == "linear"], samples)
            layers = self.select(model)  # scaling gave the Linears new weight constants
        quantize_layers(model, layers, samples, self._quantize_layer, "quantize", ctx.executor)
        return True

    @staticmethod
    def _diag(layer: Layer, xs: list[np.ndarray]) -> np.ndarray | None:
        d = None
        for x in xs:
            rows = layer_rows(layer, np.asarray(x, np.float32))
            if rows is None:
                return None
            sq = np.einsum("ij,ij->j", rows, rows)
            d = sq if d is None else d + sq
        return d

    def gguf_type_for(self, layer: Layer) -> tuple[str | None, str]:
        """The GGUF type this layer gets (None: stays float) and why, when it is not the requested one."""
        bits = {"embedding": self.embedding_bits, "head": self.head_bits}.get(layer.role)
        want = gg.TYPE_FOR_BITS[bits] if bits is not None else self.gguf
        if layer.weight.rank != 2:
            return None, f"{want} needs a 2-D weight; kept float"
        shape = layer.weight.static_shape
        assert shape is not None  # a constant weight: its shape is its tensor's
        return gg.resolve(want, shape[1])

    def _quantize_gguf(self, model: Model, layer: Layer, xs: list[np.ndarray] | None) -> dict | LayerWork:
        tname, note = self.gguf_type_for(layer)
        w = np.asarray(layer.weight.numpy(), np.float32)
        if tname is None:
            return {
                "node": layer.node.name,
                "role": layer.role,
                "shape": list(w.shape),
                "note": note,
                "bits": 32,
                "method": "none",
            }
        method = self.method_for(layer)

        def finish(q: QuantizedTensor) -> dict:
            return replace_weight(model, layer, q, w, None, xs, note)

        if method == "gptq" and xs:
            diag = self._diag(layer, xs)
            assert diag is not None  # gptq on a 2-D weight: a Linear (embeddings use rtn), whose inputs give rows
            perm = methods.hessian_order(diag, self.act_order)
            h = hessian(layer, xs, perm)
            return LayerWork(_gguf_gptq, (w, tname, h, perm, self.damp, self.act_order, self.block), finish)
        if method == "gptq":
            note = note or "no calibration inputs for this layer; used mse"
        # AWQ's scales are already folded into the weights; like mse it then searches the clipping.
        args = (w, tname, "rtn" if method == "rtn" else "mse", method)
        if method == "rtn":
            return finish(_gguf_matrix(args))
        return LayerWork(_gguf_matrix, args, finish)

    def _quantize_layer(self, model: Model, layer: Layer, xs: list[np.ndarray] | None) -> dict | LayerWork:
        if self.gguf:
            return self._quantize_gguf(model, layer, xs)
        w = np.asarray(layer.weight.numpy(), np.float32)
        w2 = as_matrix(w)
        spec = self.spec_for(layer)
        method = self.method_for(layer)
        m = methods.METHODS[method]
        perm = None
        if m.ordered and xs and layer.kind != "embedding":
            # Column order from the Hessian's diagonal (cheap), then H built directly in that order, so
            # GPTQ can factor the one buffer in place.
            diag = self._diag(layer, xs)
            perm = methods.hessian_order(diag, self.act_order) if diag is not None else None
        h = hessian(layer, xs, perm) if m.needs_hessian(self.objective) and layer.kind != "embedding" else None
        job = methods.Job(w, w2, spec, h, perm, self, method, layer.role)

        def finish(out: methods.Outcome) -> dict:
            return replace_weight(model, layer, out.q, w, out.h, xs, out.note)

        if method in SOLVED_ELSEWHERE:
            return LayerWork(methods.solve, job, finish)
        return finish(methods.solve(job))

    def _awq_scales(self, model: Model, layers: list[Layer], samples: list[dict]) -> None:
        """AWQ (Lin et al. 2023): per input channel s = mean|X|^alpha, alpha searched on the output error of
        the quantized group, applied before any weight is quantized."""
        by_node = {id(l.node): l for l in layers}
        stream = Stream(model, samples)
        for x, group in linear_groups(model, [l.node for l in layers]):
            gtype = self.gguf_type_for(by_node[id(group[0])])[0] if self.gguf else None
            if self.gguf and (gtype is None or not foldable(model, x, group)):
                # Stays float (nothing to protect), or the scale would need an extra Mul node, which a
                # GGUF file cannot hold: this group is quantized without AWQ scaling.
                continue
            xs = stream.capture(x)
            # mean |x| per channel and H = X^T X / n, streamed sample by sample (no concatenated copy).
            n_rows = sum(int(np.prod(xi.shape[:-1])) for xi in xs)
            act = sum(np.abs(xi.reshape(-1, xi.shape[-1])).sum(0, dtype=np.float64) for xi in xs) / n_rows
            act = np.where(act > 0, act, act[act > 0].min() if (act > 0).any() else 1.0)
            h = hessian(by_node[id(group[0])], xs).astype(np.float64)
            ws = [np.asarray(n.arg(1).numpy(), np.float32) for n in group]
            spec = self.spec_for(by_node[id(group[0])])
            best = (None, np.inf)
            for alpha in np.linspace(0.0, 1.0, 21):
                s = act**alpha
                s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
                err = 0.0
                for w in ws:
                    if gtype is not None:
                        deq = gg.fake_quant(w * s[None, :], gg.TYPES[gtype]) / s[None, :]
                    else:
                        codes, scale, zp = methods.rtn(w * s[None, :], spec)
                        deq = dequantize_codes(codes, scale, zp).reshape(w.shape) / s[None, :]
                    err += quad((deq - w).astype(np.float64), h)
                if err < best[1] - 1e-12 * abs(err):
                    best = (s, err)
            s = best[0]
            if s is not None and not np.allclose(s, 1.0):
                apply_input_scale(model, x, group, s, explicit=not self.gguf)
                stream.refresh()  # the op producing x changed
