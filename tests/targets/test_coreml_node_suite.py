"""A sample of onnx's backend node suite on the coreml target, through benchmarks/coverage.py's own harness
(materialize, bind parameters, compile, run the saved .mlpackage on edgec's MIL evaluator off macOS, compare as
onnx's runner does, at fp16 tolerance for float outputs: the target computes in fp16 by design). The whole suite
runs in ``python benchmarks/coverage.py --targets coreml``; this sample covers the op families the target
lowers, the decompose pass's rewrites into them, and cases that were once a raw exception or a wrong answer.
Each case must pass, or be refused by name where listed: never a wrong result or a crash."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("coremltools")
pytest.importorskip("onnx")


PASS = [
    # once a raw exception or a wrong answer on coreml
    "test_reduce_sum_default_axes_keepdims_example",  # no axes: every axis (TypeError / dtype error before)
    "test_reduce_max_default_axes_keepdim_example",
    "test_reduce_sum_empty_axes_input_noop",  # noop_with_empty_axes
    "test_and2d",  # bool inputs entered as int32
    "test_equal",  # bool outputs came back as int32
    "test_where_example",
    "test_div_int32_trunc",  # integer Div truncates (floor_div floored)
    "test_pow_bcast_scalar",  # a 0-d input
    "test_layer_normalization_2d_axis0",  # run-time scale / bias
    "test_convtranspose_pads",
    "test_matmul_1d_1d",
    "test_spacetodepth_crd_mode_example",
    # native lowerings
    "test_log",
    "test_cos",
    "test_celu",
    "test_mod_mixed_sign_int32",
    "test_argmax_default_axis_example_select_last_index",
    "test_hardmax_example",
    "test_top_k",
    "test_split_equal_parts_1d_opset18",
    "test_slice_neg_steps",
    "test_gather_elements_negative_indices",
    "test_tile_precomputed",
    "test_constant_pad",
    "test_onehot_negative_indices",
    "test_cumsum_2d_int32",
    "test_convtranspose_1d",
    "test_batchnorm_example",
    "test_lrn",
    "test_resize_upsample_scales_nearest",
    "test_resize_upsample_scales_linear_align_corners",
    "test_scatter_elements_with_negative_indices",
    "test_scatternd",
    "test_compress_0",
    "test_dequantizelinear",
    "test_l2normalization_axis_0",  # a zero norm gives 0, not NaN
    # through the decompose pass
    "test_resize_upsample_sizes_nearest_floor_align_corners",  # MIL's nearest grid differs (wrong once): a Gather
    "test_resize_downsample_scales_cubic_antialias",  # variants the lowering declines: one matrix per axis
    "test_resize_tf_crop_and_resize_axes_3_2",
    "test_reduce_l1_default_axes_keepdims_example_expanded",
    "test_clip_default_max_expanded",
    # more dtypes: f16 computed as is, narrow integers wrapped to their range
    "test_max_float16",
    "test_mul_int16",
    "test_add_uint8",
    # integer and quantization ops by exact int32 / fp32 arithmetic
    "test_quantizelinear_axis",
    "test_bitwise_and_ui8_bcast_4v3d",
    "test_bitwise_xor_i16_3d",
    "test_bitwise_not_3d",
    "test_shrink_soft",
    "test_reduce_max_bool_inputs",
    "test_wrap_pad",
    "test_reflect_pad",
    # 3-D pooling, LpPool of any p (the window's sum of |x|^p from avg_pool, then the p-th root)
    "test_maxpool_3d_default",
    "test_averagepool_3d_default",
    "test_lppool_2d_pads",
    "test_lppool_3d_default",
]
# beyond fp16's range or precision: right under precision=fp32 (at onnx's own tolerance)
FP32 = [
    "test_softmax_large_number",
    "test_logsoftmax_large_number_expanded",
    "test_reduce_prod_default_axes_keepdims_example",  # 479001600
    "test_tan",  # near a pole
    "test_dynamicquantizelinear_expanded",  # its scale computed in fp16 moves a rounding
    "test_cast_FLOAT_to_FLOAT8E4M3FN",  # legalize-dtypes: encodings need float32 compute
    "test_quantizelinear_uint4",
]
REFUSED = [
    "test_maxpool_with_argmax_2d_precomputed_pads",  # the Indices output (KeyError before)
    "test_maxpool_2d_ceil_output_size_reduce_by_one",  # ONNX drops a window MIL keeps (wrong shape before)
    "test_unsqueeze_three_axes",  # rank 6: Core ML has rank <= 5
    "test_training_dropout",
    "test_cast_FLOAT16_to_FLOAT8E5M2",  # encodings refused under fp16 compute
]


@pytest.fixture(scope="module")
def harness(node_suite):
    cov, cases = node_suite
    return cov, cases(PASS + FP32 + REFUSED)


@pytest.mark.slow
def test_the_sample_exists(harness):
    cov, data = harness
    missing = sorted(set(PASS + FP32 + REFUSED) - {os.path.basename(c) for c in cov.list_cases(data)})
    assert not missing, f"not in this onnx's node suite: {missing}"


@pytest.mark.parametrize("case", PASS)
def test_case_passes(harness, case):
    cov, data = harness
    cat, detail = cov.run_case(os.path.join(data, case), "coreml")
    assert cat == "pass", f"{case}: {cat}: {detail}"


@pytest.mark.parametrize("case", FP32)
def test_case_passes_in_fp32(harness, case):
    cov, data = harness
    cat, detail = cov.run_case(os.path.join(data, case), "coreml{precision=fp32}")
    assert cat == "pass", f"{case}: {cat}: {detail}"


@pytest.mark.parametrize("case", REFUSED)
def test_case_is_refused_by_name(harness, case):
    cov, data = harness
    cat, detail = cov.run_case(os.path.join(data, case), "coreml")
    assert cat == "refused", f"{case}: {cat}: {detail}"
    assert detail.startswith("UnsupportedError"), detail
