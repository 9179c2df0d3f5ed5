"""``edgec bench OUT``: every target either measures its artifact on its own runtime (a record that follows
edgec.bench.SCHEMA) or says plainly why it cannot here. No timing is asserted: speed lives in benchmarks/."""

from __future__ import annotations

import json
import os
import shutil

import jsonschema
import pytest
from click.testing import CliRunner

from edgec.bench import SCHEMA
from edgec.cli import main

pytestmark = pytest.mark.slow  # every test compiles and measures in a child process: 2 s or more each


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def bench_json(*args) -> dict:
    r = cli("bench", *args, "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec.pop("ok") is True
    jsonschema.validate(rec, SCHEMA)
    return rec


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, tiny_cnn_path):
    """tiny_cnn compiled for a target (once per module and target); its source model copied beside the output,
    where --compare finds it by its sha256."""
    root = tmp_path_factory.mktemp("bench")
    shutil.copy(tiny_cnn_path, root / "tiny_cnn.onnx")
    done = {}

    def get(target: str, *extra) -> str:
        key = (target, *extra)
        if key not in done:
            out = root / f"out{len(done)}"
            r = cli("compile", root / "tiny_cnn.onnx", "--target", target, "-o", out, "-q", *extra)
            assert r.exit_code == 0, r.output
            done[key] = str(out)
        return done[key]

    return get


def test_cpu_artifact_is_timed_beside_onnxruntime(compiled):
    rec = bench_json(compiled("cpu"), "--runs", 3, "--warmup", 1, "--threads", 1, "--compare", "onnxruntime")
    assert rec["kind"] == "model" and rec["threads"] == 1 and rec["runs"] == 3 and rec["batch"] == 1
    lat = rec["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"]
    assert rec["compare"]["runtime"] == "onnxruntime" and rec["compare"]["latency_ms"]["median"] > 0
    assert rec["peak_rss_mb"] >= rec["rss_before_load_mb"] > 0  # the child process's own resident set
    # the text form says the same
    r = cli("bench", compiled("cpu"), "--runs", 2, "--warmup", 0)
    assert r.exit_code == 0 and "latency (ms, 2 runs after 0 warm-up): median" in r.output, r.output


def test_openvino_dynamic_batch_is_timed_at_the_shape_asked(compiled):
    out = compiled("openvino")
    assert bench_json(out, "--runs", 2, "--warmup", 0)["inputs"] == {"image": [1, 3, 32, 32]}  # dynamic dims: 1
    rec = bench_json(out, "--runs", 2, "--warmup", 0, "--input-shape", "image=4x3x32x32")
    assert rec["inputs"] == {"image": [4, 3, 32, 32]} and rec["batch"] == 4
    r = cli("bench", out, "--input-shape", "image=4x3x31x32")
    assert r.exit_code == 2 and "does not fit the artifact's input shape" in r.output, r.output
    r = cli("bench", out, "--input-shape", "pixels=1x3x32x32")
    assert r.exit_code == 2 and "names no input of this artifact: pixels" in r.output, r.output


@pytest.mark.parametrize(
    "target, says",
    [
        ("tensorrt", "timed on an NVIDIA GPU"),
        ("coreml", "Core ML runs only on macOS"),
        ("cpu{arch=aarch64}", "cannot run on this x86_64 machine"),
    ],
)
def test_a_runtime_that_is_not_here_is_named_not_faked(compiled, target, says):
    if target == "coreml" and os.uname().sysname == "Darwin":
        pytest.skip("Core ML's runtime is here")
    r = cli("bench", compiled(target), "--json")
    assert r.exit_code == 4, r.output
    err = json.loads(r.stdout)["error"]
    assert err["kind"] == "unsupported" and says in err["message"], err


def test_bad_requests_are_usage_errors(compiled, tmp_path):
    r = cli("bench", tmp_path)
    assert r.exit_code == 2 and "holds no manifest.json written by edgec" in r.output, r.output
    r = cli("bench", compiled("cpu"), "--runs", 0)
    assert r.exit_code == 2 and "must be positive" in r.output, r.output
    moved = tmp_path / "elsewhere"
    shutil.copytree(compiled("cpu"), moved)  # away from the model it was compiled from
    r = cli("bench", moved, "--compare", "onnxruntime")
    assert r.exit_code == 2 and "pass it with --model" in r.output, r.output


def test_a_broken_artifact_or_manifest_is_a_named_error(compiled, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(compiled("cpu"), broken)
    (broken / "model.so").write_bytes(b"\x7fELF truncated")  # the runtime's own exception, not a traceback
    r = cli("bench", broken, "--json")
    assert r.exit_code == 4, r.output
    assert json.loads(r.stdout)["error"]["message"].startswith(f"the runtime failed on {broken}: "), r.output
    odd = tmp_path / "odd"
    shutil.copytree(compiled("cpu"), odd)
    man = json.loads((odd / "manifest.json").read_text())
    man["inputs"][0]["dtype"] = "q7"
    (odd / "manifest.json").write_text(json.dumps(man))
    r = cli("bench", odd)
    assert r.exit_code == 3 and "the manifest's input 'image' has no element type edgec knows" in r.output, r.output


@pytest.mark.skipif(shutil.which("qemu-hexagon") is None, reason="qemu-hexagon is not installed")
def test_hexagon_counts_packets_not_time(compiled):
    out = compiled("hexagon")
    a, b = bench_json(out), bench_json(out)
    assert a["kind"] == "simulated" and a["simulator"] == "qemu-hexagon" and "latency_ms" not in a
    assert a["packets_per_inference"] == b["packets_per_inference"] > 100_000  # a simulator counts exactly
    assert 0 < a["harness_packets"] < 1000


def test_compile_bench_puts_the_figures_in_the_manifest_and_the_report(tiny_cnn_path, tmp_path):
    plain = cli("compile", tiny_cnn_path, "--target", "cpu", "-o", tmp_path / "a", "--json")
    assert plain.exit_code == 0 and "bench" not in json.loads(plain.stdout)["manifest"]
    r = cli("compile", tiny_cnn_path, "--target", "cpu", "--bench", "-o", tmp_path / "b", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert not res["cached"]  # --bench has its own cache entry: the plain compile's manifest has no figures
    rec = dict(res["manifest"]["bench"])
    assert rec.pop("ran") is True and "output" not in rec  # not the build's scratch directory
    jsonschema.validate({"output": "b", **rec}, SCHEMA)
    assert len(rec["latency_samples_ms"]) == rec["runs"] == 50
    page = (tmp_path / "b" / "report.html").read_text()
    speed = page[page.index("<h2>Speed</h2>") :]
    assert speed.startswith("<h2>Speed</h2><img") and "throughput_per_s" in speed
    # a runtime that is not here: the compile succeeds, and the manifest, the report and the account say why
    r = cli("compile", tiny_cnn_path, "--target", "tensorrt", "--bench", "-o", tmp_path / "t")
    assert r.exit_code == 0 and "bench: not run: a TensorRT artifact is timed on an NVIDIA GPU" in r.output, r.output
    man = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert man["bench"]["ran"] is False and "NVIDIA GPU" in man["bench"]["reason"]
    assert "not measured: a TensorRT artifact" in (tmp_path / "t" / "report.html").read_text()
