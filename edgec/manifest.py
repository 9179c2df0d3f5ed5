"""The manifest stage: what ``manifest.json`` records of a compile (the target's artifact, the source, the options,
sizes, per-layer quantization, verification and evaluation), written as strict JSON beside ``report.html``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, cast

import numpy as np

from . import __version__, report
from .hashing import sha256_file
from .ir import DType, Model, QuantizedTensor
from .ir.dtypes import storage_map
from .target import Artifact, Target


def assemble(tgt: Target, art: Artifact, out_dir: str, model: Model, b: Any, o: dict[str, Any]) -> dict[str, Any]:
    """The manifest of the artifact ``art`` that ``tgt`` emitted into ``out_dir`` from ``model`` (``b``: the
    :class:`edgec.build.Build` it came from; ``o``: the compile's options); verification and evaluation are added
    by their stages."""
    options_key = json.dumps(
        {
            "target": tgt.describe(),
            "pipeline": [p.describe() for p in b.passes],
            "input_shapes": {k: list(v) for k, v in b.shapes.items()},
            "cleanup": o["cleanup"],
        },
        sort_keys=True,
    )
    return {
        "edgec_version": __version__,
        "target": {"name": tgt.name, "spec": tgt.describe(), **art.manifest},
        "source": {
            "path": os.path.basename(b.src_path) if b.src_path else None,
            "sha256": b.src_hash,
            "format": model.metadata.get("source_format"),
        },
        "options_sha256": hashlib.sha256(options_key.encode()).hexdigest(),
        "pipeline": [p.describe() for p in b.passes],
        "build": {
            "seed": o["seed"],
            "input_shapes": {v.name: list(v.shape or []) for v in model.graph.inputs},
            "frontend": o["frontend"],
            "tolerance": o["tolerance"],
            "min_cosine": o["min_cosine"],
            "min_top1": o["min_top1"],
        },
        **io_summary(model),
        "sizes": {
            "weights_bytes_before": b.size_before,
            "weights_bytes_after": model.size_bytes(),
            "parameters": model.param_count(),
        },
        "layers": layer_table(model),
        "quantization": quantization_summary(model),
        "mixed_precision": mixed_summary(model),
        "qat": model.reports.get("qat"),  # quantization-aware fine-tuning: losses before/after, blocks, seconds
        "calibration": {"source": b.calibration.source, "samples": len(b.calibration)} if b.calibration else None,
        "files": [
            {
                "path": f,
                "bytes": os.path.getsize(os.path.join(out_dir, f)),
                "sha256": sha256_file(os.path.join(out_dir, f)),
            }
            for f in art.files
        ],
        "notes": b.notes,
        "report": report.FILE,
    }


def write(manifest: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Write ``manifest.json`` (strict JSON) and ``report.html`` into ``out_dir``; the manifest as the file holds it."""
    manifest = strict_json(manifest)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True, default=str, allow_nan=False)
        f.write("\n")
    manifest = json.loads(json.dumps(manifest, sort_keys=True, default=str))
    report.write(manifest, os.path.join(out_dir, report.FILE))
    return manifest


def layer_table(model: Model) -> list[dict[str, Any]]:
    """Per-weight quantization and size, for the manifest."""
    rows = []
    for v in model.graph.initializers.values():
        if v.const is None or int(np.prod(cast("tuple[int, ...]", v.shape or (1,)))) < 16:
            continue
        users = sorted({u.node.name for u in v.uses})
        row = {
            "name": v.name,
            "shape": list(cast("tuple[int | str | None, ...]", v.shape)),
            "used_by": users,
            "bytes": v.const.nbytes,
        }
        if isinstance(v.const, QuantizedTensor):
            row.update(v.const.describe())
        else:
            row.update({"dtype": cast(DType, v.dtype).short})
        rows.append(row)
    return rows


def quantization_summary(model: Model) -> dict[str, Any]:
    """Per-layer weight quantization reports and activation quantization, for the manifest."""
    from .plugins.cleanup.fold_qdq import REPORT_KEY as IMPORTED
    from .plugins.quantize.quantize import REPORT_KEY

    layers = model.reports.get(REPORT_KEY, {})
    acts = {v.name: dataclasses.asdict(v.quant) for v in model.graph.values() if v.quant is not None}
    out = {"weights": layers, "activations": acts}
    if IMPORTED in model.reports:  # a pre-quantized (Q/DQ) model: what fold-qdq carried over, and what it left
        out["imported"] = model.reports[IMPORTED]
    return out


def io_summary(model: Model) -> dict[str, list[dict[str, Any]]]:
    """The inputs and outputs: their (logical) dtype, and ``stored_as`` where the artifact takes / returns them in a
    storage type (a float8's bits as uint8, an int4 as int8: see the legalize-dtypes pass)."""
    stored = storage_map(model.metadata)

    def entry(v) -> dict[str, Any]:
        e = {"name": v.name, "dtype": v.dtype.short if v.dtype else None, "shape": list(v.shape or [])}
        if v.name in stored:
            e["dtype"], e["stored_as"] = stored[v.name].short, stored[v.name].storage.short
        return e

    return {
        k: [entry(v) for v in vals] for k, vals in (("inputs", model.graph.inputs), ("outputs", model.graph.outputs))
    }


def mixed_summary(model: Model) -> dict[str, Any] | None:
    """The mixed-precision pass's decision (allocation, bytes, average bits, what decided), if it ran."""
    from .plugins.mixed.mixed_precision import REPORT_KEY

    d = model.reports.get(REPORT_KEY)
    if not d:
        return None
    return {
        k: d[k]
        for k in (
            "avg_bits",
            "bytes",
            "histogram",
            "decided_by",
            "metric",
            "allocation",
            "evaluated",
            "cached_sensitivity",
        )
        if k in d
    }


def strict_json(x: Any) -> Any:
    """The manifest as strict JSON: non-finite floats (an exact layer's SQNR is infinite) become the strings
    "inf", "-inf" and "nan", which every JSON parser reads (Python's Infinity is not JSON)."""
    if isinstance(x, float) and not np.isfinite(x):
        return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict_json(v) for v in x]
    return x
