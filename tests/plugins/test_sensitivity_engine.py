"""The sensitivity engine: each (layer, candidate) measured from the float activations cached at the layer's
group, through a chain of stage sessions, must give what quantizing that one weight in the whole model and
running it gives; the logit subset of a language model's head, the disk-backed activation store and the
group plan are checked against the same brute force."""

import numpy as np
import pytest

from edgec import ir
from edgec.calibration import CalibrationSet as Calibration
from edgec.host import host
from edgec.ir.passes import PassContext, PassManager, parse_pipeline
from edgec.plugins.mixed import sensitivity as sens_mod

CANDS = ["quantize{bits=2,head_bits=2,embedding_bits=2}", "quantize{bits=4,head_bits=4,embedding_bits=4}"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _lin(g, x, w, name):
    return g.op("Linear", [x, w], domain="edgec", name=name).output


def _residual_net():
    """Residual blocks (a chain: nested influence), two parallel branches added (not nested), a weight used by
    two layers far apart, and two graph outputs, the second of which early layers alone reach."""
    rng = np.random.default_rng(0)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, ("batch", 8, 32))

    def w(name, n, k):
        return g.add_const(name, (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32))

    tied = w("w_tied", 32, 32)
    h = _lin(g, x, tied, "first")
    for b in range(3):
        a = g.op("Relu", [_lin(g, h, w(f"up{b}", 64, 32), f"up{b}")]).output
        h = g.op("Add", [h, _lin(g, a, w(f"down{b}", 32, 64), f"down{b}")]).output
    side = _lin(g, h, w("side", 6, 32), "side")
    p = _lin(g, h, w("pa", 32, 32), "pa")
    q = _lin(g, h, w("pb", 32, 32), "pb")
    h = g.op("Add", [g.op("Relu", [p]).output, g.op("Sigmoid", [q]).output]).output
    h = _lin(g, h, tied, "again")
    out = _lin(g, h, w("out", 10, 32), "out")
    g.outputs.extend([out, side])
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def _tiny_lm(vocab=64, dim=16):
    """Token embedding, two residual Linear blocks and a vocabulary head tied to the embedding."""
    rng = np.random.default_rng(1)
    g = ir.Graph()
    ids = g.add_input("ids", ir.DType.INT64, ("batch", 8))
    emb = g.add_const("emb", (rng.standard_normal((vocab, dim)) * 2).astype(np.float32))
    h = g.op("Gather", [emb, ids], {"axis": 0}).output
    for b in range(2):
        u = g.add_const(f"u{b}", (rng.standard_normal((dim, dim)) / 3).astype(np.float32))
        h = g.op("Add", [h, g.op("Tanh", [_lin(g, h, u, f"blk{b}")]).output]).output
    g.outputs.append(_lin(g, h, emb, "head"))
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def _ctx(m, n=3):
    rng = np.random.default_rng(5)
    inp = m.graph.inputs[0]
    if inp.dtype == ir.DType.INT64:
        samples = [{inp.name: rng.integers(0, 64, (1, 8)).astype(np.int64)} for _ in range(n)]
    else:
        samples = [{inp.name: rng.standard_normal((1, 8, 32)).astype(np.float32)} for _ in range(n)]
    h = host()
    return PassContext(config={"seed": 0}, calibration=Calibration(samples, "test"), passes=h.passes.as_dict())


def _brute(make, cands, ctx, distance):
    """Each weight alone replaced by its candidate's values everywhere it is used, the whole model run per
    sample, compared with the float model's outputs (``distance(ref, got)``)."""
    m = make()
    names = [o.name for o in m.graph.outputs]
    ref_ex = ir.ReferenceExecutor(m)
    samples = ctx.calibration.samples
    ref = [[np.asarray(ref_ex.run(s)[n]) for n in names] for s in samples]
    table = {}
    for c in cands:
        q = make()
        PassManager(parse_pipeline(c, ctx.passes)).run(q, ctx)
        quant = {
            n.name: (i, v.const)
            for n in q.graph
            for i, v in enumerate(n.inputs)
            if v is not None and isinstance(v.const, ir.QuantizedTensor)
        }
        for n in m.graph:
            if n.name not in quant or n.arg(quant[n.name][0]).name in {w for w in table if c in table[w]}:
                continue
            w = n.arg(quant[n.name][0])
            mm = make()
            mm.graph.value(w.name).const = ir.Tensor(quant[n.name][1].dequantize().astype(np.float32))
            ex = ir.ReferenceExecutor(mm)
            got = [[np.asarray(ex.run(s)[k]) for k in names] for s in samples]
            table.setdefault(w.name, {})[c] = distance(ref, got)
    return table


