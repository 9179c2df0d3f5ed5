"""codebook palettes: 1-D k-means quality, and importance-weighted k-means (objective=output)."""

import numpy as np
import pytest

from edgec import ir
from edgec.host import host
from edgec.ir.passes import PassContext, PassManager, parse_pipeline
from edgec.plugins.quantize import methods


def _optimal_sse(x: np.ndarray, k: int) -> float:
    """Exact 1-D k-means by dynamic programming over the sorted values (O(k m^2): small inputs only)."""
    v = np.sort(x.astype(np.float64))
    m = v.size
    s1, s2 = np.concatenate([[0], np.cumsum(v)]), np.concatenate([[0], np.cumsum(v * v)])
    j, i = np.meshgrid(np.arange(m + 1), np.arange(m + 1), indexing="ij")
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(i > j, s2[i] - s2[j] - (s1[i] - s1[j]) ** 2 / np.maximum(i - j, 1), np.inf)  # [j, i]
    d = c[0].copy()
    for _ in range(k - 1):
        d = np.min(d[:, None] + c, axis=0)
    return float(d[m])


@pytest.mark.parametrize("dist", ["normal", "laplace", "student-t3"])
def test_kmeans_1d_is_optimal(dist):
    """Optimal on the float16-rounded values: within 0.1% of the float32 optimum (an O(k m^2) reference)."""
    rng = np.random.default_rng(1)
    x = {
        "normal": lambda n: rng.standard_normal(n),
        "laplace": lambda n: rng.laplace(size=n),
        "student-t3": lambda n: rng.standard_t(3, n),
    }[dist](1500).astype(np.float32)
    cent, lab = methods.kmeans_1d(x, 8)
    sse = float(np.sum((x.astype(np.float64) - cent[lab]) ** 2))
    assert sse <= 1.001 * _optimal_sse(x, 8)
    h = x.astype(np.float16).astype(np.float64)  # and exactly optimal on the values it clusters
    cent16 = methods.optimal_1d(*[a.astype(np.float64) for a in np.unique(h, return_counts=True)], 8)
    assert np.sum(
        (h - np.sort(cent16)[np.searchsorted((np.sort(cent16)[1:] + np.sort(cent16)[:-1]) / 2, h)]) ** 2
    ) <= _optimal_sse(h, 8) * (1 + 1e-9)
    # labels are the nearest centroid
    assert (np.abs(x[:, None] - cent[None]).argmin(1) == lab).all()


def _fresh(w, k):
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (8, k))
    g.outputs.append(g.op("Linear", [x, g.add_const("w", w)], domain="edgec", name="fc").output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


@pytest.mark.parametrize("extra", ["", ",per_channel_codebook=true", ",group=16"])
def test_importance_weighted_palette_lowers_output_error(extra):
    """Inputs whose channels differ 30x in energy: weighting each weight's k-means error by its channel's
    energy (objective=output) gives a lower layer-output error than the plain palette."""
    from edgec.calibration import CalibrationSet

    rng = np.random.default_rng(0)
    k = 64
    w = rng.standard_normal((32, k)).astype(np.float32)
    gain = np.where(np.arange(k) % 8 == 0, 30.0, 1.0).astype(np.float32)
    calib = CalibrationSet([{"x": (rng.standard_normal((8, k)) * gain).astype(np.float32)} for _ in range(8)], "test")
    errs = {}
    for obj in ("weight", "output"):
        m = _fresh(w, k)
        PassManager(
            parse_pipeline(
                f"quantize{{method=codebook,bits=3,head_bits=3,objective={obj}{extra}}}", host().passes.as_dict()
            )
        ).run(m, PassContext(calibration=calib))
        errs[obj] = m.reports["edgec.quantization"]["w"]["rel_output_error"]
    # Shared palettes gain less (the loud channels' weights follow the same distribution as the rest).
    assert errs["output"] < (0.98 if extra == "" else 0.8) * errs["weight"], errs


def test_output_objective_palettes_on_convs(tiny_cnn_path):
    """objective=output on a CNN (per-tensor palettes, GPTQ assignment through the im2col Hessian): a valid
    codebook grid whose output error is below the plain palette's on every layer."""
    import warnings

    from edgec.calibration import load_calibration
    from edgec.compiler import fix_input_shapes, load_model
    from edgec.ir import QuantizedTensor

    errs = {}
    for obj in ("weight", "output"):
        m = load_model(tiny_cnn_path)
        fix_input_shapes(m, {}, [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calib = load_calibration("random", m, seed=0)
        PassManager(
            parse_pipeline(f"quantize{{method=codebook,bits=3,head_bits=3,objective={obj}}}", host().passes.as_dict())
        ).run(m, PassContext(calibration=calib))
        qs = [v.const for v in m.graph.initializers.values() if isinstance(v.const, QuantizedTensor)]
        assert qs and all(q.scheme == "codebook" and q.validate() == [] for q in qs)
        errs[obj] = {r["node"]: r["rel_output_error"] for r in m.reports["edgec.quantization"].values()}
    assert all(errs["output"][k] < errs["weight"][k] for k in errs["weight"]), errs
