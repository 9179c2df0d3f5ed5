"""decompose's rules for RNN, GRU and LSTM (plugins/cleanup/decompose_rnn.py): unrolled over the static sequence
into core ops, every output (Y, Y_h, Y_c) equal to onnxruntime's for layouts, directions, missing optional inputs,
activations with alpha / beta, clip, GRU's linear_before_reset, LSTM's peepholes and input_forget, constant
sequence lengths; variants with no exact rewrite are left alone; and one compiled end to end for cpu."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.ir import executor
from edgec.plugins.cleanup.decompose import Decompose
from edgec.plugins.frontends.onnx import import_proto
from edgec.target import Capabilities

from test_decompose import CORE, _ctx

F = TensorProto.FLOAT
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _case(
    op,
    *,
    seq=4,
    batch=2,
    inp=3,
    hidden=5,
    direction="forward",
    layout=0,
    bias=True,
    init_h=True,
    init_c=True,
    peep=False,
    lens=None,
    lens_input=False,
    outputs=None,
    seed=0,
    weights_as_inputs=False,
    opset=14,
    **attrs,
):
    """An onnx model of one ``op`` node (W / R / B / P initializers, X and the initial states inputs) and its
    feeds."""
    rng = np.random.default_rng(seed)
    nd, g = (2 if direction == "bidirectional" else 1), GATES[op]

    def rnd(*shape):
        return rng.uniform(-1, 1, shape).astype(np.float32)

    x_shape = [batch, seq, inp] if layout else [seq, batch, inp]
    st_shape = [batch, nd, hidden] if layout else [nd, batch, hidden]
    consts = {"W": rnd(nd, g * hidden, inp), "R": rnd(nd, g * hidden, hidden)}
    if bias:
        consts["B"] = rnd(nd, 2 * g * hidden)
    if lens is not None:
        consts["sequence_lens"] = np.array(lens, np.int32)
    if peep:
        consts["P"] = rnd(nd, 3 * hidden)
    feeds = {"X": rnd(*x_shape)}
    if init_h:
        feeds["initial_h"] = rnd(*st_shape)
    if op == "LSTM" and init_c:
        feeds["initial_c"] = rnd(*st_shape)
    if lens_input:
        feeds["sequence_lens"] = consts.pop("sequence_lens")
    if weights_as_inputs:
        feeds.update({k: consts.pop(k) for k in ("W", "R")})
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h"] + (["initial_c", "P"] if op == "LSTM" else [])
    ins = [k if k in feeds or k in consts else "" for k in names]
    while ins[-1] == "":
        ins.pop()
    outs = outputs or (["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"])
    if opset >= 14:  # layout is an attribute from opset 14
        attrs["layout"] = layout
    node = helper.make_node(op, ins, outs, hidden_size=hidden, direction=direction, **attrs)
    m = helper.make_model(
        helper.make_graph(
            [node],
            "g",
            [
                helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
                for k, v in feeds.items()
            ],
            [helper.make_empty_tensor_value_info(o) for o in outs if o],
            [numpy_helper.from_array(v, k) for k, v in consts.items()],
        ),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    m.ir_version = 8
    return m, feeds


def _reference(m, feeds):
    """onnxruntime's outputs; it has no layout 1, so a batch-major node is run as its layout 0 twin on transposed
    inputs, and its outputs are transposed back."""
    node = m.graph.node[0]
    if not any(a.name == "layout" and a.i for a in node.attribute):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    twin = onnx.ModelProto.FromString(m.SerializeToString())
    next(a for a in twin.graph.node[0].attribute if a.name == "layout").i = 0
    feeds = {k: np.ascontiguousarray(v.swapaxes(0, 1)) if v.ndim == 3 else v for k, v in feeds.items()}
    for vi in twin.graph.input:
        if len(vi.type.tensor_type.shape.dim) != 3:
            continue
        dims = vi.type.tensor_type.shape.dim
        dims[0].dim_value, dims[1].dim_value = dims[1].dim_value, dims[0].dim_value
    outs = ort.InferenceSession(twin.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    return [o.transpose(2, 0, 1, 3) if o.ndim == 4 else o.swapaxes(0, 1) for o in outs]


CASES = {
    "rnn_defaults": ("RNN", {}),
    "rnn_reverse_layout1_no_bias": ("RNN", dict(direction="reverse", layout=1, bias=False)),
    "rnn_bidirectional_relu_no_h0": (
        "RNN",
        dict(direction="bidirectional", init_h=False, activations=["Relu", "LeakyRelu"], activation_alpha=[0.3]),
    ),
    "rnn_affine_scaledtanh_clip": (
        "RNN",
        dict(
            direction="bidirectional",
            activations=["Affine", "ScaledTanh"],
            activation_alpha=[0.7, 1.5],
            activation_beta=[0.2, 0.8],
            clip=0.9,
        ),
    ),
    "rnn_opset13_weights_as_inputs": ("RNN", dict(opset=13, weights_as_inputs=True)),
    "rnn_lens": ("RNN", dict(direction="bidirectional", lens=[4, 2])),
    "rnn_lens_zero_at_run_time_layout1": (
        "RNN",
        dict(direction="bidirectional", lens=[0, 3], lens_input=True, layout=1),
    ),
    "gru_defaults": ("GRU", {}),
    "gru_lbr_bidirectional_layout1": ("GRU", dict(direction="bidirectional", layout=1, linear_before_reset=1)),
    "gru_lbr_no_bias_reverse": ("GRU", dict(direction="reverse", bias=False, init_h=False, linear_before_reset=1)),
    "gru_hardsigmoid_softsign_clip": ("GRU", dict(activations=["HardSigmoid", "Softsign"], clip=0.5)),
    "gru_elu_softplus_defaults": ("GRU", dict(activations=["Elu", "Softplus"], seq=3)),
    "gru_thresholded_alpha": (
        "GRU",
        dict(
            direction="bidirectional",
            activation_alpha=[0.1, 0.2],
            activations=["Sigmoid", "ThresholdedRelu", "Sigmoid", "ThresholdedRelu"],
        ),
    ),
    "gru_lens_reverse_layout1": ("GRU", dict(direction="reverse", layout=1, lens=[1, 3], seq=3)),
    "gru_lens_full": ("GRU", dict(lens=[4, 4])),
    "lstm_defaults": ("LSTM", {}),
    "lstm_peepholes_bidirectional": ("LSTM", dict(direction="bidirectional", peep=True)),
    "lstm_layout1_reverse_no_states": ("LSTM", dict(direction="reverse", layout=1, init_h=False, init_c=False)),
    "lstm_input_forget_clip_peep": ("LSTM", dict(input_forget=1, clip=0.6, peep=True, bias=False)),
    "lstm_activations": (
        "LSTM",
        dict(
            direction="bidirectional",
            activations=["HardSigmoid", "Elu", "Softsign", "Sigmoid", "Tanh", "Relu"],
            activation_alpha=[0.3, 0.9],
            activation_beta=[0.4],
        ),
    ),
    "lstm_only_y_h": ("LSTM", dict(outputs=["", "Y_h"])),
    "lstm_lens_bidirectional_peep": ("LSTM", dict(direction="bidirectional", lens=[2, 4], peep=True)),
    "lstm_lens_zero": ("LSTM", dict(direction="reverse", lens=[3, 0], batch=2)),
    "lstm_lens_at_run_time": ("LSTM", dict(direction="bidirectional", lens=[1, 4, 3], batch=3, lens_input=True)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_recurrent_ops_unroll_exactly(name):
    op, kw = CASES[name]
    m, feeds = _case(op, **kw)
    want = _reference(m, feeds)
    model = import_proto(m, None)
    assert Decompose().run(model, _ctx())
    left = {n.qualified_op for n in model.graph} - CORE
    assert not left, f"{name}: {left} remain"
    names = [o.name for o in m.graph.output]
    assert [o.name for o in model.graph.outputs] == names
    got = executor.run(model, feeds)
    for k, w in zip(names, want):
        assert got[k].shape == w.shape and got[k].dtype == w.dtype, (k, got[k].shape, w.shape)
        np.testing.assert_allclose(got[k], w, rtol=1e-5, atol=2e-6, err_msg=f"{name}: {k}")


@pytest.mark.parametrize(
    "kw",
    [
        dict(activations=["Affine"]),  # Affine's alpha / beta have no agreed default
        dict(activations=["Tanh", "Tanh", "Tanh"]),  # too many for one direction
        dict(lens=[4, 5]),  # longer than the sequence
        dict(activations=["Gelu"]),  # not one of the spec's activations
    ],
)
def test_variants_without_an_exact_rewrite_stay(kw):
    m, _ = _case("RNN", **kw)
    model = import_proto(m, None)
    assert not Decompose().run(model, _ctx())
    assert [n.op_type for n in model.graph] == ["RNN"]
    assert Capabilities(ops=CORE).problems(model)[0].startswith("node '")


def test_dynamic_sequence_stays():
    m, _ = _case("GRU")
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "seq"
    model = import_proto(m, None)
    assert not Decompose().run(model, _ctx())


@pytest.mark.slow
def test_lstm_compiles_for_cpu(tmp_path):
    m, feeds = _case("LSTM", direction="bidirectional", peep=True, seq=5, opset=17)
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    res = edgec.compile(path, target="cpu", output=str(tmp_path / "out"), use_cache=False)
    got = edgec.compiler.parse_target("cpu").run_artifact(res.output_dir, feeds, list(feeds))
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-6)


def test_openvino_lets_decompose_unroll_the_variants_its_frontend_gets_wrong(tmp_path):
    """OpenVINO's ONNX frontend takes LSTM but computes layout 1 and peepholes differently from ONNX: the target
    does not accept those nodes, so decompose unrolls them and the compiled model matches onnxruntime."""
    pytest.importorskip("openvino")
    target = edgec.compiler.parse_target("openvino")
    m, feeds = _case("LSTM", layout=1, peep=True, direction="bidirectional", opset=17)
    model = import_proto(m, None)
    assert not target.accepts_node(next(iter(model.graph)), model)
    plain = import_proto(_case("LSTM", opset=17)[0], None)
    assert target.accepts_node(next(iter(plain.graph)), plain)
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    res = edgec.compile(path, target="openvino", output=str(tmp_path / "out"), use_cache=False)
    got = target.run_artifact(res.output_dir, feeds, list(feeds))
    for g, w in zip(got, _reference(m, feeds)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-6)
