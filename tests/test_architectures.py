"""Real architectures with random weights (ResNet-18, MobileNetV3-Small, a BERT-style encoder), each
imported from ONNX and from PyTorch and compiled for ``cpu`` with ``--verify``: max relative error
<= 1e-4 against onnxruntime on the original ONNX file (ONNX path) or torch eager (PyTorch path)."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tvm")
import architectures  # noqa: E402  (examples/models, put on sys.path by conftest)

from edgec import ir  # noqa: E402

pytestmark = pytest.mark.slow
TOL = 1e-4


def export_onnx(name, path):
    m, ex, names = architectures.build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, ex, str(path), dynamo=False, opset_version=17, input_names=names, output_names=["out"])
    return m, ex, names


@pytest.mark.parametrize("name", architectures.NAMES)
def test_onnx_to_cpu_verify(name, tmp_path):
    if name == "bert":
        pytest.importorskip("transformers")
    export_onnx(name, tmp_path / f"{name}.onnx")
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgec.cli",
            "compile",
            str(tmp_path / f"{name}.onnx"),
            "--target",
            "cpu",
            "-o",
            str(out),
            "--verify",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    v = json.loads(r.stdout)["manifest"]["verification"]
    assert v["passed"] and v["ran"]
    row = v["outputs"][0]
    print(f"{name}: rel err vs onnxruntime(original) {row['vs_original_max_rel_err']:.3g}")
    assert row["vs_original_max_rel_err"] <= TOL
    assert row["vs_reference_max_rel_err"] <= TOL


# The torch.export path on a sample (CI time): MobileNetV3's layers run through the ONNX path above and on hexagon,
# and benchmarks/real_models.py exports every architecture of the real-model matrix with torch.export.
@pytest.mark.parametrize("name", ["resnet18", "bert"])
def test_pytorch_to_cpu_verify(name, tmp_path):
    if name == "bert":
        pytest.importorskip("transformers")
    m, ex, names = architectures.build(name)
    ep = torch.export.export(m, ex)
    torch.export.save(ep, str(tmp_path / f"{name}.pt2"))
    import edgec

    res = edgec.compile(str(tmp_path / f"{name}.pt2"), target="cpu", output=str(tmp_path / "out"), verify=True)
    v = res.manifest["verification"]
    assert v["passed"] and v["outputs"][0]["vs_original_max_rel_err"] <= TOL
    # And against torch eager itself, on the same seeded inputs the verifier used.
    from edgec.compiler import load_model
    from edgec.targets.cpu import CpuTarget

    model = load_model(str(tmp_path / f"{name}.pt2"))
    feeds = ir.random_inputs(model, seed=0)
    if name == "bert":
        feeds = {model.graph.inputs[0].name: ex[0].numpy(), model.graph.inputs[1].name: ex[1].numpy()}
    got = CpuTarget().run_artifact(res.output_dir, feeds, [v.name for v in model.graph.inputs])[0]
    with torch.no_grad():
        want = m(*[torch.from_numpy(feeds[v.name]) for v in model.graph.inputs]).numpy()
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"{name}: rel err vs torch eager {err:.3g}")
    assert err <= TOL


QUANT_CASES = [
    ("resnet18", "quantize{bits=8},quantize-activations{observer=percentile}", 0.999),
    ("resnet18", "quantize{bits=4,method=mse}", 0.99),
    ("bert", "smoothquant,quantize{bits=8},quantize-activations{observer=minmax}", 0.999),
    ("bert", "quantize{bits=4,group=32,method=gptq}", 0.99),
]


@pytest.mark.parametrize("name, pipeline, min_cosine", QUANT_CASES)
def test_quantized_to_cpu_verify(name, pipeline, min_cosine, tmp_path):
    """int8 weights+activations and 4-bit weights compile for cpu; --verify checks the artifact against the
    reference executor and reports the accuracy change against the fp32 original."""
    if name == "bert":
        pytest.importorskip("transformers")
    m, ex, names = export_onnx(name, tmp_path / f"{name}.onnx")
    rng = np.random.default_rng(0)
    if name == "bert":
        calib = {"input_ids": rng.integers(0, 1000, (8, 1, 16)), "attention_mask": np.ones((8, 1, 16), np.int64)}
    else:
        calib = {"image": rng.standard_normal((8, 1, 3, 64, 64)).astype(np.float32)}
    np.savez(tmp_path / "calib.npz", **calib)
    import edgec

    res = edgec.compile(
        str(tmp_path / f"{name}.onnx"),
        target="cpu",
        pipeline=pipeline,
        output=str(tmp_path / "out"),
        verify=True,
        calib=str(tmp_path / "calib.npz"),
    )
    man = res.manifest
    v = man["verification"]
    row = v["outputs"][0]
    print(
        f"{name} {pipeline}: vs fp32 original cosine {row['vs_original_cosine']:.6f} "
        f"rel err {row['vs_original_max_rel_err']:.4g} top-1 {row.get('vs_original_top1_agreement')}; "
        f"size {man['sizes']['weights_bytes_before']} -> {man['sizes']['weights_bytes_after']}"
    )
    assert v["passed"] and v["ran"]
    assert row["vs_original_cosine"] >= min_cosine
    assert man["sizes"]["weights_bytes_after"] < man["sizes"]["weights_bytes_before"] / 3
    q = man["quantization"]
    assert q["weights"] and all(r["sqnr_db"] > 0 for r in q["weights"].values())
    if "quantize-activations" in pipeline:
        assert q["activations"]
        if name == "resnet18":
            assert row["vs_original_top1_agreement"] == 1.0
    assert man["calibration"]["samples"] == 8
