"""The verify stage: run an artifact on its runtime and judge it against the reference executor (the compiled
model) and the original model; and ``edgec verify OUT``, which re-checks an output directory later.

Metrics skip non-finite elements, so where the two disagree on NaN / inf is checked apart. Every bound is written
``not (value within bound)``, so a NaN metric fails it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import report
from .errors import BadInputError, UnsupportedError, UsageError
from .hashing import sha256_file
from .ir import Model, ReferenceExecutor
from .ir.dtypes import DType, from_storage, storage_map, to_storage
from .ir.executor import ExecutionError
from .native import native_section
from .target import Target, VerifyPolicy

DEFAULT_TOLERANCE = 1e-4
# A compile that changes the numbers on purpose (quantized weights or activations, pruning) is judged
# against the original model by fidelity: every output's cosine similarity >= LOSSY_MIN_COSINE (--min-cosine)
# (and Pearson correlation) and, for classifier-like outputs with at least MIN_TOP1_ROWS decisive rows,
# top-1 agreement >= LOSSY_MIN_TOP1 (--min-top1). A row is decisive when the original clearly prefers one
# class: under a softmax of its values, the top-1 probability exceeds the runner-up's by LOSSY_TOP1_GAP (a
# near tie is decided by rounding, not by the model; on SmolLM2's logits over random tokens, 1% of the range
# admitted near ties that Q4_K flipped 22% of the time, a 0.1 probability gap none). Fewer decisive rows are
# no evidence.
LOSSY_MIN_COSINE = 0.98
LOSSY_MIN_TOP1 = 0.8
LOSSY_TOP1_GAP = 0.1
MIN_TOP1_ROWS = 8
VERIFY_SEQ_LEN = 32  # tokens in the seeded verification input of language models


def _top1(got, ref, margin: float = 1e-3) -> tuple[float, int]:
    """Top-1 agreement over the rows whose reference top-1 leads its runner-up by more than ``margin`` x
    max|reference| (a near tie is decided by rounding, not by the model). Rows with a non-finite value are never
    decisive. Returns (agreement, rows counted)."""
    g = np.asarray(got, np.float64).reshape(-1, np.shape(got)[-1])
    r = np.asarray(ref, np.float64).reshape(-1, np.shape(ref)[-1])
    finite = np.isfinite(r).all(-1) & np.isfinite(g).all(-1)
    if not finite.any():
        return 1.0, 0
    top2 = np.sort(r, axis=-1)[:, -2:]
    scale = float(np.abs(r[finite]).max()) or 1e-30
    decisive = finite & ((top2[:, 1] - top2[:, 0]) > margin * scale)
    if not decisive.any():
        return 1.0, 0
    return float((g[decisive].argmax(-1) == r[decisive].argmax(-1)).mean()), int(decisive.sum())


def _top1_confident(got, ref, gap: float) -> tuple[float, int]:
    """Top-1 agreement over the rows where the reference's softmax puts at least ``gap`` more probability on
    its top-1 than on its runner-up. Returns (agreement, rows counted)."""
    g = np.asarray(got, np.float64).reshape(-1, np.shape(got)[-1])
    r = np.asarray(ref, np.float64).reshape(-1, np.shape(ref)[-1])
    finite = np.asarray(np.isfinite(r).all(-1) & np.isfinite(g).all(-1), bool)
    safe = np.where(finite[:, None], r, 0.0)
    p = np.exp(safe - safe.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top2 = np.sort(p, axis=-1)[:, -2:]
    decisive = finite & ((top2[:, 1] - top2[:, 0]) > gap)
    if not decisive.any():
        return 1.0, 0
    return float((g[decisive].argmax(-1) == r[decisive].argmax(-1)).mean()), int(decisive.sum())


def _nonfinite_problem(got: np.ndarray, ref: np.ndarray) -> str | None:
    """Where the two disagree on NaN / inf (every metric below skips such elements, so this must be checked
    apart: an artifact that turns outputs into NaN would otherwise compare well)."""
    a, b = np.asarray(got), np.asarray(ref)
    if a.shape != b.shape:
        return f"shape {list(a.shape)} differs from {list(b.shape)}"
    if a.dtype.kind not in "fc" and b.dtype.kind not in "fc":
        return None
    fa, fb = np.isfinite(a), np.isfinite(b)
    if (fa != fb).any() or not np.array_equal(a[~fa], b[~fb], equal_nan=True):
        return f"non-finite values differ ({int((~fa).sum())} NaN/inf here, {int((~fb).sum())} there)"
    return None


def _finite_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The elements finite in both, as float64 (None when the shapes differ)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        return None
    keep = np.isfinite(a) & np.isfinite(b)
    return (a, b) if keep.all() else (a[keep], b[keep])


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| over the finite elements: the error relative to the output's scale."""
    pair = _finite_pair(a, b)
    if pair is None:
        return float("inf")
    a, b = pair
    if not a.size:
        return 0.0
    scale = float(np.abs(b).max())
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max())


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity over the finite elements; 1 when both are zero, 0 when only one is (an all-zero
    output is not "aligned")."""
    pair = _finite_pair(a, b)
    return 0.0 if pair is None else _cos(*pair)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of the mean-removed values (Pearson correlation): an offset shared by every value (a large
    bias) cannot hide an error that a plain cosine would call small. The plain cosine when the reference is
    constant."""
    pair = _finite_pair(a, b)
    if pair is None:
        return 0.0
    a, b = pair
    if not b.size or np.ptp(b) == 0:
        return _cos(a, b)
    return _cos(a - a.mean(), b - b.mean())


