"""Sensitivity analysis, the exact bit-allocation solver, mixed-precision{avg_bits,size_mb,max_drop} and
property checks."""

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgec import ir
from edgec.calibration import CalibrationSet as Calibration
from edgec.errors import UsageError
from edgec.host import host
from edgec.ir.passes import PassContext, parse_pipeline
from edgec.plugins.mixed import sensitivity as sens_mod
from edgec.plugins.mixed.mixed_precision import REPORT_KEY
from edgec.plugins.mixed.solver import allocate, pareto_front


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _mlp(seed=0, rows=16):
    """A 4-layer classifier whose layers differ in sensitivity (one has large outlier weights, the head is
    small and sits right before the logits)."""
    rng = np.random.default_rng(seed)
    g = ir.Graph()
    h = g.add_input("x", ir.DType.FLOAT32, (rows, 32))
    dims = [(32, 64), (64, 64), (64, 48), (48, 10)]
    for i, (k, n) in enumerate(dims):
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        if i == 1:
            w[::7, ::5] *= 12.0  # outliers: coarse grids hurt this layer most
        h = g.op("Linear", [h, g.add_const(f"w{i}", w)], domain="edgec", name=f"fc{i}").output
        if i < len(dims) - 1:
            h = g.op("Relu", [h], name=f"relu{i}").output
    g.outputs.append(h)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def _ctx(m, n=16, seed=1, target=None):
    rng = np.random.default_rng(seed)
    samples = [{"x": rng.standard_normal((16, 32)).astype(np.float32)} for _ in range(n)]
    h = host()
    return PassContext(
        target=target,
        config={"seed": 0},
        calibration=Calibration(samples, "test"),
        passes=h.passes.as_dict(),
        checks=h.checks.as_dict(),
    )


def _run(pipe, m, ctx):
    for p in parse_pipeline(pipe, host().passes.as_dict()):
        p.run(m, ctx)
    return m.reports[REPORT_KEY]


def test_solver_is_exact_on_brute_forceable_cases():
    rng = np.random.default_rng(0)
    for _ in range(300):
        opts = [
            [(int(rng.integers(1, 60)), float(rng.random())) for _ in range(rng.integers(1, 4))]
            for _ in range(rng.integers(1, 6))
        ]
        budget = int(rng.integers(5, 200))
        best = None
        for comb in itertools.product(*[range(len(o)) for o in opts]):
            s = sum(opts[i][j][0] for i, j in enumerate(comb))
            c = sum(opts[i][j][1] for i, j in enumerate(comb))
            if s <= budget and (best is None or c < best - 1e-12):
                best = c
        if best is None:
            with pytest.raises(ValueError, match="no allocation fits"):
                allocate(opts, budget)
            continue
        choice, size, cost = allocate(opts, budget)
        assert size <= budget and abs(cost - best) < 1e-9
        assert size == sum(opts[i][j][0] for i, j in enumerate(choice))
    front = pareto_front([[(1, 3.0), (2, 1.0)], [(1, 2.0), (4, 0.5)]])
    assert list(front.sizes) == sorted(front.sizes) and all(np.diff(front.costs) < 0)


def test_avg_bits_allocation_meets_the_budget_and_is_optimal():
    m = _mlp()
    ctx = _ctx(m)
    rep = _run("mixed-precision{avg_bits=4.5,bits=2:4:8}", m, ctx)
    params = sum(int(np.prod(v.shape)) for v in m.graph.initializers.values())
    assert rep["avg_bits"] <= 4.5 and rep["bytes"] * 8 <= 4.5 * params
    # every layer got what the allocation says, and the model's weights take exactly the reported bytes
    qs = {n.name: n.inputs[1].const for n in m.graph if n.qualified_op == "edgec::Linear"}
    assert sum(q.nbytes for q in qs.values()) == rep["bytes"]
    for w, b in rep["allocation"].items():
        assert any(q.bits == b for q in qs.values())
    # brute force over the measured table: nothing cheaper fits
    m2 = _mlp()
    s = sens_mod.analyse(m2, rep["candidates"], _ctx(m2), samples=8)
    assert s.cached
    best = None
    for comb in itertools.product(rep["candidates"], repeat=len(s.layers)):
        size = sum(s.table[w][c]["bytes"] for w, c in zip(s.layers, comb))
        cost = sum(s.cost(w, c, "kl") for w, c in zip(s.layers, comb))
        if size * 8 <= 4.5 * params and (best is None or cost < best):
            best = cost
    assert rep["predicted_cost"] == pytest.approx(best, rel=1e-9)
    assert len({b for b in rep["allocation"].values()}) > 1  # genuinely mixed


