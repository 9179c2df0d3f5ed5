"""cpu{tune=N}: MetaSchedule searches the matmul / convolution kernels on this machine, keeps what it finds in a
database per CPU in the compile cache, and a later compile with the same kernels reuses it without searching."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("tvm")
pytestmark = pytest.mark.slow  # each search builds and times candidate kernels (about a minute)


def _model(path) -> str:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 128])],
        [w],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def _records(cache) -> int:
    root = cache / "tuning"
    (db,) = list(root.iterdir())  # one database: this CPU's
    return sum(1 for _ in open(db / "records.json"))


def test_tuned_kernels_verify_and_the_database_is_reused(tmp_path):
    from edgec import compile as compile_model

    src = _model(tmp_path / "m.onnx")
    cache = tmp_path / "cache"
    first = compile_model(src, target="cpu{tune=4}", output=str(tmp_path / "a"), verify=True, cache_dir=str(cache))
    assert first.manifest["verification"]["passed"]
    n = _records(cache)
    assert n >= 5  # every trial of the one kernel is recorded, and the default schedule's time beside them
    (db,) = list((cache / "tuning").iterdir())
    traces = [json.dumps(json.loads(line)) for line in open(db / "records.json")]
    # the default schedule (schedule.py's register tile: a cache_write to "local") was timed and recorded
    assert any('"local"' in t and "DecomposeReduction" in t and "Unroll" in t for t in traces)
    # a second compile of the same kernels (not served from the compile cache) reuses the database: no new trials
    second = compile_model(
        src, target="cpu{tune=4}", output=str(tmp_path / "b"), verify=True, cache_dir=str(cache), use_cache=False
    )
    assert second.manifest["verification"]["passed"] and _records(cache) == n
    x = np.random.default_rng(1).standard_normal((32, 128)).astype(np.float32)
    from edgec.targets.cpu import CpuTarget

    a = CpuTarget().run_artifact(str(tmp_path / "a"), {"x": x})[0]
    w = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    np.testing.assert_allclose(a, np.maximum(x @ w, 0), rtol=1e-4, atol=1e-4)
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["target"]["spec"] == "cpu{tune=4}"


def test_tuning_a_library_for_another_cpu_is_refused(tmp_path):
    from edgec import compile as compile_model
    from edgec.errors import UnsupportedError

    src = _model(tmp_path / "m.onnx")
    with pytest.raises(UnsupportedError, match="tune= measures candidate kernels on this machine"):
        compile_model(src, target="cpu{tune=4,mcpu=x86-64-v3}", output=str(tmp_path / "a"), use_cache=False)
    assert not os.path.exists(tmp_path / "a")


def test_a_kernel_metaschedule_cannot_search_keeps_its_default_schedule(tmp_path):
    """BERT's attention scores (MatMul, then + Where(mask)): MetaSchedule's design space fails on the kernel (a
    compute_at whose producer is outside the loop). The compile warns, names the kernel, and keeps the default
    schedule, which is timed and recorded in the database like a candidate; the artifact verifies."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgec import compile as compile_model

    k = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1, 4, 16, 32)).astype(np.float32), "k")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    neg = numpy_helper.from_array(np.full((), -1e9, np.float32), "neg")
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["q", "k"], ["s"]),
            helper.make_node("Where", ["mask", "zero", "neg"], ["b"]),
            helper.make_node("Add", ["s", "b"], ["y"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 4, 32, 16]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 1, 32, 32]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])],
        [k, zero, neg],
    )
    src = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), src)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match=r"MetaSchedule could not search 1 of 1 kernels; they keep the default"):
        res = compile_model(src, target="cpu{tune=2}", output=str(tmp_path / "a"), verify=True, cache_dir=str(cache))
    assert res.manifest["verification"]["passed"]
    assert _records(cache) >= 1  # the default schedule's time