def _close(table, brute):
    assert set(table) == set(brute)
    for w in brute:
        for c, want in brute[w].items():
            got = table[w][c]
            assert got["kl"] == pytest.approx(want["kl"], rel=1e-3, abs=1e-9), (w, c)
            assert got["sqnr"] == pytest.approx(want["sqnr"], abs=1e-2), (w, c)
            assert got["cosine"] == pytest.approx(want["cosine"], abs=1e-6), (w, c)


def test_stage_chains_and_branches_equal_the_whole_model_run():
    m = _residual_net()
    ctx = _ctx(m)
    plan = sens_mod.plan_groups(m, [(n.name, 1, n.arg(1).name, {}) for n in m.graph if n.op_type == "Linear"])
    assert len(plan.groups) > 3 and any(len(g.chain) > 1 for g in plan.groups)
    sens = sens_mod.analyse(_residual_net(), CANDS, ctx, samples=3, use_cache=False)
    assert sens.distance == "outputs"
    _close(sens.table, _brute(_residual_net, CANDS, ctx, sens_mod.compare))
    # the tied weight is measured once, with both its uses quantized
    assert list(sens.table).count("w_tied") == 1 and sens.nodes["w_tied"] == "first"


def _branches():
    g = ir.Graph()
    rng = np.random.default_rng(2)
    x = g.add_input("x", ir.DType.FLOAT32, ("batch", 8, 32))
    a = _lin(g, x, g.add_const("wa", rng.standard_normal((32, 32)).astype(np.float32) / 6), "a")
    b = _lin(g, x, g.add_const("wb", rng.standard_normal((32, 32)).astype(np.float32) / 6), "b")
    s = g.op("Add", [g.op("Relu", [a]).output, b]).output
    g.outputs.append(_lin(g, s, g.add_const("wc", rng.standard_normal((4, 32)).astype(np.float32) / 6), "c"))
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def test_parallel_branches_chain_through_each_others_stage():
    """Parallel branches: the second group's influenced part is not inside the first one's, so the first group's
    run goes through the second one's stage too (its other branch on float inputs), and the numbers still
    match."""
    m = _branches()
    plan = sens_mod.plan_groups(m, [(n.name, 1, n.arg(1).name, {}) for n in m.graph if n.op_type == "Linear"])
    assert [gr.chain for gr in plan.groups] == [[0, 1, 2], [1, 2], [2]]
    ctx = _ctx(m)
    sens = sens_mod.analyse(m, CANDS, ctx, samples=3, use_cache=False)
    _close(sens.table, _brute(_branches, CANDS, ctx, sens_mod.compare))


def test_logit_subset_of_a_head_covering_every_class_equals_the_full_distance(monkeypatch):
    monkeypatch.setattr(sens_mod, "HEAD_MIN_CLASSES", 32)
    ctx = _ctx(_tiny_lm())
    sub = sens_mod.analyse(_tiny_lm(), CANDS, ctx, samples=3, use_cache=False)
    assert sub.distance == "logit subset (64 of 64 classes)"
    full = sens_mod.analyse(_tiny_lm(), CANDS, ctx, samples=3, use_cache=False, distance="full")
    assert full.distance == "outputs"
    _close(sub.table, full.table)
    _close(full.table, _brute(_tiny_lm, CANDS, ctx, sens_mod.compare))


def test_logit_subset_keeps_the_most_probable_tokens(monkeypatch):
    """With fewer tokens than classes, the KL is the one of the float and quantized distributions renormalized
    on the float model's most probable tokens."""
    monkeypatch.setattr(sens_mod, "HEAD_MIN_CLASSES", 32)
    monkeypatch.setattr(sens_mod, "SUBSET", 12)
    m = _tiny_lm()
    ctx = _ctx(m)
    sub = sens_mod.analyse(m, CANDS, ctx, samples=3, use_cache=False)
    assert sub.distance == "logit subset (12 of 64 classes)"
    samples = ctx.calibration.samples
    ex = ir.ReferenceExecutor(m0 := _tiny_lm())
    z = np.concatenate([ex.run(s)[m0.graph.outputs[0].name].reshape(-1, 64) for s in samples])
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    tokens = np.sort(np.argsort(-p.max(0), kind="stable")[:12])

    def subset_distance(ref, got):
        return sens_mod.compare([[r[0][..., tokens]] for r in ref], [[o[0][..., tokens]] for o in got])

    brute = _brute(_tiny_lm, CANDS, ctx, subset_distance)
    _close(sub.table, brute)


