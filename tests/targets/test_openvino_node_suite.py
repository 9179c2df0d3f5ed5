"""A sample of onnx's backend node suite on the openvino target, through benchmarks/coverage.py's own harness
(materialize, bind parameters, compile, run on the CPU plugin, compare as onnx's runner does). The whole suite
runs in ``python benchmarks/coverage.py --targets openvino``; this sample covers every op family the target
lowers natively, the ONNX-frontend fallback, and every case that was once a silent wrong answer or a raw
exception. Each case must pass, or be refused by name where listed: never a wrong result or a crash."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnx")


PASS = [
    # once wrong or crashing on openvino
    "test_maxpool_2d_ceil_output_size_reduce_by_one",  # ceil mode dropped no window starting in the padding
    "test_averagepool_2d_ceil_last_window_starts_on_pad",
    "test_reduce_max_empty_set",  # -inf, not the finite lowest
    "test_reduce_min_empty_set",
    "test_reduce_max_empty_set_bool",  # bool: any / all (refused before)
    "test_identity",  # an output that is an input: the input kept its name
    "test_pow_bcast_scalar",  # a 0-d input fed as [1]
    "test_clip_default_int8_min_expanded",
    "test_reduce_sum_default_axes_keepdims_example",  # empty axes: reduce everything
    "test_reduce_mean_default_axes_keepdims_random",
    "test_reduce_sum_empty_axes_input_noop",
    "test_layer_normalization_2d_axis0",  # Mean / InvStdDev outputs (KeyError)
    "test_layer_normalization_4d_axis_negative_2",
    "test_maxpool_with_argmax_2d_precomputed_pads",  # Indices output (KeyError)
    "test_max_example",  # variadic Max / Min
    "test_min_one_input",
    "test_div_int32_trunc",  # integer Div truncates
    "test_div_uint8",
    "test_clip_min_greater_than_max",
    "test_pow_types_float32_int64",
    "test_attention_23_boolmask_fullymasked_row_nan_robustness_expanded",  # ReduceMax of only -inf
    # native lowerings
    "test_gather_negative_indices",
    "test_gather_elements_negative_indices",
    "test_conv_with_strides_and_asymmetric_padding",
    "test_matmul_3d",
    "test_softmax_axis_0",
    "test_slice_negative_axes",
    "test_size_example",
    # more dtypes
    "test_max_float16",
    "test_div_uint32",
    # through OpenVINO's ONNX frontend
    "test_top_k_negative_axis",
    "test_convtranspose_pads",
    "test_gemm_default_no_bias",
    "test_lstm_defaults",
    "test_argmax_default_axis_example_select_last_index",
    "test_resize_upsample_scales_linear_align_corners",
    "test_mod_mixed_sign_int32",
    "test_onehot_negative_indices",
    "test_reduce_l2_empty_set",
    "test_instancenorm_example",
    "test_cumsum_2d_int32",
    "test_tile_precomputed",
    "test_scatter_elements_with_negative_indices",
    "test_depthtospace_crd_mode_example",
    # variants the frontend computes wrongly (or AvgPool-16, which crashes the CPU plugin), rewritten by decompose
    "test_averagepool_2d_dilations",  # strided slices
    "test_resize_downsample_scales_linear_antialias",  # a map per axis
    "test_lstm_batchwise",  # unrolled
    "test_spacetodepth_crd_mode_example",
    # element types held in storage types, training optimizers, Dropout's mask, measured linear maps
    "test_cast_FLOAT_to_FLOAT4E2M1",  # AttributeError, then refused, before
    "test_castlike_FLOAT8E5M2_to_FLOAT16_expanded",
    "test_dequantizelinear_e4m3fn_zero_point",
    "test_adagrad_multiple",
    "test_dropout_default_mask",
    "test_dft_rfft",
]
REFUSED = [
    "test_batchnorm_example_training_mode",  # KeyError before
    "test_maxpool_with_argmax_2d_precomputed_strides",  # column-major indices
    "test_dynamicquantizelinear",
    "test_quantizelinear_int4",  # the CPU plugin's Divide is not correctly rounded
    "test_mod_float32_mixed_sign_fmod_0",
    "test_max_float64",  # computed in f32 by the CPU plugin
]


@pytest.fixture(scope="module")
def harness(node_suite):
    cov, cases = node_suite
    return cov, cases(PASS + REFUSED)


def test_the_sample_exists(harness):
    cov, data = harness
    missing = sorted(set(PASS + REFUSED) - {os.path.basename(c) for c in cov.list_cases(data)})
    assert not missing, f"not in this onnx's node suite: {missing}"


@pytest.mark.parametrize("case", PASS)
def test_case_passes(harness, case):
    cov, data = harness
    cat, detail = cov.run_case(os.path.join(data, case), "openvino")
    assert cat == "pass", f"{case}: {cat}: {detail}"


@pytest.mark.parametrize("case", REFUSED)
def test_case_is_refused_by_name(harness, case):
    cov, data = harness
    cat, detail = cov.run_case(os.path.join(data, case), "openvino")
    assert cat == "refused", f"{case}: {cat}: {detail}"
    assert detail.startswith("UnsupportedError"), detail


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceLogSum", "ReduceLogSumExp"])
def test_opset13_reduction_axes_attribute_is_kept(harness, tmp_path, op):
    """OpenVINO's ONNX frontend ignores these ops' axes attribute (opset < 18) and reduces everything: they are
    not given to it; decompose rewrites them through ReduceSum."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    import edgec
    from edgec.compiler import parse_target

    cov, _ = harness
    g = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], axes=[0, 2], keepdims=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_empty_tensor_value_info("y")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "m.onnx"))
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32) + 3
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    res = edgec.compile(str(tmp_path / "m.onnx"), target="openvino", output=str(tmp_path / "out"), use_cache=False)
    got = parse_target("openvino").run_artifact(res.output_dir, {"x": x}, ["x"])
    assert cov.compare(want, list(got)) == ("pass", "")
