"""A sample of onnx's backend node suite on the tensorrt target, through ``benchmarks/coverage.py``'s own harness
(materialize, bind parameter inputs, compile, run the emitted ONNX on onnxruntime, compare as onnx's runner
does). The target passes through every op TensorRT's ONNX parser documents and refuses, by node and op, what the
parser's operator matrix restricts; this sample covers the op families and the restrictions. The whole suite is
``python benchmarks/coverage.py --targets 'tensorrt{precision=fp32}'``."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

FP32 = "tensorrt{precision=fp32}"

PASS = [
    # elementwise, unary and comparison
    "test_add_bcast",
    "test_pow_bcast_array",
    "test_mod_mixed_sign_int64",
    "test_acosh",
    "test_sign",
    "test_greater_equal_bcast",
    "test_xor_bcast4v4d",
    "test_isnan",
    # shapes and indexing
    "test_gather_elements_negative_indices",
    "test_gathernd_example_int32",
    "test_scatter_elements_with_axis",
    "test_slice_negative_axes",
    "test_split_equal_parts_1d_opset18",
    "test_tile",
    "test_depthtospace_crd_mode_example",
    "test_onehot_with_axis",
    "test_tril",
    "test_reversesequence_batch",
    "test_range_int32_type_negative_delta",
    # reductions, arg and topk
    "test_reduce_l2_default_axes_keepdims_example",
    "test_argmax_default_axis_example_select_last_index",
    "test_top_k_negative_axis",
    "test_hardmax_axis_1",
    "test_mean_example",
    "test_cumsum_1d_int32_exclusive",  # integer CumSum: TensorRT takes f16 / f32; decompose makes a prefix sum
    "test_layer_normalization_2d_axis0",  # Mean / InvStdDev outputs: decomposed through onnx's function body
    # nn
    "test_convtranspose_pads",
    "test_instancenorm_example",
    "test_lrn",
    "test_gridsample_bilinear",
    "test_lstm_defaults",
    "test_gru_defaults",
    "test_mish",
    "test_resize_upsample_scales_linear_align_corners",
    "test_maxpool_3d_default",
    "test_maxpool_1d_default",  # 1-D pooling reaches it as 2-D through decompose
    "test_dropout_default",  # unused optional outputs written as omitted
    "test_batchnorm_example_training_mode",  # its running statistics outputs are graph outputs
    "test_nonmaxsuppression_center_point_box_format",
    # through the decompose pass (ops TensorRT does not take)
    "test_nllloss_NCd1_ii",
    "test_center_crop_pad_crop_and_pad",
    "test_hannwindow",
    "test_resize_upsample_scales_cubic",
    "test_resize_downsample_scales_linear_antialias",  # a map per axis
    "test_resize_downsample_scales_linear_align_corners",  # onnx's reference semantics (onnxruntime's differ)
    "test_gru_batchwise",  # layout 1: unrolled by decompose
    "test_averagepool_2d_dilations",  # strided slices
    "test_cast_FLOAT_to_FLOAT8E5M2",  # legalize-dtypes: bits in uint8
    "test_dropout_default_mask",  # decomposed: the input and an all-true mask
]
# case -> what the refusal must name
REFUSED = {
    "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool's Indices output",
    "test_cast_FLOAT_to_INT4": "not i8",  # int4 held in int8, which TensorRT does not cast
    "test_scatternd_add": "ScatterND reduction='add'",
    "test_add_uint8": "not u8",
    "test_max_float64": "dtype f64",
    "test_nonzero_example": "NonZero on f16, f32, not bool",
    "test_bitwise_not_2d": "operator BitwiseNot",
}
# the default precision (fp16 compute, fp32 inputs / outputs): float32-only inputs stay float32
FP16_PASS = [
    "test_resize_upsample_scales_nearest",
    "test_nonmaxsuppression_suppress_by_IOU",
    "test_constantofshape_float_ones",
]


@pytest.fixture(scope="module")
def harness(node_suite):
    cov, cases = node_suite
    return cov, cases(PASS + list(REFUSED) + FP16_PASS)


@pytest.mark.slow
def test_the_sample_exists(harness):
    cov, data = harness
    missing = sorted(set(PASS + list(REFUSED) + FP16_PASS) - {os.path.basename(c) for c in cov.list_cases(data)})
    assert not missing, f"not in this onnx's node suite: {missing}"


@pytest.mark.parametrize("case", PASS)
def test_case_passes(harness, case):
    cov, data = harness
    cat, detail = cov.run_case(os.path.join(data, case), FP32)
    assert cat == "pass", f"{case}: {cat}: {detail}"


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_case_is_refused_by_name(harness, case):
    cov, data = harness
    cat, detail = cov.run_case(os.path.join(data, case), FP32)
    assert cat == "refused", f"{case}: {cat}: {detail}"
    assert detail.startswith("UnsupportedError") and REFUSED[case] in detail, detail


@pytest.mark.parametrize("case", FP16_PASS)
def test_fp16_keeps_float32_only_inputs(harness, case):
    cov, data = harness
    cat, detail = cov.run_case(os.path.join(data, case), "tensorrt")
    assert cat == "pass", f"{case}: {cat}: {detail}"


def test_unused_optional_outputs_are_written_omitted():
    """The IR names every output; TensorRT's parser refuses MaxPool's Indices (and LayerNormalization's Mean /
    InvStdDev) when present, so outputs nothing reads go out as the source wrote them: omitted."""
    from onnx import TensorProto, helper

    from edgec.ir import from_onnx
    from edgec.targets.tensorrt.onnx_qdq import build_qdq_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    src = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("MaxPool", ["x"], ["p", "indices"], kernel_shape=[2, 2]),
                helper.make_node("LayerNormalization", ["p", "s"], ["y", "", "inv_std"], axis=-1),
            ],
            "g",
            [x],
            [y],
            [helper.make_tensor("s", TensorProto.FLOAT, [4], [1.0] * 4)],
        ),
        opset_imports=[helper.make_opsetid("", 21)],
    )
    model = from_onnx(src)
    assert [len(n.outputs) for n in model.graph] == [2, 3]  # the omitted Mean got a name too
    for precision in ("fp32", "fp16"):
        proto, _ = build_qdq_onnx(model, precision, 21)
        outs = {n.op_type: list(n.output) for n in proto.graph.node}
        assert len(outs["MaxPool"]) == 1 and len(outs["LayerNormalization"]) == 1, outs
