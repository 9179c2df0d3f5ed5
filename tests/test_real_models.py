"""A representative slice of the real-model matrix (benchmarks/real_models.py runs all of it): transformers
architectures with random weights, exported the ways users export them (TorchScript-based exporter at opsets 13-17,
dynamo exporter at 18, torch.export .pt2; eager and sdpa attention), compiled with --verify."""

import pytest

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_models(bench_script):
    return bench_script("real_models")


CELLS = [
    ("bert", "ts17-sdpa", "cpu"),  # the sdpa export whose IsNaN once stopped every target
    ("gpt2", "dyn18-sdpa", "openvino"),
    ("whisper-encoder", "ts14-eager", "tensorrt{precision=fp32}"),  # 1-D conv front end
    ("vit", "pt2-sdpa", "cpu"),
    ("t5-encoder", "pt2-sdpa", "openvino"),  # torch's ONNX exporter fails on it unless decomposed first
    ("distilbert", "ts13-eager", "coreml"),
]


@pytest.mark.parametrize("name,how,target", CELLS, ids=[f"{n}-{h}-{t.split('{')[0]}" for n, h, t in CELLS])
def test_real_model_cell(real_models, tmp_path, name, how, target):
    path = real_models.export(name, how, str(tmp_path / "models"))
    res, _ = real_models.compile_cell(path, target, str(tmp_path / "out"), timeout=900)
    assert res == "ok", res
