"""A peer's pre-quantized model: NNCF's post-training quantization of an ONNX CNN (int8 weights stored as int8
initializers under per-channel DequantizeLinear, int8 activations as QuantizeLinear / DequantizeLinear pairs)
compiled by edgec to cpu and openvino. Every weight and activation is imported, nothing is quantized again, the
artifacts store the codes NNCF wrote, and each artifact's outputs equal onnxruntime's on NNCF's own file (verify's
"vs the original"). TensorRT refuses it by name: NNCF quantizes what follows a ReLU to uint8, and TensorRT takes
only signed int8 activations with zero point 0."""

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgec.errors import UnsupportedError
from tests.plugins.test_qat_roundtrip import _artifact_codes

torch = pytest.importorskip("torch")
nncf = pytest.importorskip("nncf")  # a test dependency (pyproject's [test]): CI has it


def _nncf_model(path: str) -> dict[str, np.ndarray]:
    """NNCF's int8 PTQ of a small CNN (conv, conv, pool, gemm) written to ``path``; its int8 weight codes."""
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    fp = path + ".float.onnx"
    torch.onnx.export(
        net, (torch.randn(1, 3, 12, 12),), fp, dynamo=False, input_names=["x"], output_names=["y"], opset_version=17
    )
    rng = np.random.default_rng(0)
    data = [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(16)]
    q = nncf.quantize(onnx.load(fp), nncf.Dataset(data), subset_size=16)
    onnx.save(q, path)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    return {
        n.input[0]: inits[n.input[0]]
        for n in q.graph.node
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).dtype == np.int8
    }


def test_an_nncf_model_keeps_its_codes_on_every_target(tmp_path):
    from edgec.compiler import compile as edgec_compile

    path = str(tmp_path / "nncf.onnx")
    want = _nncf_model(path)
    assert len(want) == 3 and all(c.ndim in (2, 4) for c in want.values())
    for target in ("cpu", "openvino"):
        out = str(tmp_path / target)
        m = edgec_compile(path, target, "", out, verify=True, use_cache=False).manifest
        ver = m["verification"]
        assert ver["passed"], (target, ver.get("summary"))
        imported = m["quantization"]["imported"]
        assert (imported["weights"], imported["activations"], imported["left"]) == (3, 4, []), imported
        assert all(r["bits"] == 8 for r in m["layers"] if r.get("method") == "imported")
        # the artifact's outputs against onnxruntime running NNCF's own file
        assert "vs the original (onnxruntime" in ver["summary"], ver["summary"]
        stored = _artifact_codes(target, out)
        if stored is None:  # cpu: integer kernels, bit-exact with the integer reference (verify)
            assert "bit-exact" in ver["summary"], ver["summary"]
            continue
        for name, codes in want.items():
            assert any(
                (a.shape == codes.shape and np.array_equal(a, codes))
                or (codes.ndim == 2 and a.shape == codes.T.shape and np.array_equal(a, codes.T))
                for a in stored
            ), (target, name)
    with pytest.raises(UnsupportedError, match=r"(?s)3 problems.*'/1/Relu_output_0': TensorRT takes signed int8"):
        edgec_compile(path, "tensorrt", "", str(tmp_path / "tensorrt"), use_cache=False)
    assert not os.path.exists(str(tmp_path / "tensorrt"))  # nothing half-written
