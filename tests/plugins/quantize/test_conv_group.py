"""quantize{conv_group=true}: Conv weights on a grid with one scale per `group` input channels x the whole kernel."""

import numpy as np
import pytest

from edgec import ir
from edgec.host import host
from edgec.ir import QuantizedTensor
from edgec.ir.passes import PassContext, PassManager, parse_pipeline


def _conv_model(i=32):
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (1, i, 8, 8))
    w = rng.standard_normal((8, i, 3, 3)).astype(np.float32)
    w[:, :16] *= 10  # two very different channel blocks: group-wise scales must follow them
    g.outputs.append(
        g.op("Conv", [x, g.add_const("w", w)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, name="conv").output
    )
    m = ir.Model(g, {"": 17})
    ir.infer_shapes(m)
    return m, w


@pytest.mark.parametrize("extra", ["", ",scheme=asymmetric", ",method=mse", ",method=gptq"])
def test_conv_groups_run_along_input_channels(extra):
    m, w = _conv_model()
    ctx = PassContext()
    if "gptq" in extra:
        from edgec.calibration import load_calibration

        with pytest.warns(Warning):
            ctx = PassContext(calibration=load_calibration("random", m, seed=0))
    PassManager(parse_pipeline(f"quantize{{bits=4,group=16,conv_group=true{extra}}}", host().passes.as_dict())).run(
        m, ctx
    )
    q = m.graph.nodes[0].inputs[1].const
    assert isinstance(q, QuantizedTensor) and q.validate() == []
    assert (q.group_size, q.group_axis, np.shape(q.scales)) == (16, 1, (8, 2, 1, 1))
    # each block's scale fits its own 16 channels: the loud block's scales are several times the quiet one's
    s = np.asarray(q.scales)
    assert (s[:, 0] > 3 * s[:, 1]).all()
    d = q.dequantize()
    for blk in (slice(0, 16), slice(16, 32)):
        if "gptq" in extra:
            break  # gptq trades weight error for output error (pushed into the quiet block): checked below
        # each block's own grid: its relative error is that of 4 bits, though the blocks differ 10x in range
        rel = np.sqrt(np.mean((d[:, blk] - w[:, blk]) ** 2) / np.mean(w[:, blk] ** 2))
        assert rel < 0.25, rel
    if "gptq" in extra:
        m_rtn, _ = _conv_model()
        PassManager(parse_pipeline("quantize{bits=4,group=16,conv_group=true}", host().passes.as_dict())).run(
            m_rtn, ctx
        )
        errs = [mm.reports["edgec.quantization"]["w"]["rel_output_error"] for mm in (m, m_rtn)]
        assert errs[0] < errs[1]
    # without the option, Conv stays per output channel
    m2, _ = _conv_model()
    PassManager(parse_pipeline("quantize{bits=4,group=16}", host().passes.as_dict())).run(m2, PassContext())
    assert m2.graph.nodes[0].inputs[1].const.group_size is None


def test_indivisible_channels_fall_back_to_per_channel():
    m, _ = _conv_model(i=24)
    PassManager(parse_pipeline("quantize{bits=4,group=16,conv_group=true}", host().passes.as_dict())).run(
        m, PassContext()
    )
    assert m.graph.nodes[0].inputs[1].const.group_size is None
