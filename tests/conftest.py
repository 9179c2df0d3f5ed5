"""Shared fixtures: small IR graphs, exported example models, and an isolated CLI runner."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

from edgec import ir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, os.path.join(EXAMPLES, "models"))


FULL = os.environ.get("EDGEC_FULL_TESTS") == "1"


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.full``: a heavier sibling of a test CI already runs (another type or model through the same
    path). CI keeps to its 25-minute budget with the sample; EDGEC_FULL_TESTS=1 runs these too. A skipped one is
    listed with this reason (``-ra``), never dropped silently."""
    if FULL:
        return
    skip = pytest.mark.skip(reason="full matrix only: EDGEC_FULL_TESTS=1 runs it (CI runs its sampled sibling)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"edgec_bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def bench_script():
    """:func:`load_benchmark`, for tests (a test module cannot import this conftest by name: tests/llm has one too;
    not named ``benchmark``, which is pytest-benchmark's fixture where that plugin is installed)."""
    return load_benchmark


@pytest.fixture(scope="session")
def node_suite(tmp_path_factory):
    """The node-suite harness (benchmarks/coverage.py) and a function that writes the named cases of onnx's
    backend node suite into a fresh folder and returns it; the per-target sample tests share both."""
    cov = load_benchmark("coverage")

    def cases(names) -> str:
        return cov.materialize(str(tmp_path_factory.mktemp("nodecases")), list(names))

    return cov, cases


@pytest.fixture(autouse=True)
def _compile_cache(tmp_path, monkeypatch):
    """Each test gets its own empty compile cache: no test is served another test's (or a previous run's)
    artifact, and the user's ~/.cache stays untouched."""
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "edgec-cache"))


def mlp_model(seed: int = 0) -> ir.Model:
    """x[2,8] -> Linear(16) -> Relu -> Linear(4): a minimal valid model with real numbers."""
    rng = np.random.default_rng(seed)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (2, 8))
    w1 = g.add_const("w1", rng.standard_normal((16, 8)).astype(np.float32))
    b1 = g.add_const("b1", rng.standard_normal(16).astype(np.float32))
    w2 = g.add_const("w2", rng.standard_normal((4, 16)).astype(np.float32))
    h = g.op("Linear", [x, w1, b1], domain="edgec", name="fc1").output
    r = g.op("Relu", [h], name="relu").output
    y = g.op("Linear", [r, w2], domain="edgec", name="fc2").output
    g.outputs.append(y)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


@pytest.fixture
def mlp() -> ir.Model:
    return mlp_model()


@pytest.fixture(scope="session")
def tiny_cnn_path() -> str:
    return os.path.join(EXAMPLES, "models", "tiny_cnn.onnx")
