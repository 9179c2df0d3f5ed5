"""Build-system integration: byte-identical artifacts for identical inputs on every target, the
content-addressed compile cache, report.html rendered by headless Chromium, and the CMake example."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from edgec.cli import main
from edgec.compiler import compile as compile_model

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TINY_CNN = os.path.join(EXAMPLES, "models", "tiny_cnn.onnx")
# One quantized configuration per target (Core ML stores fp16 scales, TensorRT int8 per channel).
TARGETS = [
    ("cpu", "quantize{bits=4}"),
    ("openvino", "quantize{bits=4}"),
    ("tensorrt", "quantize{bits=8}"),
    ("coreml", "quantize{bits=8,scale_dtype=f16}"),
    ("hexagon", "quantize{bits=8}"),
]


def tree_digest(d: str) -> dict[str, str]:
    """relative path -> sha256 of every file under ``d``."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("target, pipe", TARGETS)
def test_identical_inputs_give_byte_identical_artifacts(target, pipe, tmp_path):
    """Two compiles (same process, so process-wide counters and caches are warm the second time) write the
    same bytes: artifact, manifest.json and report.html."""
    a = compile_model(TINY_CNN, target, pipe, str(tmp_path / "a"), use_cache=False, verify=True)
    b = compile_model(TINY_CNN, target, pipe, str(tmp_path / "b"), use_cache=False, verify=True)
    da, db = tree_digest(a.output_dir), tree_digest(b.output_dir)
    assert {"manifest.json", "report.html"} <= set(da)
    assert len(da) >= 3 and da == db, {k: (da.get(k), db.get(k)) for k in set(da) | set(db) if da.get(k) != db.get(k)}