def test_size_mb_budget_counts_the_whole_model():
    m = _mlp()
    budget_mb = 0.009
    rep = _run(f"mixed-precision{{size_mb={budget_mb},bits=2:4:8}}", m, _ctx(m))
    assert m.size_bytes() <= budget_mb * 1e6
    assert rep["decided_by"] == "budget"


def test_sensitivity_is_cached_and_a_second_run_executes_nothing(monkeypatch):
    m = _mlp()
    cands = ["quantize{bits=2,head_bits=2}", "quantize{bits=8,head_bits=8}"]
    first = sens_mod.analyse(m, cands, _ctx(m), samples=4)
    assert not first.cached and set(first.layers) == {"w0", "w1", "w2", "w3"}
    for w in first.layers:  # 8 bits hurts less than 2 bits, everywhere
        lo, hi = first.table[w][cands[0]], first.table[w][cands[1]]
        assert hi["kl"] < lo["kl"] and hi["sqnr"] > lo["sqnr"] and hi["cosine"] > lo["cosine"]
        assert hi["bytes"] > lo["bytes"]

    def boom(*a, **k):
        raise AssertionError("a cached analysis must not run the model")

    monkeypatch.setattr(sens_mod, "ReferenceExecutor", boom)
    second = sens_mod.analyse(_mlp(), cands, _ctx(m), samples=4)
    assert second.cached and second.table == first.table
    with pytest.raises(AssertionError, match="must not run"):  # other calibration data: measured again
        sens_mod.analyse(_mlp(), cands, _ctx(m, seed=9), samples=4)


def _tied_mlp():
    """Linear layers where the first two share one weight (a tied head's situation): the weight is measured once,
    at its first node, which lands in another shard than the second."""
    rng = np.random.default_rng(3)
    g = ir.Graph()
    h = g.add_input("x", ir.DType.FLOAT32, (16, 32))
    shared = g.add_const("w_tied", (rng.standard_normal((32, 32)) / 6).astype(np.float32))
    ws = [shared, shared] + [
        g.add_const(f"w{i}", (rng.standard_normal(s) / 6).astype(np.float32)) for i, s in ((2, (48, 32)), (3, (10, 48)))
    ]
    for i, w in enumerate(ws):
        h = g.op("Linear", [h, w], domain="edgec", name=f"fc{i}").output
        if i < 3:
            h = g.op("Relu", [h]).output
    g.outputs.append(h)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


@pytest.mark.parametrize("make", [_mlp, _tied_mlp])
def test_sensitivity_sharded_on_worker_processes_equals_the_serial_table(make):
    """Layers in shards on 2 local processes (each loading the saved model, the same free weights, so the same
    session): every metric equal to the serial run's, bit for bit, float16 candidates and a weight shared by two
    layers in two shards included."""
    from edgec.api.executor import LocalExecutor

    m = make()
    cands = ["quantize{bits=2,head_bits=2}", "quantize{bits=4,head_bits=4}", sens_mod.FLOAT16]
    serial = sens_mod.analyse(m, cands, _ctx(m), samples=4, use_cache=False)
    ctx = _ctx(m)
    with LocalExecutor(workers=2) as ex:
        ctx.executor = ex
        sharded = sens_mod.analyse(make(), cands, ctx, samples=4, use_cache=False)
    assert sharded.layers == serial.layers and sharded.table == serial.table
    assert all(set(sharded.table[w]) == set(cands) for w in sharded.layers)


