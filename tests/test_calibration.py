"""Calibration data loading: formats, deterministic sampling, and clear errors on mismatches."""

import warnings

import numpy as np
import pytest

from edgec import ir
from edgec.calibration import CalibrationWarning, load_calibration
from edgec.errors import BadInputError, UnsupportedError


def model_two_inputs():
    g = ir.Graph()
    a = g.add_input("a", ir.DType.FLOAT32, (1, 4))
    b = g.add_input("b", ir.DType.INT64, (1, 3))
    g.outputs.append(g.op("Relu", [a], name="r").output)
    g.outputs.append(g.op("Neg", [b], name="n").output)
    return ir.Model(g)


def test_npz_with_sample_axis_and_single_sample(tmp_path, mlp):
    x = np.random.default_rng(0).standard_normal((5, 2, 8)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    cs = load_calibration(str(tmp_path / "c.npz"), mlp)
    assert len(cs) == 5 and cs.samples[2]["x"].shape == (2, 8)
    np.testing.assert_array_equal(cs.samples[2]["x"], x[2])
    np.savez(tmp_path / "one.npz", x=x[0])
    assert len(load_calibration(str(tmp_path / "one.npz"), mlp)) == 1


def test_folder_of_npz_and_npy(tmp_path, mlp):
    rng = np.random.default_rng(1)
    d = tmp_path / "calib"
    d.mkdir()
    for i in range(3):
        np.save(d / f"s{i}.npy", rng.standard_normal((2, 8)).astype(np.float32))
    np.savez(d / "more.npz", x=rng.standard_normal((4, 2, 8)).astype(np.float32))
    assert len(load_calibration(str(d), mlp)) == 7


def test_deterministic_subsampling(tmp_path, mlp):
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((50, 2, 8)).astype(np.float32))
    a = load_calibration(str(tmp_path / "c.npz"), mlp, seed=3, max_samples=10)
    b = load_calibration(str(tmp_path / "c.npz"), mlp, seed=3, max_samples=10)
    assert len(a) == 10
    for s, t in zip(a.samples, b.samples):
        np.testing.assert_array_equal(s["x"], t["x"])


def test_random_warns(mlp):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cs = load_calibration("random", mlp)
    assert any(issubclass(x.category, CalibrationWarning) for x in w) and len(cs) == 8


def test_mismatches_are_all_reported(tmp_path):
    m = model_two_inputs()
    np.savez(tmp_path / "bad.npz", a=np.zeros((2, 1, 5), np.float32), c=np.zeros(3))
    with pytest.raises(BadInputError) as e:
        load_calibration(str(tmp_path / "bad.npz"), m)
    msg = str(e.value)
    assert "missing inputs ['b']" in msg and "unknown arrays ['c']" in msg and "a: shape [2, 1, 5]" in msg
    np.savez(tmp_path / "dtype.npz", a=np.zeros((1, 4), np.float32), b=np.zeros((1, 3), np.float32))
    with pytest.raises(BadInputError, match="b: dtype float32 does not match the model's i64"):
        load_calibration(str(tmp_path / "dtype.npz"), m)


def test_unreadable_and_unsupported_inputs(tmp_path, mlp):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="not a readable .npz"):
        load_calibration(str(tmp_path / "junk.npz"), mlp)
    with pytest.raises(BadInputError, match="does not exist"):
        load_calibration(str(tmp_path / "nope.npz"), mlp)
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(UnsupportedError, match="needs a language model"):
        load_calibration(str(tmp_path / "t.txt"), mlp)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no .npz or .npy"):
        load_calibration(str(tmp_path / "empty"), mlp)
    np.save(tmp_path / "x.npy", np.zeros((2, 8), np.float32))
    with pytest.raises(BadInputError, match="expected a .npz file"):
        load_calibration(str(tmp_path / "x.npy"), mlp)