@pytest.mark.slow
def test_cache_skips_unchanged_work_and_notices_every_change(tmp_path):
    cache = str(tmp_path / "cache")
    model = tmp_path / "m.onnx"
    shutil.copy(TINY_CNN, model)
    args = ["compile", str(model), "-t", "cpu", "-p", "quantize{bits=4}", "--cache-dir", cache, "--json"]
    first = CliRunner().invoke(main, args + ["-o", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    r1 = json.loads(first.stdout)
    assert r1["cached"] is False and r1["timings_s"]["emit"] > 0
    second = CliRunner().invoke(main, args + ["-o", str(tmp_path / "b")])
    r2 = json.loads(second.stdout)
    assert r2["cached"] is True and r2["cache_key"] == r1["cache_key"]
    assert tree_digest(str(tmp_path / "a")) == tree_digest(str(tmp_path / "b"))
    plain = CliRunner().invoke(main, args[:-1] + ["-o", str(tmp_path / "c")])
    assert plain.exit_code == 0 and "cached: inputs and options unchanged" in plain.output
    # any change is a different key: an option, the target's options, the model bytes
    for old, new in (("quantize{bits=4}", "quantize{bits=8}"), ("cpu", "cpu{arch=aarch64}")):
        r = CliRunner().invoke(main, [new if x == old else x for x in args] + ["-o", str(tmp_path / new)])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["cached"] is False, new
    st = model.stat()
    model.write_bytes(model.read_bytes().replace(b"logits", b"LOGITS"))  # same size, other bytes...
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the old date: the change time still tells
    r = CliRunner().invoke(main, args + ["-o", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["cached"] is False
    r = CliRunner().invoke(main, args + ["--no-cache", "-o", str(tmp_path / "e")])
    assert json.loads(r.stdout)["cached"] is False
    info = json.loads(CliRunner().invoke(main, ["cache", "--cache-dir", cache, "--json"]).stdout)
    assert info["entries"] == 4 and info["bytes"] > 0  # bits=4, bits=8, aarch64, the edited model
    assert os.path.isfile(os.path.join(cache, "stat-index.json"))  # file digests reused while files are unchanged
    info = json.loads(CliRunner().invoke(main, ["cache", "--cache-dir", cache, "--clear", "--json"]).stdout)
    assert info["cleared"] and info["entries"] == 4
    assert sorted(os.listdir(cache)) == ["CACHEDIR.TAG"]  # entries and the stat index gone; the tagged root stays


@pytest.mark.slow
def test_failed_verification_is_not_cached(tmp_path):
    cache = str(tmp_path / "cache")
    args = [
        "compile",
        TINY_CNN,
        "-t",
        "cpu",
        "-p",
        "quantize{bits=4}",
        "--verify",
        "--tolerance",
        "1e-12",
        "--cache-dir",
        cache,
        "-o",
        str(tmp_path / "a"),
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "verification failed" in r.output  # TVM differs from onnxruntime by ~1e-7
    assert not os.path.exists(cache) or not any(len(d) == 2 for d in os.listdir(cache))
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "cached" not in r.output


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert exe, "headless Chromium is needed to render report.html: apt-get install chromium (scripts/setup.sh does)"
    return exe


def test_report_renders_in_headless_chromium_with_every_plot(tmp_path):
    res = compile_model(
        TINY_CNN, "openvino", "quantize{bits=4}", str(tmp_path / "out"), verify=True, calib="random", use_cache=False
    )
    page = tmp_path / "out" / "report.html"
    text = page.read_text()
    # self-contained: no external scripts, styles or images
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    assert "Verification" in text and ">passed<" in text and "quantize{bits=4}" in text and "OpenVINO CPU" in text
    dom = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    want = int(re.search(r'data-plots="(\d+)"', body).group(1))
    loaded = int(re.search(r'data-plots-loaded="(\d+)"', body).group(1))
    # sizes by layer, sizes by encoding, bits histogram, quantization error: all decoded by the browser
    assert want == 4 and loaded == want, body
    assert res.manifest["report"] == "report.html"


@pytest.mark.slow
def test_cmake_example_builds_the_artifact_through_add_custom_command(tmp_path):
    cmake = shutil.which("cmake")
    assert cmake, "cmake is needed for the build-system example: apt-get install cmake"
    src = os.path.join(EXAMPLES, "cmake")
    build = tmp_path / "build"
    model = tmp_path / "tiny_cnn.onnx"
    shutil.copy(TINY_CNN, model)
    env = {**os.environ, "EDGEC_CACHE_DIR": str(tmp_path / "cache")}
    subprocess.run(
        [cmake, "-S", src, "-B", str(build), f"-DEDGEC_MODEL={model}"],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    r = subprocess.run([cmake, "--build", str(build)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = build / "tiny_cnn.cpu"
    man = json.loads((out / "manifest.json").read_text())
    assert man["verification"]["passed"] and (out / "model.so").is_file()
    stamp = (out / "manifest.json").stat().st_mtime_ns
    r = subprocess.run([cmake, "--build", str(build)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and (out / "manifest.json").stat().st_mtime_ns == stamp  # up to date: not rerun
    later = stamp / 1e9 + 10
    os.utime(model, (later, later))  # the model changed (by date): the rule reruns, served by edgec's cache
    r = subprocess.run([cmake, "--build", str(build)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and (out / "manifest.json").stat().st_mtime_ns != stamp, r.stdout


def test_manifest_is_strict_json_when_a_layer_quantizes_exactly(tmp_path):
    """Weights already on the 8-bit grid quantize exactly (infinite SQNR): the manifest spells it "inf" (strict
    JSON, no Infinity token) and the report still renders."""
    import numpy as np

    from edgec import ir

    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (2, 8))
    w = rng.integers(-1, 2, (4, 8)).astype(np.float32)
    w[0, 0] = 1.0
    g.outputs.append(g.op("Linear", [x, g.add_const("w", w)], domain="edgec", name="fc").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    res = compile_model(m, "cpu", "quantize{bits=8}", str(tmp_path / "out"))
    text = (tmp_path / "out" / "manifest.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in manifest.json"))
    assert res.manifest["quantization"]["weights"]["w"]["sqnr_db"] == "inf"
    assert "data:image/png" in (tmp_path / "out" / "report.html").read_text()