def test_a_failed_sensitivity_shard_is_named_with_the_way_out():
    from edgec.api.executor import Executor, TaskResult
    from edgec.errors import EdgecError

    class Dying(Executor):
        name = "dying"

        def run(self, fn, items, shared=None, on_done=None):
            return [TaskResult(i, False, error="its worker process died 3 times") for i in range(len(items))]

    m = _mlp()
    ctx = _ctx(m)
    ctx.executor = Dying(workers=2)
    with pytest.raises(
        EdgecError, match=r"task 1 of 4 \(group \d+\) failed on the dying executor: its worker .* \(no --workers"
    ):
        sens_mod.analyse(m, ["quantize{bits=4,head_bits=4}"], ctx, samples=2, use_cache=False)


def test_a_failing_property_check_changes_the_search():
    """max_drop alone accepts the smallest model; requiring every top-1 decision to survive rejects it,
    and the report names the check that decided."""
    m = _mlp()
    loose = _run("mixed-precision{max_drop=1000,bits=2:8}", m, _ctx(m))
    m2 = _mlp()
    strict = _run("mixed-precision{max_drop=1000,bits=2:8,checks=top1:0.97}", m2, _ctx(m2))
    assert loose["bytes"] < strict["bytes"]
    assert all(b == 2 for b in loose["allocation"].values())
    assert "top1:0.97" in strict["decided_by"]
    failed = [e for e in strict["evaluated"] if not e["passed"]]
    assert failed and all("top1" in e["failed_by"] for e in failed)
    assert all(e["checks"]["top1:0.97"]["passed"] for e in strict["evaluated"] if e["passed"])


def test_usage_errors_name_the_fix():
    reg = host().passes.as_dict()
    with pytest.raises(UsageError, match="exactly one of"):
        parse_pipeline("mixed-precision{bits=2:4}", reg)
    with pytest.raises(UsageError, match="exactly one of"):
        parse_pipeline("mixed-precision{avg_bits=4,size_mb=1}", reg)
    with pytest.raises(UsageError, match="'1' is not a candidate; use integer widths 2..8"):
        parse_pipeline("mixed-precision{avg_bits=4,bits=1:4}", reg)
    with pytest.raises(UsageError, match="'f32' is not a candidate"):
        parse_pipeline("mixed-precision{avg_bits=4,bits=4:f32}", reg)
    m = _mlp()
    with pytest.raises(UsageError, match="bits=f16 alone leaves nothing to choose"):
        _run("mixed-precision{avg_bits=4,bits=f16}", m, _ctx(m, target=host().targets["tensorrt"]()))
    m = _mlp()
    with pytest.raises(UsageError, match="smallest takes"):
        _run("mixed-precision{avg_bits=1,bits=4:8}", m, _ctx(m))
    m = _mlp()
    with pytest.raises(UsageError, match="unknown check 'nope'"):
        _run("mixed-precision{max_drop=1,bits=4:8,checks=nope:1}", m, _ctx(m))
    m = _mlp()
    with pytest.raises(UsageError, match=r"unknown GGUF types \['Q9_9'\]"):
        _run("mixed-precision{avg_bits=4,types=Q4_0:Q9_9}", m, _ctx(m))
    m = _mlp()
    coreml = host().targets["coreml"]()
    with pytest.raises(UsageError, match=r"coreml cannot encode the candidates 2; it carries 4:8:p1:.*:p8"):
        _run("mixed-precision{avg_bits=4,bits=2:4:8}", m, _ctx(m, target=coreml))
    m = _mlp()
    with pytest.raises(UsageError, match=r"openvino cannot encode the candidates f16;.*native mix: 4:8"):
        _run("mixed-precision{avg_bits=4,bits=4:f16}", m, _ctx(m, target=host().targets["openvino"]()))


