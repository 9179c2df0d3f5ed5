"""The coreml target's output directory is byte-identical across processes (README: "Reproducible").

coremltools serializes the spec with protobuf maps (metadata ``userDefined``, every MIL op's ``inputs`` and
``attributes``) in hash-table order, which differs between processes, stamps the conversion date, and names the
package's items with random UUIDs. Each case compiles the same model twice, in two processes with different
``PYTHONHASHSEED`` values, in different wall-clock seconds, and compares every file byte for byte."""

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("coremltools")

F16 = "scale_dtype=f16"
CASES = [
    ("fp16", [], True),  # --verify too: the manifest's verification results are part of the directory
    # int4 (constexpr_blockwise_shift_scale) and palette3 alone were checked identical too; CI keeps the fp16 and
    # the joint sparse+palette package, which between them hold every map the spec serializes
    (
        "sparse+palette2",
        ["-p", f"prune{{pattern=2:4}},quantize{{method=codebook,bits=2,per_channel_codebook=true,{F16}}}"],
        False,
    ),
]


def _tree(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def _compile(model, out, extra, verify, hashseed, cache):
    env = dict(os.environ, PYTHONHASHSEED=str(hashseed), EDGEC_CACHE_DIR=str(cache))
    cmd = [
        sys.executable,
        "-m",
        "edgec.cli",
        "compile",
        model,
        "--target",
        "coreml",
        "--no-cache",
        "-o",
        str(out),
        *extra,
        *(["--verify"] if verify else []),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name,extra,verify", CASES, ids=[c[0] for c in CASES])
def test_coreml_output_is_byte_identical_across_processes(name, extra, verify, tiny_cnn_path, tmp_path):
    _compile(tiny_cnn_path, tmp_path / "out1", extra, verify, 1, tmp_path / "cache")
    time.sleep(1.05 - time.time() % 1.0)  # the second compile starts in a later wall-clock second
    _compile(tiny_cnn_path, tmp_path / "out2", extra, verify, 2, tmp_path / "cache")
    a, b = _tree(tmp_path / "out1"), _tree(tmp_path / "out2")
    assert sorted(a) == sorted(b)
    assert {"manifest.json", "report.html", "model.mlpackage/Manifest.json"} <= set(a)
    assert any(p.endswith("model.mlmodel") for p in a) and any(p.endswith("weight.bin") for p in a)
    differ = sorted(p for p in a if a[p] != b[p])
    assert not differ, f"{name}: files differ between two compiles: {differ}"


@pytest.mark.slow
def test_no_per_run_metadata_in_the_spec(tiny_cnn_path, tmp_path):
    """Nothing that depends on the day is stored: the conversion date coremltools records is dropped, the
    metadata edgec and coremltools set deliberately stays."""
    import datetime

    from coremltools.proto import Model_pb2

    _compile(tiny_cnn_path, tmp_path / "out", [], False, 0, tmp_path / "cache")
    spec = Model_pb2.Model()
    with open(tmp_path / "out" / "model.mlpackage" / "Data" / "com.apple.CoreML" / "model.mlmodel", "rb") as f:
        data = f.read()
    spec.ParseFromString(data)
    meta = dict(spec.description.metadata.userDefined)
    assert "com.github.apple.coremltools.conversion_date" not in meta
    assert meta["edgec.deployment"] == "ios18" and "com.github.apple.coremltools.version" in meta
    assert str(datetime.date.today()).encode() not in data
    assert spec.SerializeToString(deterministic=True) == data  # written with sorted map keys
