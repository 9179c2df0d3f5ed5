"""Frontends: ONNX (opsets, external data, unsupported ops reported at once), PyTorch, edgec IR files."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgec import ir
from edgec.errors import BadInputError, UnsupportedError
from edgec.plugins.frontends.edgec_ir import EdgecIRFrontend
from edgec.plugins.frontends.onnx import OnnxFrontend


def _model(nodes, inputs, outputs, inits=(), opset=17, domains=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    )
    m.ir_version = 8
    return m


def test_onnx_import_with_external_data(tmp_path):
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    m = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(
        m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.data", size_threshold=0
    )
    assert (tmp_path / "m.data").exists()
    model = OnnxFrontend().load(str(path))
    np.testing.assert_array_equal(model.graph.initializers["w"].numpy(), w)
    assert model.graph.outputs[0].shape == (2, 32)


def test_unsupported_ops_reported_all_at_once(tmp_path):
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    m = _model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="ok"),
            helper.make_node("FancyOp", ["a"], ["b"], name="fancy", domain="com.vendor"),
            helper.make_node("If", ["c"], ["d"], name="branchy", then_branch=then, else_branch=then),
            helper.make_node("Add", ["a", "missing"], ["e"], name="dangling"),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
        domains=["com.vendor"],
    )
    p = tmp_path / "bad.onnx"
    onnx.save(m, str(p))
    with pytest.raises(UnsupportedError) as e:
        OnnxFrontend().load(str(p))
    msg = str(e.value)
    assert "node fancy (com.vendor::FancyOp, opset 1): operator domain 'com.vendor' is not supported" in msg
    # an If whose branches have the same static shape is compiled (both computed, one chosen: Where)
    assert "branchy" not in msg
    assert "node dangling (Add, opset 17): input 'missing' is not defined" in msg
    assert len(e.value.problems) == 2


def test_old_opset_and_corrupt_files(tmp_path):
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        opset=6,
    )
    p = tmp_path / "old.onnx"
    onnx.save(m, str(p))
    with pytest.raises(UnsupportedError, match="opset 6 is older than 7, the oldest edgec accepts"):
        OnnxFrontend().load(str(p))
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(BadInputError, match="not a readable ONNX file"):
        OnnxFrontend().load(str(bad))


def test_edgec_ir_frontend_reads_both_forms(tmp_path, mlp):
    ir.save(mlp, str(tmp_path / "m.edgec"))
    (tmp_path / "m.edgec.txt").write_text(ir.print_model(mlp))
    for f in ("m.edgec", "m.edgec.txt"):
        assert ir.print_model(EdgecIRFrontend().load(str(tmp_path / f))) == ir.print_model(mlp)
    (tmp_path / "junk.edgec.txt").write_text('edgec-ir 1\ngraph "g" {\n  what\n}\n')
    with pytest.raises(BadInputError, match="line 3"):
        EdgecIRFrontend().load(str(tmp_path / "junk.edgec.txt"))


def test_torch_frontend_from_module_and_pt2(tmp_path):
    torch = pytest.importorskip("torch")
    from edgec.plugins.frontends.torch import TorchFrontend, from_module

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return torch.nn.functional.gelu(self.fc(x))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 8)
    m = from_module(net, (x,), input_names=["x"])
    assert m.graph.inputs[0].name == "x"
    out = ir.ReferenceExecutor(m).run({"x": x.numpy()})[m.graph.outputs[0].name]
    np.testing.assert_allclose(out, net(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    ep = torch.export.export(net, (x,))
    torch.export.save(ep, str(tmp_path / "net.pt2"))
    m2 = TorchFrontend().load(str(tmp_path / "net.pt2"))
    out2 = ir.ReferenceExecutor(m2).run({m2.graph.inputs[0].name: x.numpy()})[m2.graph.outputs[0].name]
    np.testing.assert_allclose(out2, out, rtol=1e-6)
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="not a readable torch.export program"):
        TorchFrontend().load(str(tmp_path / "bad.pt2"))


def test_pt2_the_exporters_own_reason_is_reported_when_both_ways_fail(monkeypatch):
    """Where torch's ONNX exporter fails on the program and on its core-ATen decomposition too, the refusal
    quotes the exporter's reason for the program as given (its '<class ...>: message' line), not a generic
    headline nor the retry's error."""
    torch = pytest.importorskip("torch")
    from edgec.plugins.frontends.torch import from_exported_program

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x)

    ep = torch.export.export(Tiny(), (torch.randn(2, 3),))
    calls = []

    def failing_export(program, *args, **kwargs):
        calls.append(program)
        raise RuntimeError(
            "Failed to decompose the FX graph.\n## Exception summary\n"
            f"<class 'ValueError'>: cannot view (attempt {len(calls)})"
        )

    monkeypatch.setattr(torch.onnx, "export", failing_export)
    with pytest.raises(
        UnsupportedError,
        match=r"tiny\.pt2: torch's ONNX exporter could not lower the program: "
        r"RuntimeError: <class 'ValueError'>: cannot view \(attempt 1\)",
    ):
        from_exported_program(ep, label="tiny.pt2")
    assert len(calls) == 2 and calls[1] is not ep  # retried once, on the decomposed program
