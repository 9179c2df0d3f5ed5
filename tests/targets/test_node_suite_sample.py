"""A sample of onnx's backend node suite on the cpu target, through ``benchmarks/coverage.py``'s own harness
(materialize, bind parameter inputs, compile, run, compare as onnx's runner does). Every case named here is
``pass`` or an honest ``refused``, never a wrong answer or a raw exception: it includes every case that was
once measured wrong. The whole suite is ``python benchmarks/coverage.py --targets cpu``."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("tvm")
pytest.importorskip("onnx")


# case -> the category it must get on cpu
CASES = {
    # once wrong: negative indices, integer Div, Reduce axes / empty sets, Size, pool dilations, 0-d inputs
    "test_gather_negative_indices": "pass",
    "test_gather_elements_negative_indices": "pass",
    "test_div_int32_trunc": "pass",
    "test_reduce_sum_default_axes_keepdims_example": "pass",
    "test_reduce_mean_default_axes_keepdims_random": "pass",
    "test_reduce_sum_empty_axes_input_noop": "pass",
    "test_reduce_max_empty_set": "pass",
    "test_reduce_min_empty_set": "pass",
    "test_reduce_max_empty_set_bool": "pass",
    "test_reduce_max_bool_inputs": "pass",
    "test_reduce_sum_empty_set_non_reduced_axis_zero": "refused",
    "test_size": "pass",
    "test_size_example": "pass",
    "test_averagepool_2d_dilations": "pass",
    "test_averagepool_1d_default": "pass",
    "test_maxpool_3d_default": "pass",
    "test_clip_min_greater_than_max": "pass",
    "test_clip_default_int8_max": "pass",
    "test_clip_example_expanded": "pass",
    # once raw exceptions in the builder
    "test_layer_normalization_4d_axis1": "pass",
    "test_batchnorm_example": "pass",
    "test_batchnorm_example_training_mode": "refused",
    "test_cast_FLOAT_to_FLOAT4E2M1": "pass",  # legalize-dtypes (raw AttributeError before)
    "test_cast_FLOAT_to_FLOAT8E4M3FN": "pass",
    "test_max_example": "pass",
    "test_min_one_input": "pass",
    "test_maxpool_with_argmax_2d_precomputed_pads": "refused",
    "test_reshape_allowzero_reordered": "refused",
    # native lowerings across families
    "test_conv_with_strides_padding": "pass",
    "test_matmul_3d": "pass",
    "test_softmax_axis_1": "pass",
    "test_slice_negative_axes": "pass",
    "test_transpose_all_permutations_3": "pass",
    "test_where_long_example": "pass",
    "test_expand_dim_changed": "pass",
    "test_gathernd_example_int32_batch_dim1": "pass",
    # through TVM's ONNX converters (fallback_ops)
    "test_argmax_keepdims_example": "pass",
    "test_tile": "pass",
    "test_split_equal_parts_1d_opset18": "pass",
    "test_leakyrelu": "pass",
    "test_gemm_all_attributes": "pass",
    "test_cumsum_1d_exclusive": "pass",
    "test_constant_pad": "pass",
    "test_attention_23_fullymasked_qk_matmul_output_mode3_zero_expanded": "pass",  # ReduceMax of -inf rows
    # converter variants measured wrong or failing: rewritten by decompose, else refused by name
    "test_resize_downsample_scales_linear": "pass",
    "test_resize_downsample_sizes_nearest_not_larger": "pass",
    "test_mod_float_edge_cases_fmod_0_float32": "pass",  # numpy's remainder: fmod, then the divisor's sign
    "test_top_k_uint64": "refused",
    "test_isinf": "pass",  # decomposed (IsInf is not a fallback op: TVM gets detect_negative wrong)
    # native lowerings and decompose rules added for breadth
    "test_cumprod_1d_reverse_exclusive": "pass",  # TVM's cumprod between flips
    "test_bitshift_right_int8_negative_input": "pass",  # arithmetic shift on a power table
    "test_onehot_negative_indices": "pass",
    "test_qlinearconv": "pass",  # int32 products, requantized
    "test_lstm_with_peepholes": "pass",  # unrolled, run-time sequence lengths
    "test_resize_tf_crop_and_resize_extrapolation_value": "pass",  # a map per axis, a constant mask
    "test_rotary_embedding": "pass",  # an empty pass-through part eliminated
    "test_if": "pass",  # run-time cond: both branches and Where
    "test_scan9_sum": "pass",  # unrolled
    # element types held in storage types (legalize-dtypes), exact conversions
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ": "pass",
    "test_cast_e8m0_FLOAT_to_FLOAT8E8M0": "pass",
    "test_castlike_BFLOAT16_to_FLOAT_expanded": "pass",
    "test_dequantizelinear_int4": "pass",
    "test_quantizelinear_e4m3fn": "pass",
    "test_quantizelinear_blocked_asymmetric": "pass",  # TVM's converter refuses blocks: decomposed
    # more rules: training optimizers, Dropout's mask, linear maps measured on the reference
    "test_adam_multiple": "pass",
    "test_nesterov_momentum": "pass",
    "test_dropout_default_mask": "pass",
    "test_dft_irfft_opset19": "pass",
    "test_col2im_dilations": "pass",
    "test_dft_inverse": "refused",  # cancellation noise: not reproducible
}


@pytest.fixture(scope="module")
def suite(node_suite):
    cov, cases = node_suite
    return cov, cases(CASES)


def test_fallback_ops_are_tvm_converters():
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    from edgec.api.relax import FALLBACK_OPS, supported_ops
    from edgec.targets.cpu import CpuTarget

    assert FALLBACK_OPS <= set(_get_convert_map())
    assert CpuTarget.capabilities.fallback_ops == FALLBACK_OPS - supported_ops()
    assert CpuTarget.capabilities.accepts("Tile") and not CpuTarget.capabilities.accepts("BitShift")


def test_the_sample_exists(suite):
    cov, root = suite
    missing = sorted(set(CASES) - {os.path.basename(c) for c in cov.list_cases(root)})
    assert not missing, f"cases no longer in onnx's suite: {missing}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_node_case(suite, case):
    cov, root = suite
    cat, detail = cov.run_case(os.path.join(root, case), "cpu")
    assert cat == CASES[case], f"{case}: {cat} ({detail})"