def _sqnr_db(got: np.ndarray, ref: np.ndarray) -> float:
    """10 log10(|ref|^2 / |got - ref|^2) over the finite elements, in dB (inf when exact)."""
    pair = _finite_pair(got, ref)
    if pair is None:
        return float("-inf")
    g, r = pair
    noise, signal_ = float(((g - r) ** 2).sum()), float((r**2).sum())
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal_ / noise)) if signal_ > 0 else float("-inf")


def _judge_top1(
    row: dict[str, Any], prefix: str, got, ref, margin: float, minimum: float, why: list[str], confident: bool = False
) -> bool:
    """Top-1 agreement over the decisive rows (the reference's top-1 leading by ``margin`` of its range, or with
    ``confident`` by a softmax probability gap of ``margin``), as evidence only where there are MIN_TOP1_ROWS."""
    agree, rows = (_top1_confident if confident else _top1)(got, ref, margin)
    row[f"{prefix}_top1_agreement"], row[f"{prefix}_top1_decisive_rows"] = agree, rows
    if rows < MIN_TOP1_ROWS:
        row[f"{prefix}_top1_evidence"] = False  # too few rows to say anything: not counted either way
        return True
    row[f"{prefix}_top1_evidence"] = True
    if not agree >= minimum:
        why.append(
            f"top-1 agreement {agree:.3f} < {minimum} over {rows} decisive rows ({prefix.replace('vs_', 'vs ')})"
        )
        return False
    return True


def _comparable(arr: Any, dtype: DType | None) -> np.ndarray:
    """An output of a model type held in a storage type (or as onnxruntime returns it: a float8's bits in uint8)
    as values verification can compare: narrow floats and bfloat16 as float32, sub-byte integers in a byte."""
    a = np.asarray(arr)
    if dtype is None:
        return a
    if dtype.stored_as_bits:
        if a.dtype == dtype.storage.numpy:
            a = from_storage(a, dtype)
        return a.astype(np.float32)
    return a.astype(dtype.storage.numpy) if a.dtype != dtype.storage.numpy else a