def test_activations_spilled_to_disk_give_the_same_table(monkeypatch):
    m = _residual_net()
    ctx = _ctx(m)
    mem = sens_mod.analyse(m, CANDS, ctx, samples=3, use_cache=False)
    monkeypatch.setenv("EDGEC_SENSITIVITY_MEMORY", "1")
    spilled = []
    real = sens_mod._Store.put

    def put(self, name, a):
        real(self, name, a)
        spilled.append(isinstance(self.arrays[name], np.memmap))

    monkeypatch.setattr(sens_mod._Store, "put", put)
    disk = sens_mod.analyse(_residual_net(), CANDS, ctx, samples=3, use_cache=False)
    assert spilled and all(spilled)
    assert disk.table == mem.table


def test_weights_fed_instead_of_prepacked_when_two_copies_do_not_fit(monkeypatch):
    """Without room for the stage sessions' prepacked copies, every stage reads the model's own arrays as
    inputs: the same measurements (within rounding of the other GEMM path)."""
    m = _residual_net()
    ctx = _ctx(m)
    packed = sens_mod.analyse(m, CANDS, ctx, samples=3, use_cache=False)
    monkeypatch.setattr(sens_mod, "prepack_budget", lambda: 0)
    built = []
    real = sens_mod.ReferenceExecutor

    def spy(*a, **k):
        if k.get("cut"):  # a stage (capture and batch-check sessions cut nothing)
            built.append(set(k.get("free", ())))
        return real(*a, **k)

    monkeypatch.setattr(sens_mod, "ReferenceExecutor", spy)
    said = []
    fed = sens_mod.analyse(_residual_net(), CANDS, ctx, samples=3, use_cache=False, progress=said.append)
    assert any("weights fed, not prepacked" in s for s in said)
    assert built and all(built)  # every stage session reads its weights as inputs
    _close(fed.table, {w: {c: v for c, v in r.items()} for w, r in packed.table.items()})


def test_kl_has_no_cancellation_for_tiny_and_overflowing_perturbations():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 50)) * 4
    p = np.exp(a - a.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    for scale in (1e-7, 1e-3, 1.0, 300.0):
        b = a + rng.standard_normal(a.shape) * scale
        la = a - np.log(np.sum(np.exp(a - a.max(-1, keepdims=True)), -1, keepdims=True)) - a.max(-1, keepdims=True)
        lb = b - np.log(np.sum(np.exp(b - b.max(-1, keepdims=True)), -1, keepdims=True)) - b.max(-1, keepdims=True)
        want = np.sum(p * (la - lb), -1)
        got = sens_mod._kl_rows(p, a, b)
        if scale < 1e-3:  # float64's own log-difference is noise here; the second-order term is the truth
            d = b - a
            u = d - np.sum(p * d, -1, keepdims=True)
            want = 0.5 * np.sum(p * u * u, -1)
        assert got == pytest.approx(want, rel=1e-4 if scale < 300 else 1e-6), scale


def test_a_worker_that_outlives_an_analysis_does_not_reuse_its_stages():
    """A long-lived worker (a Ray cluster's) runs two analyses of one model with other candidates, so other
    groups and stages: each gets its own sessions, and both tables equal the serial ones."""
    from edgec.api.executor import Executor, _call

    class InProcess(Executor):  # tasks in this process: module state survives between runs, as in a Ray worker
        name = "in-process"

        def run(self, fn, items, shared=None, on_done=None):
            return [_call(fn, it, shared, i) for i, it in enumerate(items)]

    first = ["quantize{bits=4,head_bits=4,embedding_bits=4}"]
    second = ["quantize{bits=2,include=^(up|down)}"]
    ctx = _ctx(_residual_net())
    serial = [sens_mod.analyse(_residual_net(), c, ctx, samples=3, use_cache=False).table for c in (first, second)]
    ctx.executor = InProcess(workers=2)
    shard = [sens_mod.analyse(_residual_net(), c, ctx, samples=3, use_cache=False).table for c in (first, second)]
    assert shard == serial


def test_no_layer_to_measure_beside_a_head(monkeypatch):
    monkeypatch.setattr(sens_mod, "HEAD_MIN_CLASSES", 32)
    m = _tiny_lm()
    sens = sens_mod.analyse(m, [sens_mod.FLOAT16], _ctx(m), samples=3, use_cache=False)
    assert sens.layers == [] and sens.table == {}


@pytest.mark.parametrize("value", ["lots", "-5"])
def test_a_bad_memory_setting_is_named_with_the_fix(monkeypatch, value):
    from edgec.errors import UsageError

    monkeypatch.setenv("EDGEC_SENSITIVITY_MEMORY", value)
    m = _residual_net()
    with pytest.raises(UsageError, match=r"EDGEC_SENSITIVITY_MEMORY=.* is not a byte count: .*e\.g\. 2e9"):
        sens_mod.analyse(m, CANDS, _ctx(m), samples=3, use_cache=False)
