"""Byte-for-byte artifacts before and after a refactor: compile a fixed set of models for every built-in target
and record the SHA-256 of each artifact file (manifest.json and report.html, which carry timings, aside).

    python benchmarks/artifact_hashes.py OUT.json            # record
    python benchmarks/artifact_hashes.py OUT.json --against BEFORE.json   # record, then compare

To record the state of an older commit without touching the working tree, put a tree of links to that commit's
checkout first on PYTHONPATH (as .ci/layers builds one); edgec's editable install comes after PYTHONPATH.

The set: examples/models/tiny_cnn.onnx, ResNet-18 and the BERT-style encoder exported from examples/models,
each with the default pipeline and a quantizing one, for cpu, openvino, tensorrt, coreml and hexagon, plus the
tiny llama GGUF of the tests for gguf (F16 and Q4_0). Nothing is verified here: the question is only whether the
bytes changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# this folder holds openvino.py and coreml.py (benchmarks): it must not shadow the packages of those names
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(ROOT, "examples", "models"))
sys.path.append(ROOT)  # for tests.llm (after PYTHONPATH and site: ROOT/edgec is not the package)

GRAPH_TARGETS = ("cpu", "openvino", "tensorrt", "coreml", "hexagon")
PIPELINES = {
    "cpu": "quantize{bits=8}",
    "openvino": "quantize{bits=4,group=32}",
    "tensorrt": "quantize{bits=8}",
    "coreml": "quantize{method=codebook,bits=4,scale_dtype=f16}",
    "hexagon": "quantize{bits=8}",
}
SKIP = {"report.html", "manifest.json"}


def _export(name: str, work: str) -> str:
    import architectures
    import torch

    path = os.path.join(work, f"{name}.onnx")
    mod, ex, names = architectures.build(name, image_size=32, seq_len=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, ex, path, dynamo=False, opset_version=17, input_names=names, output_names=["out"])
    return path


def _tiny_gguf(work: str) -> str:
    from tests.llm.conftest import TINY, write_gguf
    from edgec.plugins.llm.bundled import smollm2_path
    from edgec.plugins.frontends.gguf_io import dump_kv, kv_metadata, open_gguf

    kv = dump_kv(kv_metadata(open_gguf(smollm2_path())))
    return write_gguf(TINY, kv, os.path.join(work, "tiny-llama.gguf"))


def _hashes(out: str) -> dict[str, str]:
    got = {}
    for d, _, files in os.walk(out):
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(d, f), out)
            if rel in SKIP:
                continue
            with open(os.path.join(d, f), "rb") as fh:
                got[rel] = hashlib.sha256(fh.read()).hexdigest()
    return dict(sorted(got.items()))


def record(targets: set[str] | None = None) -> dict[str, object]:
    import edgec

    work = tempfile.mkdtemp(prefix="edgec-hashes-")
    models = {
        "tiny_cnn": os.path.join(ROOT, "examples", "models", "tiny_cnn.onnx"),
        "resnet18": _export("resnet18", work),
        "bert": _export("bert", work),
    }
    cases = [(m, t, p) for m in models for t in GRAPH_TARGETS for p in ("", PIPELINES[t])]
    gguf = _tiny_gguf(work)
    cases += [("tiny-llama", "gguf", ""), ("tiny-llama", "gguf", "quantize{gguf=Q4_0}")]
    models["tiny-llama"] = gguf
    cases = [c for c in cases if targets is None or c[1] in targets]
    result: dict[str, object] = {}
    for i, (m, t, p) in enumerate(cases):
        key = f"{m} | {t} | {p or 'default'}"
        out = os.path.join(work, f"out{i}")
        print(f"[{i + 1}/{len(cases)}] {key}", file=sys.stderr, flush=True)
        try:
            edgec.compile(models[m], t, p, out, use_cache=False)
            result[key] = _hashes(out)
        except Exception as e:  # noqa: BLE001 - a refusal is a result too, and must stay the same
            result[key] = f"{type(e).__name__}: {' '.join(str(e).split())}"
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--against")
    ap.add_argument("--targets", help="comma-separated subset of targets; merged into OUT if it exists")
    a = ap.parse_args()
    got = record(set(a.targets.split(",")) if a.targets else None)
    if a.targets and os.path.exists(a.out):
        with open(a.out) as f:
            got = {**json.load(f), **got}
    with open(a.out, "w") as f:
        json.dump(got, f, indent=1, sort_keys=True)
    if not a.against:
        return 0
    with open(a.against) as f:
        before = json.load(f)
    same = [k for k in got if before.get(k) == got[k]]
    diff = [k for k in sorted(set(got) | set(before)) if before.get(k) != got.get(k)]
    files = sum(len(v) for k, v in got.items() if k in same and isinstance(v, dict))
    print(f"{len(same)} of {len(set(got) | set(before))} compiles identical ({files} artifact files byte for byte)")
    for k in diff:
        print(f"  DIFFERENT {k}:\n    before {before.get(k)}\n    after  {got.get(k)}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