def original_outputs(src_path: str | None, model: Model, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Outputs of the model before any pass: onnxruntime on the original ONNX file where there is one."""
    if src_path and src_path.lower().endswith(".onnx"):
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(src_path, providers=["CPUExecutionProvider"])
            names = [o.name for o in sess.get_outputs()]
            outs = sess.run(names, {k: feeds[k] for k in feeds})
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail / InvalidArgument / ...
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "NOT_IMPLEMENTED" not in first and "No corresponding Numpy type" not in first:
                raise BadInputError(
                    f"{src_path}: onnxruntime cannot run the original model on the verification "
                    f"inputs, so there is nothing to verify against: {first}"
                ) from None
            # an op or element type onnxruntime has no kernel for (float8 / int4 casts, new opsets): onnx's own
            # reference evaluator defines them
            from onnx.reference import ReferenceEvaluator

            try:
                outs = ReferenceEvaluator(src_path).run(None, dict(feeds))
            except Exception as e2:  # noqa: BLE001
                raise BadInputError(
                    f"{src_path}: neither onnxruntime ({first}) nor onnx's reference evaluator "
                    f"({type(e2).__name__}: {str(e2).splitlines()[0] if str(e2) else ''}) can run "
                    "the original model, so there is nothing to verify against"
                ) from None
            return {
                "runtime": "onnx reference evaluator (original file; onnxruntime lacks a kernel)",
                "outputs": list(outs),
            }
        return {"runtime": "onnxruntime (original file)", "outputs": outs}
    try:  # loading can fail too (onnxruntime rejects e.g. an attribute name no operator has)
        r = ReferenceExecutor(model).run(feeds)
    except ExecutionError as e:
        raise UnsupportedError(f"the reference executor cannot run the imported model: {e}") from None
    return {"runtime": "reference executor (imported model)", "outputs": [r[o.name] for o in model.graph.outputs]}


@dataclasses.dataclass(frozen=True)
class Criteria:
    """What one verification demands, from the target, the model and the user's bounds."""

    tolerance: float
    policy: VerifyPolicy | None  # the target's own criterion for every artifact (None: --tolerance)
    act_quant: VerifyPolicy | None  # the target's criterion for an activation-quantized model (None: not one)
    lossy: bool  # the compile changed the numbers on purpose: judged by fidelity to the original
    fidelity: float  # --min-cosine
    fidelity_top1: float  # --min-top1
    language_model: bool
    # the bound against the integer reference (None: ``tolerance``): the activation-quant bound where float ops of
    # implementation-dependent rounding (``integer_sensitive``) feed a quantization, which they can flip by a step
    integer_tolerance: float | None = None
    integer_sensitive: list[str] = dataclasses.field(default_factory=list)

    @property
    def vs_reference(self) -> VerifyPolicy | None:
        """The policy the artifact meets against the reference executor (None: --tolerance)."""
        return self.policy or self.act_quant

    @property
    def name(self) -> str:
        return "target" if self.policy else "activation-quant" if self.act_quant else "max-rel-err"


def criteria(
    tgt: Target, model: Model, tolerance: float, lossy: bool, min_cosine: float | None, min_top1: float | None
) -> Criteria:
    from .api.llm import LLM_KEY

    act_quant = any(v.quant is not None for v in model.graph.values())
    return Criteria(
        tolerance,
        tgt.verify_policy(),
        tgt.act_quant_policy() if act_quant else None,
        lossy,
        LOSSY_MIN_COSINE if min_cosine is None else float(min_cosine),
        LOSSY_MIN_TOP1 if min_top1 is None else float(min_top1),
        bool(model.metadata.get(LLM_KEY)),
    )


def verification_status(v: Mapping[str, Any] | None) -> str:
    """A manifest's ``verification`` in a word: ``pass``, ``fail``, ``not run`` (the runtime is not here) or
    ``not asked`` (no --verify)."""
    if v is None:
        return "not asked"
    if not v.get("ran", True):
        return "not run"
    return "pass" if v.get("passed") else "fail"


def verify_artifact(
    tgt: Target,
    out_dir: str,
    model: Model,
    feeds,
    original,
    tolerance: float,
    *,
    lossy: bool = False,
    min_cosine: float | None = None,
    min_top1: float | None = None,
) -> dict[str, Any]:
    """Run the artifact and judge it: exactness against the reference executor (the compiled model), and,
    where the original model's outputs are known, against the original: within ``tolerance`` for a compile
    that keeps the numbers, by fidelity (cosine >= ``min_cosine``, top-1 agreement >= LOSSY_MIN_TOP1 over at
    least MIN_TOP1_ROWS decisive rows) for one that changes them on purpose (quantization, pruning)."""
    # inputs / outputs the artifact holds in storage types (float8 bits, int4 values in int8) are fed as such, and
    # every output is compared as values of its model type
    stored = storage_map(model.metadata)
    feeds = {k: to_storage(a) if k in stored else a for k, a in feeds.items()}
    try:
        with native_section():
            got = tgt.run_artifact(out_dir, feeds, [v.name for v in model.graph.inputs])
    except NotImplementedError as e:
        return {"passed": True, "ran": False, "summary": f"not run: {e}"}
    crit = criteria(tgt, model, tolerance, lossy, min_cosine, min_top1)
    ref_outs, int_outs = _references(tgt, model, feeds, integer=crit.act_quant is not None)
    if int_outs is not None and crit.act_quant is not None:
        from .ir.integer import rounding_sensitive

        sensitive = rounding_sensitive(model, tgt.integer_limits())
        if sensitive:
            crit = dataclasses.replace(
                crit,
                integer_tolerance=max(tolerance, crit.act_quant.max_rel_err or tolerance),
                integer_sensitive=sensitive,
            )
    logical = [stored.get(o.name) for o in model.graph.outputs]
    if stored:
        got = [_comparable(a, d) for a, d in zip(got, logical)]
        ref_outs = [_comparable(a, d) for a, d in zip(ref_outs, logical)]
        if original is not None:
            original = {**original, "outputs": [_comparable(a, d) for a, d in zip(original["outputs"], logical)]}
    if int_outs is not None:
        int_outs = [_comparable(a, d) for a, d in zip(int_outs, logical)]
    rows = []
    for k, o in enumerate(model.graph.outputs):
        orig = np.asarray(original["outputs"][k]) if original is not None and k < len(original["outputs"]) else None
        rows.append(_judge_output(o.name, got[k], ref_outs[k], orig, None if int_outs is None else int_outs[k], crit))
    return _record(rows, crit, tgt, original, int_outs is not None)


def _references(tgt: Target, model: Model, feeds, integer: bool) -> tuple[list, list | None]:
    """The reference executor's outputs, and (where the target runs activation-quantized layers as integer
    kernels) those of the integer reference (:mod:`edgec.ir.integer`)."""
    try:
        ref = ReferenceExecutor(model).run(feeds)
    except ExecutionError as e:
        raise UnsupportedError(f"the reference executor cannot run the compiled model to verify it: {e}") from None
    int_outs = None
    if integer and tgt.integer_semantics():
        from .ir.integer import integer_reference

        iref = integer_reference(model, tgt.integer_limits()).run(feeds)
        int_outs = [iref[o.name] for o in model.graph.outputs]
    return [ref[o.name] for o in model.graph.outputs], int_outs


def _judge_output(
    name: str, got: np.ndarray, ref: np.ndarray, orig: np.ndarray | None, iref: np.ndarray | None, crit: Criteria
) -> dict[str, Any]:
    """One output's metrics and verdict (``failed_because`` lists every bound it misses)."""
    why: list[str] = []
    row: dict[str, Any] = {
        "output": name,
        "vs_reference_max_rel_err": _rel_err(got, ref),
        "vs_reference_cosine": _cosine(got, ref),
        "vs_reference_sqnr_db": _sqnr_db(got, ref),
    }
    classifier = got.ndim >= 2 and got.shape[-1] > 1
    bad = _nonfinite_problem(got, ref)
    if bad:
        why.append(f"{bad} vs the reference")
    _vs_reference(row, got, ref, classifier, crit, why)
    if orig is not None:
        _vs_original(row, got, orig, classifier, crit, why)
    if iref is not None:
        # The integer kernels are bit-exact with the integer semantics; float ops after them (softmax,
        # norms) may differ from onnxruntime's by float32 rounding, hence the tolerance.
        row["vs_integer_reference_max_rel_err"] = _rel_err(got, iref)
        row["bit_exact_vs_integer_reference"] = bool(np.array_equal(got, iref))
        itol = crit.tolerance if crit.integer_tolerance is None else crit.integer_tolerance
        if not row["vs_integer_reference_max_rel_err"] <= itol:
            why.append(f"rel err {row['vs_integer_reference_max_rel_err']:.3g} > {itol:g} vs the integer reference")
    if why:
        row["failed_because"] = why
    row["passed"] = not why
    return row


def _vs_reference(row: dict[str, Any], got, ref, classifier: bool, crit: Criteria, why: list[str]) -> None:
    """Against the reference executor: within --tolerance, or the target's policy where it has one."""
    p = crit.vs_reference
    if p is None:
        if not row["vs_reference_max_rel_err"] <= crit.tolerance:
            why.append(f"rel err {row['vs_reference_max_rel_err']:.3g} > tolerance {crit.tolerance:g} vs the reference")
        return
    if not row["vs_reference_cosine"] >= p.min_cosine:
        why.append(f"cosine {row['vs_reference_cosine']:.6f} < {p.min_cosine} vs the reference")
    if p.max_rel_err is not None:
        bound = max(crit.tolerance, p.max_rel_err)
        if not row["vs_reference_max_rel_err"] <= bound:
            why.append(f"rel err {row['vs_reference_max_rel_err']:.3g} > {bound:g} vs the reference")
    if classifier and p.min_top1 is not None:
        _judge_top1(row, "vs_reference", got, ref, p.top1_margin, p.min_top1, why)


def _vs_original(row: dict[str, Any], got, orig, classifier: bool, crit: Criteria, why: list[str]) -> None:
    """Against the original model: by fidelity for a lossy compile, else within --tolerance (where the reference
    comparison is itself exact)."""
    row["vs_original_max_rel_err"] = _rel_err(got, orig)
    row["vs_original_cosine"] = _cosine(got, orig)
    row["vs_original_pearson"] = _pearson(got, orig)
    row["vs_original_sqnr_db"] = _sqnr_db(got, orig)
    bad = _nonfinite_problem(got, orig)
    if bad:
        why.append(f"{bad} vs the original")
    if classifier:
        _judge_top1(
            row,
            "vs_original",
            got,
            orig,
            LOSSY_TOP1_GAP,
            crit.fidelity_top1 if crit.lossy else 1.0,
            why if crit.lossy else [],
            confident=True,
        )
    if crit.lossy:
        # Pearson (offset-free) is judged except on a language model's logits: there the tens of
        # thousands of improbable tokens dominate it (SmolLM2-135M over random tokens: 0.915 at Q4_K,
        # 0.42 at Q2_K, where the plain cosine gives 0.9954 and 0.8355)
        for metric in ("cosine",) if crit.language_model else ("cosine", "pearson"):
            v = row[f"vs_original_{metric}"]
            if not v >= crit.fidelity:
                why.append(
                    f"{metric} {v:.4f} < {crit.fidelity} vs the original model (the quantized/pruned model "
                    "is too far from it; --min-cosine sets the bar)"
                )
    elif crit.vs_reference is None and not row["vs_original_max_rel_err"] <= crit.tolerance:
        why.append(f"rel err {row['vs_original_max_rel_err']:.3g} > tolerance {crit.tolerance:g} vs the original")


def _record(rows: list[dict[str, Any]], crit: Criteria, tgt: Target, original, integer: bool) -> dict[str, Any]:
    passed = all(r["passed"] for r in rows)
    return {
        "passed": passed,
        "ran": True,
        "runtime": tgt.runtime,
        "tolerance": crit.tolerance,
        **(
            {"integer_tolerance": crit.tolerance if crit.integer_tolerance is None else crit.integer_tolerance}
            if integer
            else {}
        ),
        "outputs": rows,
        "criterion": crit.name,
        "fidelity": {
            "lossy": crit.lossy,
            "min_cosine": crit.fidelity,
            "min_top1": crit.fidelity_top1,
            "top1_gap": LOSSY_TOP1_GAP,
            "min_top1_rows": MIN_TOP1_ROWS,
        }
        if crit.lossy
        else None,
        "summary": _summary(rows, crit, original, integer, passed),
        "error_metric": "max|artifact - reference| / max|reference|",
    }


def _summary(rows: list[dict[str, Any]], crit: Criteria, original, integer: bool, passed: bool) -> str:
    worst = max(r["vs_reference_max_rel_err"] for r in rows)
    tol, aq = crit.tolerance, crit.act_quant
    s = f"max relative error {worst:.3g} vs the reference executor"
    if original:
        s += f", {max(r.get('vs_original_max_rel_err', 0) for r in rows):.3g} vs the original ({original['runtime']})"
    if aq is not None:
        s += (
            f"; simulated int8 activations: criterion cosine >= {aq.min_cosine} and rel err <= "
            f"{max(tol, aq.max_rel_err or 0.0):g} vs the reference ({aq.description})"
        )
    else:
        s += f"; tolerance {tol:g} vs the reference"
    if crit.policy:
        s += f"; target criterion: {crit.policy.description}"
    if crit.lossy and original is not None:
        s += (
            f"; quantized/pruned: fidelity vs the original cosine{'' if crit.language_model else ' and Pearson'} >= "
            f"{crit.fidelity} and top-1 agreement >= {crit.fidelity_top1} where at least {MIN_TOP1_ROWS} rows are "
            f"decisive (softmax top-1 leading by > {LOSSY_TOP1_GAP:g}; worst cosine "
            f"{min(r.get('vs_original_cosine', 1.0) for r in rows):.4f}, Pearson "
            f"{min(r.get('vs_original_pearson', 1.0) for r in rows):.4f}, SQNR "
            f"{min(r.get('vs_original_sqnr_db', float('inf')) for r in rows):.1f} dB)"
        )
    if integer:
        exact = sum(r["bit_exact_vs_integer_reference"] for r in rows)
        s += (
            f"; vs the integer reference (edgec.ir.integer): {exact}/{len(rows)} outputs bit-exact, max "
            f"relative error {max(r['vs_integer_reference_max_rel_err'] for r in rows):.3g}"
        )
        if crit.integer_tolerance is not None:
            names = ", ".join(crit.integer_sensitive[:3]) + (" ..." if len(crit.integer_sensitive) > 3 else "")
            s += (
                f" (bound {crit.integer_tolerance:g}, not --tolerance: {len(crit.integer_sensitive)} float op(s) of "
                f"implementation-dependent rounding feed a later quantization, where a last-bit difference moves a "
                f"value by one step: {names})"
            )
    if not passed:
        s += "; FAILED: " + "; ".join(
            f"{r['output']}: {', '.join(r['failed_because'])}" for r in rows if not r["passed"]
        )
    return s


def manifest_files(output: str, m: Any) -> list[dict[str, Any]]:
    """The manifest's file list, checked (a malformed manifest is bad input, not a crash)."""
    bad = BadInputError(f"{output}/manifest.json is malformed (not what edgec writes); recompile to replace it")
    if not isinstance(m, dict) or not isinstance(m.get("target"), dict) or not isinstance(m["target"].get("spec"), str):
        raise bad
    files = m.get("files")
    if not isinstance(files, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("path"), str)
        and isinstance(f.get("bytes"), int)
        and isinstance(f.get("sha256"), str)
        for f in files
    ):
        raise bad
    for key, kind in (("source", dict), ("build", dict), ("calibration", dict), ("pipeline", list), ("inputs", list)):
        if m.get(key) is not None and not isinstance(m[key], kind):
            raise bad
    if not all(isinstance(p, str) for p in m.get("pipeline") or []) or not all(
        isinstance(i, dict) and isinstance(i.get("name"), str) and isinstance(i.get("shape", []), list)
        for i in m.get("inputs") or []
    ):
        raise bad
    return files