def test_inspect_sensitivity_prints_plots_and_caches(tiny_cnn_path, tmp_path):
    from edgec.cli import main

    png = tmp_path / "s.png"
    r = CliRunner().invoke(
        main,
        ["inspect", tiny_cnn_path, "--sensitivity", "--calib", "random", "--bits", "2:8", "--plot", str(png), "--json"],
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{") :])
    assert not d["cached"] and len(d["layers"]) == 4 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(main, ["inspect", tiny_cnn_path, "--sensitivity", "--calib", "random", "--bits", "2:8"])
    assert r.exit_code == 0 and "(cached)" in r.output and "2 bit" in r.output
    r = CliRunner().invoke(main, ["inspect", tiny_cnn_path, "--sensitivity"])
    assert r.exit_code != 0 and "--calib" in r.output
    r = CliRunner().invoke(main, ["inspect", tiny_cnn_path, "--sensitivity", "--calib", "random", "--bits", "4,8"])
    assert r.exit_code == 2 and "'4,8' is not a candidate" in r.output


@pytest.mark.slow
def test_sensitivity_on_workers_from_the_cli_and_compile(tiny_cnn_path, tmp_path):
    """--workers 2 on inspect --sensitivity and on a mixed-precision compile: the same table and the same artifact
    as one worker; an unknown executor is a usage error."""
    from edgec.cli import main

    base = ["inspect", tiny_cnn_path, "--sensitivity", "--calib", "random", "--bits", "2:8", "--no-cache", "--json"]
    r = CliRunner().invoke(main, base)
    one = json.loads(r.output[r.output.index("{") :])
    two = CliRunner().invoke(main, [*base, "--workers", "2"])
    assert two.exit_code == 0, two.output
    assert json.loads(two.output[two.output.index("{") :])["table"] == one["table"]
    outs = []
    for w in ("1", "2"):
        out = tmp_path / f"m{w}"
        r = CliRunner().invoke(
            main,
            [
                "compile",
                tiny_cnn_path,
                "--target",
                "cpu",
                "-p",
                "mixed-precision{avg_bits=5,bits=2:8}",
                "--calib",
                "random",
                "--no-cache",
                "--workers",
                w,
                "-o",
                str(out),
                "--json",
            ],
        )
        assert r.exit_code == 0, r.output
        outs.append(json.loads(r.output[r.output.index("{") :])["manifest"]["files"])
    assert outs[0] == outs[1]
    r = CliRunner().invoke(main, [*base, "--executor", "spark"])
    assert r.exit_code == 2 and "--executor 'spark'" in r.output


@pytest.mark.slow
def test_footprint_tiers_fit_their_budgets_and_share_one_measurement(tiny_cnn_path, tmp_path):
    from edgec.compiler import compile_tiers, parse_size

    out = tmp_path / "tiers"
    index = compile_tiers(
        tiny_cnn_path,
        "cpu",
        "",
        str(out),
        ["5KB", "2KB", "3KB"],
        tier_options="bits=2:4:8",
        calib="random",
        verify=True,
    )
    rows = index["tiers"]
    assert [r["tier"] for r in rows] == ["5KB", "3KB", "2KB"]  # largest first
    for r in rows:
        assert r["weights_bytes"] <= parse_size(r["tier"]) and r["verification_passed"]
        assert (out / r["path"] / "manifest.json").exists()
    assert rows[0]["weights_bytes"] > rows[1]["weights_bytes"] > rows[2]["weights_bytes"]
    assert [r["mixed_precision"]["cached_sensitivity"] for r in rows] == [False, True, True]
    assert json.loads((out / "tiers.json").read_text())["tiers"] == rows
    with pytest.raises(UsageError, match="--calib"):
        compile_tiers(tiny_cnn_path, "cpu", "", str(tmp_path / "t2"), ["1MB"])
    with pytest.raises(UsageError, match="size '1 parsec'"):
        parse_size("1 parsec")
    assert not (tmp_path / "t2").exists()


@pytest.mark.slow
def test_footprint_tiers_as_tasks_on_workers_equal_the_serial_tiers(tiny_cnn_path, tmp_path, monkeypatch):
    """With 2 local workers the largest tier compiles here (measuring the sensitivities) and the other two are
    tasks at the same time, reading them from the cache: the same index and the same artifact bytes as the
    serial run (each run with its own empty caches)."""
    from edgec.api.executor import LocalExecutor
    from edgec.compiler import compile_tiers

    def tiers(name, executor=None):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache-{name}"))
        with executor or LocalExecutor(1) as ex:
            index = compile_tiers(
                tiny_cnn_path,
                "cpu",
                "",
                str(tmp_path / name),
                ["5KB", "2KB", "3KB"],
                tier_options="bits=2:4:8",
                calib="random",
                verify=True,
                executor=ex if executor else None,
            )
        files = {
            r["path"]: json.loads((tmp_path / name / r["path"] / "manifest.json").read_text())["files"]
            for r in index["tiers"]
        }
        return index, files

    calls = []

    class Counting(LocalExecutor):
        def run(self, fn, items, shared=None, on_done=None):
            calls.append((fn.__name__, len(items)))
            return super().run(fn, items, shared, on_done)

    serial = tiers("serial")
    parallel = tiers("parallel", Counting(workers=2))
    assert ("tier_task", 2) in calls
    assert parallel == serial
    assert [r["mixed_precision"]["cached_sensitivity"] for r in parallel[0]["tiers"]] == [False, True, True]


@pytest.mark.slow
@pytest.mark.parametrize("target, avg_bits", [("openvino", 6), ("tensorrt", 12), ("coreml", 4)])
def test_target_native_mix_is_the_default_and_the_artifact_carries_it(target, avg_bits, tmp_path):
    """Without bits=, the candidates are the target's native per-layer mix (OpenVINO int4/int8, TensorRT
    int8/fp16, Core ML palettes + int8); the artifact stores each layer as chosen and runs it."""
    from edgec.compiler import compile as compile_model

    out = tmp_path / target
    res = compile_model(
        _mlp(), target, f"mixed-precision{{avg_bits={avg_bits}}}", str(out), verify=True, calib="random"
    )
    man = res.manifest
    alloc = man["mixed_precision"]["allocation"]
    native = set(host().targets[target].capabilities.mixed)
    assert set(alloc.values()) <= native and len(set(alloc.values())) > 1, alloc
    assert man["mixed_precision"]["avg_bits"] <= avg_bits
    assert man["verification"]["passed"], man["verification"]["summary"]
    if target == "openvino":
        xml = (out / "model.xml").read_text()
        assert 'element_type="i4"' in xml and 'element_type="i8"' in xml
    elif target == "tensorrt":
        import onnx

        proto = onnx.load(str(out / "model.onnx"))
        dq = {n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
        for w, b in alloc.items():
            assert any(d.startswith(w + "_q") for d in dq) == (b != "f16"), (w, b, dq)
        half = [w for w, b in alloc.items() if b == "f16"]
        for w in half:  # the float16 layers hold float16 values exactly
            arr = onnx.numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name.startswith(w)))
            assert arr.dtype == np.float16 or np.array_equal(arr.astype(np.float16).astype(arr.dtype), arr)
    else:
        enc = man["target"]["compressed_weights"]
        assert {enc[w + "_q"] for w in alloc} == {
            f"palette{b[1:]}" if isinstance(b, str) else "int8" for b in alloc.values()
        }
        assert man["target"]["decoded_bit_exact"] == len(alloc)


def test_next_points_are_the_serial_searchs_next_levels():
    from edgec.plugins.mixed.mixed_precision import _next_points

    assert _next_points(0, 9, 1, True, 10) == [9]
    assert _next_points(0, 9, 4, True, 10) == [9, 4, 2, 7]
    assert _next_points(0, 9, 3, False, 10) == [4, 2, 7]
    assert _next_points(3, 3, 3, False, 10) == []


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 3])
def test_max_drop_search_on_workers_decides_what_the_serial_search_decides(workers):
    """Speculative rounds on worker processes: the same allocation, the same evaluations in the same order,
    the same reason (extra points judged ahead are not reported)."""
    from edgec.api.executor import LocalExecutor

    pipe = "mixed-precision{max_drop=0.02,bits=2:3:4:8,checks=top1:0.9,cache=false}"
    m = _mlp()
    serial = _run(pipe, m, _ctx(m))
    assert 2 < len(serial["evaluated"]) and serial["decided_by"].startswith("smallest passing")
    judged = []

    class Counting(LocalExecutor):
        def run(self, fn, items, shared=None, on_done=None):
            if fn.__name__ == "_judge_task":
                judged.append(len(items))
            return super().run(fn, items, shared=shared, on_done=on_done)

    m2 = _mlp()
    ctx = _ctx(m2)
    with Counting(workers=workers) as ex:
        ctx.executor = ex
        par = _run(pipe, m2, ctx)
    assert par == serial
    # rounds of up to `workers` allocations each, fewer rounds than the serial search's evaluations
    assert judged and max(judged) == workers and len(judged) < len(serial["evaluated"])
