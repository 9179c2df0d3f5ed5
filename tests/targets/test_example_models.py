"""The foundation's example architectures (ResNet-18, MobileNetV3-Small, the BERT-style encoder) through the
openvino and tensorrt targets, float and quantized, each artifact run on its runtime by --verify."""

import warnings

import pytest

torch = pytest.importorskip("torch")
import architectures  # noqa: E402  (examples/models, put on sys.path by conftest)

from edgec.compiler import compile as compile_model  # noqa: E402

pytestmark = pytest.mark.slow

PIPELINES = {
    "fp32": "",
    "int8": "quantize{bits=8}",
    "int4": "quantize{bits=4,group=32,ops=Linear,head_bits=4},quantize{bits=8,ops=Conv}",
    "static-int8": "quantize{bits=8},quantize-activations",
}


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("arch")
    out = {}
    for name in architectures.NAMES:
        m, ex, names = architectures.build(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                m, ex, str(d / f"{name}.onnx"), dynamo=False, opset_version=17, input_names=names, output_names=["out"]
            )
        out[name] = str(d / f"{name}.onnx")
    return out


@pytest.mark.parametrize("target", ["openvino", "tensorrt"])
@pytest.mark.parametrize("variant", list(PIPELINES))
@pytest.mark.parametrize("name", architectures.NAMES)
def test_example_model_verifies(name, variant, target, onnx_files, tmp_path):
    if target == "openvino":
        pytest.importorskip("openvino")
    if name == "bert":
        pytest.importorskip("transformers")
    r = compile_model(
        onnx_files[name],
        target,
        PIPELINES[variant],
        str(tmp_path / "a"),
        verify=True,
        calib="random" if variant == "static-int8" else None,
    )
    v = r.manifest["verification"]
    print(f"{name} {variant} {target}: {v['summary']}")
    assert v["ran"] and v["passed"], v["summary"]
    row = v["outputs"][0]
    if target == "openvino" and variant in ("fp32", "int8", "int4"):
        assert row["vs_reference_max_rel_err"] <= 1e-5  # weights carried exactly, f32 compute
    if variant == "fp32":
        assert row["vs_original_cosine"] >= 0.999