def verify_output(
    output: str,
    model: str | None = None,
    *,
    calib: str | None = None,
    frontend: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Re-check an existing output directory (``edgec verify OUT``): every file's size and sha256 against the
    manifest (and no file the manifest does not list), then, given the model it was compiled from (``model``,
    or the manifest's source file found beside ``output`` or in the current directory, recognised by its
    sha256), the artifact run again on its runtime and judged as ``--verify`` judged it. Returns the record:
    ``status`` is "pass", "fail" or "files-only" (the files match, nothing was re-run), ``passed`` whether
    nothing failed."""
    manifest = read_manifest(output)
    files = manifest_files(output, manifest)
    problems = _integrity_problems(output, files)
    checked = len(files)
    rec: dict[str, Any] = {
        "output": os.path.abspath(output),
        "files_checked": checked,
        "integrity_problems": problems,
        "rerun": None,
        "passed": not problems,
        "status": "fail" if problems else "files-only",
    }
    if problems:
        rec["summary"] = f"{len(problems)} problems with the files: " + "; ".join(problems[:5])
        return rec
    model, name = source_model(output, manifest, model)
    if model is None:
        rec["summary"] = (
            f"all {checked} files match the manifest; NOT RE-RUN: the model it was compiled from "
            f"({name or 'unknown'}) was not found beside it or here; pass --model to re-run it"
        )
        return rec
    if manifest.get("calibration") and calib is None:
        raise UsageError(
            f"{output} was calibrated on {manifest['calibration'].get('source')}; pass the same data "
            "with --calib to re-run it"
        )
    v = _rerun(output, manifest, model, calib, frontend, progress or (lambda m: None))
    rec["rerun"] = v
    if not v.get("ran", True):
        rec["summary"] = f"all {checked} files match the manifest; NOT RE-RUN: {v['summary']}"
        return rec
    rec["passed"] = bool(v["passed"])
    rec["status"] = "pass" if v["passed"] else "fail"
    rec["summary"] = (
        f"all {checked} files match the manifest; re-run: " + ("PASS" if v["passed"] else "FAIL") + f": {v['summary']}"
    )
    return rec


def read_manifest(output: str) -> Any:
    from .output import is_edgec_output, read_json

    if not os.path.isdir(output):
        raise UsageError(f"{output!r} is not a directory; give an output directory of edgec compile")
    if not is_edgec_output(output):
        raise UsageError(
            f"{output!r} holds no manifest.json written by edgec; give an output directory of edgec compile"
        )
    try:
        manifest: Any = read_json(os.path.join(output, "manifest.json"))
    except (OSError, ValueError) as e:
        raise BadInputError(f"{output}/manifest.json cannot be read: {e}") from None
    if isinstance(manifest, dict) and "files" not in manifest and "tiers" in manifest:
        raise UsageError(f"{output} is a tiers folder; verify each of its tier-* directories")
    return manifest


def _integrity_problems(output: str, files: list[dict[str, Any]]) -> list[str]:
    """Every listed file present, of its size and sha256, inside ``output``; no file the manifest does not list."""
    root = os.path.realpath(output)
    problems = []
    listed = {"manifest.json", report.FILE}
    for f in files:
        p = os.path.realpath(os.path.join(output, f["path"]))
        listed.add(os.path.relpath(p, root))
        if os.path.commonpath([p, root]) != root:
            problems.append(f"{f['path']}: lies outside the output directory")
        elif not os.path.isfile(p):
            problems.append(f"{f['path']}: missing")
        elif os.path.getsize(p) != f["bytes"]:
            problems.append(f"{f['path']}: {os.path.getsize(p)} bytes, the manifest records {f['bytes']}")
        elif sha256_file(p) != f["sha256"]:
            problems.append(f"{f['path']}: sha256 differs from the manifest's")
    for r, _dirs, names in os.walk(output):
        for n in names:
            rel = os.path.relpath(os.path.join(r, n), output)
            if rel not in listed and not any(rel.startswith(x.rstrip("/") + os.sep) for x in listed):
                problems.append(f"{rel}: not listed in the manifest")
    return problems


def source_model(output: str, manifest: dict[str, Any], model: str | None) -> tuple[str | None, str]:
    """The model ``output`` was compiled from: ``model`` (checked against the manifest's sha256), else the source
    file found beside ``output`` or in the current directory by its sha256. Returns (path or None, its name)."""
    src = manifest.get("source") or {}
    name = os.path.basename(str(src.get("path") or ""))
    digest = src.get("sha256") if isinstance(src.get("sha256"), str) else None
    if model is None and name and digest:
        for c in (os.path.join(os.path.dirname(os.path.abspath(output)), name), os.path.join(os.getcwd(), name)):
            if sha256_file(c) == digest:
                return c, name
    if model is not None and digest and os.path.isfile(model) and sha256_file(model) != digest:
        raise BadInputError(
            f"{model} is not the model {output} was compiled from (its sha256 differs from the "
            f"manifest's {digest[:16]}...); pass the original model with --model"
        )
    return model, name


def _rerun(
    output: str,
    manifest: dict[str, Any],
    model: str,
    calib: str | None,
    frontend: str | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Rebuild the model as the manifest records it and judge the artifact in ``output`` as --verify did."""
    from .build import build_model, lossy, parse_target

    build = manifest.get("build") or {}
    n_target = len(parse_target(manifest["target"]["spec"]).pipeline())
    pipeline = manifest.get("pipeline") or []
    pipeline = pipeline[: len(pipeline) - n_target]
    shapes = {
        i["name"]: "x".join(map(str, i["shape"]))
        for i in manifest.get("inputs") or []
        if i.get("shape") and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in i["shape"])
    }
    try:
        seed = int(build.get("seed", 0))
        tolerance = float(build.get("tolerance", DEFAULT_TOLERANCE))
        min_cos = None if build.get("min_cosine") is None else float(build["min_cosine"])
        min_t1 = None if build.get("min_top1") is None else float(build["min_top1"])
    except (TypeError, ValueError):
        raise BadInputError(
            f"{output}/manifest.json is malformed (its build settings); recompile to replace it"
        ) from None
    b = build_model(
        model,
        manifest["target"]["spec"],
        ",".join(pipeline),
        input_shapes=shapes,
        verify=True,
        cleanup=False,
        seed=seed,
        frontend=frontend or build.get("frontend"),
        calib=calib,
        say=say,
    )
    say(f"running the artifact on {b.target.runtime or 'its runtime'}")
    return verify_artifact(
        b.target,
        output,
        b.model,
        b.feeds,
        b.original,
        tolerance,
        lossy=lossy(b.model, b.passes),
        min_cosine=min_cos,
        min_top1=min_t1,
    )
