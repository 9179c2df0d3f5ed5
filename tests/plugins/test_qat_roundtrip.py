"""A QAT round trip: a small network fine-tuned with torch's fake quantization (int8 per-channel weights, int8
activations), exported by torch's ONNX exporter as QuantizeLinear / DequantizeLinear, compiled by edgec to cpu,
openvino, tensorrt and coreml. Every artifact stores the weights' codes the export defines (read back from each
format), verified on its runtime; nothing is quantized again."""

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")
nn = torch.nn

ACT_SCALE = 0.05


class FakeQuantConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.register_buffer("scale", (self.conv.weight.detach().abs().amax(dim=(1, 2, 3)) / 127).clamp(min=1e-6))

    def forward(self, x):
        zero = torch.zeros(self.scale.shape[0], dtype=torch.int32)
        w = torch.fake_quantize_per_channel_affine(self.conv.weight, self.scale, zero, 0, -128, 127)
        return nn.functional.conv2d(x, w, self.conv.bias, padding=1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = FakeQuantConv(3, 8), FakeQuantConv(8, 16)
        self.fc = nn.Linear(16, 10)
        self.register_buffer("fc_scale", (self.fc.weight.detach().abs().amax(1) / 127).clamp(min=1e-6))

    def forward(self, x):
        def act(t):
            return torch.fake_quantize_per_tensor_affine(t, ACT_SCALE, 0, -128, 127)

        x = torch.relu(self.c1(act(x)))
        x = torch.relu(self.c2(act(x))).mean((2, 3))
        zero = torch.zeros(10, dtype=torch.int32)
        w = torch.fake_quantize_per_channel_affine(self.fc.weight, self.fc_scale, zero, 0, -128, 127)
        return nn.functional.linear(act(x), w, self.fc.bias)


def _export(path):
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = torch.randn(64, 3, 12, 12), torch.randint(0, 10, (64,))
    for _ in range(30):  # quantization-aware fine-tuning: the straight-through estimator moves the float weights
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    torch.onnx.export(net, (x[:1],), path, dynamo=True, input_names=["x"], output_names=["y"], verbose=False)
    return net


def _file_codes(path):
    """The codes each weight's QuantizeLinear defines: saturate(round_half_even(W / scale)), float32."""
    m = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in inits:
            w, s = inits[n.input[0]], inits[n.input[1]]
            s = s.reshape((-1,) + (1,) * (w.ndim - 1))
            out[n.input[0]] = np.clip(np.rint(w / s), -128, 127).astype(np.int8)
    return out


def _artifact_codes(target, out):
    if target == "tensorrt":
        m = onnx.load(os.path.join(out, "model.onnx"))
        return [numpy_helper.to_array(i) for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    if target == "openvino":
        import openvino as ov

        m = ov.Core().read_model(os.path.join(out, "model.xml"))
        return [
            op.get_data()
            for op in m.get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
        ]
    if target.startswith("coreml"):
        from edgec.targets.coreml.evaluate import load_program

        prog = load_program(os.path.join(out, "model.mlpackage"))
        return [
            np.asarray(op.inputs["data"].val)
            for op in prog.functions["main"].operations
            if op.op_type.startswith("constexpr") and "data" in op.inputs
        ]
    return None


@pytest.mark.slow
def test_a_qat_export_keeps_its_codes_on_every_target(tmp_path):
    from edgec.compiler import compile as edgec_compile

    path = str(tmp_path / "qat.onnx")
    net = _export(path)
    want = _file_codes(path)
    assert len(want) == 3
    # torch's own codes (its fake quant multiplies by 1 / scale where ONNX divides: equal here)
    torch_w = {"c1.conv.weight": net.c1, "c2.conv.weight": net.c2}
    for name, mod in torch_w.items():
        s = mod.scale.reshape(-1, 1, 1, 1)
        got = torch.clamp(torch.round(mod.conv.weight.detach() * (1.0 / s)), -128, 127).to(torch.int8).numpy()
        assert np.array_equal(got, want[name])
    for target, pipeline in (
        ("cpu", ""),
        ("openvino", ""),
        ("tensorrt", ""),
        ("coreml{precision=fp32}", "float-activations"),  # Core ML carries the weights' grids, not int8 activations
    ):
        out = str(tmp_path / target.split("{")[0])
        res = edgec_compile(path, target, pipeline, out, verify=True, use_cache=False)
        m = res.manifest
        assert m["verification"]["passed"], (target, m["verification"].get("summary"))
        imported = m["quantization"]["imported"]
        assert (imported["weights"], imported["activations"], imported["left"]) == (3, 3, [])
        layers = [r for r in m["layers"] if r.get("method") == "imported"]
        assert len(layers) == 3 and all(r["bits"] == 8 and r["scheme"] == "symmetric" for r in layers), layers
        if pipeline != "float-activations":
            assert len(m["quantization"]["activations"]) == 3
        stored = _artifact_codes(target, out)
        if stored is None:  # cpu: the integer kernels, checked bit-exact against the integer reference by verify
            assert "bit-exact" in m["verification"]["summary"], m["verification"]["summary"]
            continue
        for name, codes in want.items():
            assert any(
                a.shape == codes.shape
                and np.array_equal(a, codes)
                or (codes.ndim == 2 and a.shape == codes.T.shape and np.array_equal(a, codes.T))
                for a in stored
            ), (target, name)
