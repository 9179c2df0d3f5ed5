"""The CLI: main commands, --json, documented exit codes, atomic output, and the Python API."""

import json
import os
import subprocess
import sys

import onnx
import pytest

from edgec import ir


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgec.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and "edgec, version 0.1.0" in r.stdout
    r = run("--help")
    assert "compile" in r.stdout and "70" in r.stdout  # exit codes documented in --help


def test_compile_verify_tiny_cnn(tiny_cnn_path, tmp_path):
    out = tmp_path / "tiny.cpu"
    r = run("compile", tiny_cnn_path, "--target", "cpu", "-o", str(out), "--verify", "--time-passes")
    assert r.returncode == 0, r.stderr
    assert "verify: PASS" in r.stdout and "total" in r.stdout
    assert "dynamic dims" in r.stderr  # the batch dim was fixed to 1, and we said so
    m = json.loads((out / "manifest.json").read_text())
    assert m["inputs"] == [{"name": "image", "dtype": "f32", "shape": [1, 3, 32, 32]}]
    assert m["verification"]["outputs"][0]["vs_original_max_rel_err"] <= 1e-4
    assert m["source"]["sha256"] and m["options_sha256"] and m["files"][0]["path"] == "model.so"
    assert any(row["name"] for row in m["layers"])


@pytest.mark.slow
def test_json_output_and_inspect(tiny_cnn_path, tmp_path):
    r = run("compile", tiny_cnn_path, "-o", str(tmp_path / "o"), "--json", "--input-shape", "image=2x3x32x32")
    data = json.loads(r.stdout)
    assert data["ok"] and data["manifest"]["inputs"][0]["shape"] == [2, 3, 32, 32]
    info = json.loads(run("inspect", tiny_cnn_path, "--json").stdout)
    assert info["ops"]["Conv"] == 3 and info["parameters"] > 0
    assert "edgec-ir 1" in run("inspect", tiny_cnn_path, "--ir").stdout
    names = [p["name"] for p in json.loads(run("passes", "--json").stdout)]
    assert "fuse-attention" in names


@pytest.mark.slow
def test_dump_ir(tiny_cnn_path, tmp_path):
    r = run("compile", tiny_cnn_path, "-o", str(tmp_path / "o"), "--dump-ir", str(tmp_path / "dump"), "-q")
    assert r.returncode == 0, r.stderr
    files = sorted(os.listdir(tmp_path / "dump"))
    assert files[0] == "00-input.edgec.txt" and files[-1].endswith("-dce.edgec.txt")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["compile", "missing.onnx"], 3, "does not exist"),
        (["compile", "{model}", "--target", "warp-drive"], 2, "unknown target 'warp-drive'"),
        (["compile", "{model}", "--target", "cpu{arch=riscv}"], 2, "option arch='riscv' is not allowed"),
        (["compile", "{model}", "-p", "quantum{bits=2}"], 2, "unknown pass 'quantum'"),
        (["compile", "{model}", "-p", "fold-constants{max_elements=-1}"], 2, "max_elements=-1 is not allowed"),
        (["compile", "{model}", "--input-shape", "image=1x3xbig"], 2, "dims must be integers"),
        (["compile", "{model}", "--input-shape", "nope=1x3"], 2, "unknown inputs ['nope']"),
        (["compile", "{corrupt}"], 3, "not a readable ONNX file"),
        (["compile", "{unsupported}"], 4, "operator domain 'com.acme' is not supported"),
        (["compile", "{model}", "--target", "cpu", "--tolerance", "0", "--verify"], 1, "verification failed"),
        (["compile", "notes.txt"], 3, "no frontend reads"),
    ],
)
def test_exit_codes_and_clean_errors(args, code, message, tiny_cnn_path, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(open(tiny_cnn_path, "rb").read()[:500])
    m = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Frob", ["x"], ["y"], domain="com.acme")],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.acme", 1)],
    )
    onnx.save(m, str(tmp_path / "unsupported.onnx"))
    (tmp_path / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    subst = {"{model}": tiny_cnn_path, "{corrupt}": str(corrupt), "{unsupported}": str(tmp_path / "unsupported.onnx")}
    args = [subst.get(a, a) for a in args]
    r = run(*args, "-o", str(out), cwd=str(tmp_path))
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    if code != 1:  # verification failures keep the artifact for inspection; nothing else leaves output
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary directories left


def test_json_errors(tmp_path):
    r = run("compile", str(tmp_path / "missing.onnx"), "--json")
    err = json.loads(r.stdout)["error"]
    assert r.returncode == 3 and err["kind"] == "bad-input" and err["exit_code"] == 3


@pytest.mark.slow
def test_existing_output_replaced_only_on_success(tiny_cnn_path, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old.txt").write_text("previous build")
    r = run("compile", tiny_cnn_path, "-o", str(out), "-p", "no-such-pass")
    assert r.returncode == 2 and (out / "old.txt").exists()
    r = run("compile", tiny_cnn_path, "-o", str(out))  # not edgec's output: refused, nothing deleted
    assert r.returncode == 2 and "--force" in r.stderr and (out / "old.txt").exists()
    r = run("compile", tiny_cnn_path, "-o", str(out), "--force")
    assert r.returncode == 0 and not (out / "old.txt").exists() and (out / "model.so").exists()
    r = run("compile", tiny_cnn_path, "-o", str(out), "-p", "quantize{bits=4}")  # edgec's own: replaced
    assert r.returncode == 0 and json.loads((out / "manifest.json").read_text())["pipeline"][-1] == "quantize{bits=4}"


def test_python_api_mirrors_cli(tiny_cnn_path, tmp_path):
    import edgec

    res = edgec.compile(tiny_cnn_path, target="cpu", output=str(tmp_path / "api"), verify=True)
    assert res.manifest["verification"]["passed"]
    assert os.path.isfile(os.path.join(res.output_dir, "model.so"))


@pytest.mark.slow
def test_compile_edgec_ir_model_and_aarch64(tmp_path, mlp):
    p = tmp_path / "mlp.edgec"
    ir.save(mlp, str(p))
    r = run("compile", str(p), "--target", "cpu{arch=aarch64}", "-o", str(tmp_path / "arm"), "--verify")
    assert r.returncode == 0, r.stderr
    assert "verify: NOT RUN" in r.stdout
    files = os.listdir(tmp_path / "arm")
    assert "model.tar" in files
    if "model.so" in files:  # linked when clang and ld.lld exist (CI installs them)
        assert open(tmp_path / "arm" / "model.so", "rb").read(20)[18] == 183  # e_machine EM_AARCH64
