"""The IR's torch interpreter (edgec.api.torch_ir) and the ``qat`` pass: the interpreter equals the reference
executor before any training (float, quantized grids, palettes, activation quantization); qat lowers the
distillation loss and the output error, keeps every weight on its grid (a storage layout's scales untouched),
is deterministic, refuses what it cannot do, and its result compiles and verifies."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgec import ir  # noqa: E402
from edgec.api.torch_ir import IRModule  # noqa: E402
from edgec.calibration import CalibrationSet  # noqa: E402
from edgec.checks import Check, CheckResult  # noqa: E402
from edgec.errors import UnsupportedError, UsageError  # noqa: E402
from edgec.host import host  # noqa: E402
from edgec.ir import QuantizedTensor, ReferenceExecutor  # noqa: E402
from edgec.ir.passes import PassContext, PassError, PassManager, parse_pipeline  # noqa: E402
from edgec.ir.serde import copy as copy_model  # noqa: E402
from edgec.plugins.frontends.decoder import build_decoder  # noqa: E402
from tests.llm.conftest import TINY, random_weights  # noqa: E402

CFG = dataclasses.replace(TINY, hidden=64, intermediate=128, heads=2, kv_heads=1, head_dim=32, vocab_size=512)


def _lm():
    return build_decoder(CFG, random_weights(CFG, 0), {})


def _samples(n=8, seq=16, seed=0):
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(0, CFG.vocab_size, (1, seq)).astype(np.int64)} for _ in range(n)]


def _ctx(samples):
    h = host()
    return PassContext(
        config={"seed": 0}, calibration=CalibrationSet(samples, "test"), passes=h.passes.as_dict(), checks={}
    )


def _run(m, pipe, samples):
    ctx = _ctx(samples)
    PassManager(parse_pipeline(pipe, ctx.passes)).run(m, ctx)
    return m


def _close(m, feeds, module=None):
    ref = ReferenceExecutor(m).run(feeds)
    mod = (module or IRModule(m)).eval()
    with torch.no_grad():
        got = mod(feeds)
    for k, a in ref.items():
        b = got[k].numpy()
        assert b.shape == a.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-6 * max(1.0, float(np.abs(a).max())))


@pytest.mark.parametrize(
    "pipe",
    [
        "",
        "quantize{bits=4}",
        "quantize{bits=3,group=32,scheme=asymmetric}",
        "quantize{gguf=Q4_0}",
        "quantize{gguf=Q4_1}",
        "quantize{bits=3,method=codebook}",
    ],
)
def test_interpreter_equals_reference_before_training(pipe):
    m = _run(_lm(), pipe, _samples()) if pipe else _lm()
    _close(m, _samples(1, 24, seed=3)[0])


def test_adaround_starts_at_the_stored_codes():
    """AdaRound's rounding variables start on the stored codes' side (GPTQ codes included): eval-mode outputs
    equal the reference, and the written-back codes equal the quantizer's."""
    fl = _lm()
    m = _run(_lm(), "quantize{bits=3,method=gptq}", _samples())
    floats = {}
    for nt, ns in zip(fl.graph, m.graph):
        for vt, vs in zip(nt.inputs, ns.inputs):
            if vs is not None and isinstance(vs.const, QuantizedTensor):
                floats[vs.name] = vt.numpy()
    mod = IRModule(m, rounding="adaround", float_weights=floats)
    _close(m, _samples(1)[0], mod)
    before = {w: v.const.codes.copy() for w, v in m.graph.initializers.items() if isinstance(v.const, QuantizedTensor)}
    mod.write_back()
    for w, c in before.items():
        np.testing.assert_array_equal(m.graph.value(w).const.codes, c)


def test_lazy_interpreter_holds_no_dequantized_weight_and_trains_one_block_at_a_time(monkeypatch):
    """lazy=True: quantized weights not being trained are dequantized where they are used, never kept (outputs
    equal the reference); train_weights / freeze add and drop trainable modules, and block-wise qat never holds
    more than one block's."""
    m = _run(_lm(), "quantize{gguf=Q4_0}", _samples())
    quantized = {w for w, v in m.graph.initializers.items() if isinstance(v.const, QuantizedTensor)}
    mod = IRModule(m, trainable=(), lazy=True)
    assert not quantized & set(mod.consts) and set(mod.deferred) == quantized and not mod.fq_names
    _close(m, _samples(1, 24, seed=3)[0], mod)
    some = sorted(quantized)[:2]
    mod.train_weights(some)
    assert set(mod.fq_names) == set(some) and not set(some) & set(mod.deferred)
    _close(m, _samples(1, 24, seed=3)[0], mod)  # a fresh module computes exactly the stored weight
    mod.freeze(some)
    assert not mod.fq_names and set(mod.deferred) == quantized and not list(mod.parameters())

    held: list[int] = []
    trained: set[str] = set()
    real = IRModule.train_weights

    def spy(self, names, float_weights=None):
        real(self, names, float_weights)
        held.append(len(self.fq_names))
        trained.update(self.fq_names)

    monkeypatch.setattr(IRModule, "train_weights", spy)
    base = _run(_lm(), "quantize{gguf=Q4_0}", _samples(12))
    tuned = _run(_lm(), "quantize{gguf=Q4_0},qat{steps=2}", _samples(12))
    blocks = tuned.reports["qat"]["blocks"]
    assert len(held) == blocks > 2 and max(held) <= 7  # a block: 7 projections
    # the token-embedding table is not trained (embeddings=false): its codes are the quantizer's
    (table,) = [n.inputs[0].name for n in base.graph if n.name == "embed"]
    emb = base.graph.value(table).const
    assert isinstance(emb, QuantizedTensor) and tuned.reports["qat"]["weights"] == len(quantized) - 1
    np.testing.assert_array_equal(tuned.graph.value(table).const.codes, emb.codes)
    assert table not in trained and len(trained) == len(quantized) - 1
    trained.clear()
    _run(_lm(), "quantize{gguf=Q4_0},qat{steps=2,embeddings=true}", _samples(12))
    assert trained == quantized  # with embeddings=true the table is trained too


def test_activation_fake_quant_matches_the_reference():
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, ("batch", 16))
    rng = np.random.default_rng(0)
    w = g.add_const("w", rng.standard_normal((8, 16)).astype(np.float32))
    y = g.op("Linear", [x, w], domain="edgec").output
    r = g.op("Relu", [y]).output
    g.outputs.append(r)
    y.quant = ir.ActivationQuant(scale=0.05, zero_point=3)
    x.quant = ir.ActivationQuant(scale=0.02)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    _close(m, {"x": rng.standard_normal((4, 16)).astype(np.float32) * 2})


def test_unsupported_op_is_named():
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (2, 3))
    g.outputs.append(g.op("Hardmax", [x]).output)
    with pytest.raises(UnsupportedError, match="Hardmax"):
        IRModule(ir.Model(g, {"": 17}))


def _kl(fl, m, samples):
    a_ex, b_ex = ReferenceExecutor(fl), ReferenceExecutor(m)
    tot = 0.0
    for s in samples:
        a = a_ex.run(s)["logits"].astype(np.float64)
        b = b_ex.run(s)["logits"].astype(np.float64)
        la = a - a.max(-1, keepdims=True)
        la -= np.log(np.exp(la).sum(-1, keepdims=True))
        lb = b - b.max(-1, keepdims=True)
        lb -= np.log(np.exp(lb).sum(-1, keepdims=True))
        tot += float((np.exp(la) * (la - lb)).sum(-1).mean())
    return tot / len(samples)


@pytest.mark.slow
@pytest.mark.parametrize("opts", ["mode=block,steps=30", "mode=e2e,steps=40"])
def test_qat_lowers_the_loss_and_the_output_error(opts):
    """A random decoder at 3 bits: 16 training windows, 4 held out (measured: block 0.0919 -> 0.0855, e2e
    0.0919 -> 0.0795 mean KL on the held-out windows)."""
    train, held = _samples(16, 32), _samples(4, 32, seed=9)
    fl = _lm()
    base = _run(_lm(), "quantize{bits=3}", train)
    tuned = _run(_lm(), f"quantize{{bits=3}},qat{{{opts}}}", train)
    rep = tuned.reports["qat"]
    assert rep["loss_after"] < rep["loss_before"], rep  # the distillation loss on the training windows
    k_base, k_tuned = _kl(fl, base, held), _kl(fl, tuned, held)
    assert k_tuned < 0.97 * k_base, (k_base, k_tuned)  # held-out windows: the output error falls
    for w, v in tuned.graph.initializers.items():  # the same grids
        if isinstance(v.const, QuantizedTensor):
            q0 = base.graph.value(w).const
            assert (v.const.scheme, v.const.bits, v.const.group_size, v.const.axis) == (
                q0.scheme,
                q0.bits,
                q0.group_size,
                q0.axis,
            )
            assert not v.const.validate()


def test_qat_keeps_a_storage_layout_and_is_deterministic():
    train = _samples(4)
    base = _run(_lm(), "quantize{gguf=Q4_0}", train)
    runs = [_run(_lm(), "quantize{gguf=Q4_0},qat{steps=4,lr=0.5}", train) for _ in range(2)]
    moved = 0
    for w, v in runs[0].graph.initializers.items():
        if isinstance(v.const, QuantizedTensor):
            q0 = base.graph.value(w).const
            assert v.const.layout == q0.layout and q0.layout in ("gguf.Q4_0", "gguf.Q8_0")
            np.testing.assert_array_equal(v.const.scales, q0.scales)  # the format's scales stay
            np.testing.assert_array_equal(v.const.codes, runs[1].graph.value(w).const.codes)
            moved += int((v.const.codes != q0.codes).sum())
    assert moved > 0  # the codes trained


def test_qat_needs_a_quantizer_before_it_and_calibration():
    with pytest.raises(PassError, match="after a quantizer"):
        _run(_lm(), "qat", _samples(2))
    m = _lm()
    ctx = PassContext(passes=host().passes.as_dict())
    with pytest.raises(PassError, match="--calib"):
        PassManager(parse_pipeline("quantize{bits=4},qat", ctx.passes)).run(m, ctx)


def test_qat_refuses_a_changed_graph_and_mixed_sample_shapes():
    """A float model whose graph is not the quantized one's (a structure-changing pass between them), and
    calibration samples of two lengths: named errors, no training."""
    from edgec.errors import EdgecError
    from edgec.plugins.qat.qat import QAT

    m = _run(_lm(), "quantize{bits=4}", _samples(2))
    ctx = _ctx(_samples(2))
    ctx.float_model = copy_model(_lm())
    ctx.float_model.graph.remove(list(ctx.float_model.graph)[-1], safe=False)
    with pytest.raises(EdgecError, match="differs from the float model's"):
        QAT(steps=1).run(m, ctx)
    ctx = _ctx(_samples(1, 16) + _samples(1, 24))
    ctx.float_model = _lm()
    with pytest.raises(UsageError, match="differ in shape"):
        QAT(steps=1).run(m, ctx)


def test_qat_keeps_only_what_lowers_the_held_out_loss():
    """The last `holdout` windows are not trained on; a block whose trained weights do not lower its loss on them
    keeps the quantizer's, and the result is never worse there than the quantizer's (lr=20: training that hurts)."""
    train = _samples(20)
    base = _run(_lm(), "quantize{bits=3}", train)
    for lr in (0.05, 20.0):
        m = _run(_lm(), f"quantize{{bits=3}},qat{{steps=6,lr={lr},holdout=6}}", train)
        rep = m.reports["qat"]
        assert rep["held_out"] == 6 and rep["windows"] == 20
        blocks = [v for k, v in rep["loss"].items() if k.startswith("block")]
        assert blocks and all(
            b["kept"] == ("trained" if b["held_after"] < b["held_before"] else "quantizer") for b in blocks
        )
        assert rep["loss_after"] <= rep["loss_before"] or "kept" in rep, rep  # else the quantizer's weights kept
        if "kept" in rep or all(b["kept"] == "quantizer" for b in blocks):
            for w, v in m.graph.initializers.items():
                if isinstance(v.const, QuantizedTensor):
                    np.testing.assert_array_equal(v.const.codes, base.graph.value(w).const.codes)
    assert any(b["kept"] == "quantizer" for b in blocks)  # lr=20 hurt somewhere, and that was undone


class _Verdicts(Check):
    """A test check on models: ``first`` fails the first model it judges (the trained one) and passes the next;
    ``never`` fails every model."""

    name = "verdicts"
    needs_model = True

    def __init__(self, arg: str):
        super().__init__(arg)
        self.judged: list = []

    def prepare(self, reference) -> None:
        self.reference = reference

    def evaluate_model(self, candidate) -> CheckResult:
        self.judged.append(candidate)
        ok = self.arg == "first" and len(self.judged) > 1
        return CheckResult(ok, float(ok), f"model {len(self.judged)}")


def _checked(pipe, samples):
    ctx = dataclasses.replace(_ctx(samples), checks={**host().checks.as_dict(), "verdicts": _Verdicts})
    m = _lm()
    PassManager(parse_pipeline(pipe, ctx.passes)).run(m, ctx)
    return m


def test_qat_keeps_its_checks():
    """checks=: kept -> the trained weights and the verdicts in the report; broken by the trained weights ->
    the quantizer's weights, bit for bit, and the report says why; broken by both -> a named error."""
    train = _samples(6)
    base = _run(_lm(), "quantize{bits=3,group=32}", train)
    ok = _checked("quantize{bits=3,group=32},qat{steps=3,lr=0.5,samples=4,holdout=2,checks=top1:0.01}", train)
    rep = ok.reports["qat"]
    assert rep["checks"]["top1:0.01"]["passed"] and "reverted" not in rep
    codes = lambda m: {
        w: v.const.codes for w, v in m.graph.initializers.items() if isinstance(v.const, QuantizedTensor)
    }  # noqa: E731
    assert any((a != codes(base)[w]).any() for w, a in codes(ok).items())  # it trained

    kept = _checked("quantize{bits=3,group=32},qat{steps=3,lr=0.5,checks=verdicts:first}", train)
    rep = kept.reports["qat"]
    assert not rep["checks"]["verdicts:first"]["passed"] and rep["checks_before_qat"]["verdicts:first"]["passed"]
    assert "broke check verdicts:first" in rep["reverted"]
    for w, a in codes(kept).items():
        np.testing.assert_array_equal(a, codes(base)[w])

    with pytest.raises(PassError, match=r"breaks check verdicts:never \(model 1\), and so does the quantizer's"):
        _checked("quantize{bits=3,group=32},qat{steps=2,checks=verdicts:never}", train)
    with pytest.raises(PassError, match="unknown check 'nope'"):
        _checked("quantize{bits=3,group=32},qat{steps=2,checks=nope:1}", train)


def test_float_model_is_kept_only_when_asked():
    ctx = _ctx(_samples(2))
    m = _lm()
    PassManager(parse_pipeline("quantize{bits=4}", ctx.passes)).run(m, ctx)
    assert ctx.float_model is None
    ctx = _ctx(_samples(2))
    ref = copy_model(_lm())
    PassManager(parse_pipeline("quantize{bits=4},qat{steps=0}", ctx.passes)).run(_lm(), ctx)
    assert ctx.float_model is not None
    a = ReferenceExecutor(ctx.float_model).run(_samples(1)[0])["logits"]
    np.testing.assert_array_equal(a, ReferenceExecutor(ref).run(_samples(1)[0])["logits"])


@pytest.mark.slow
def test_qat_result_compiles_and_verifies(tmp_path, monkeypatch):
    """A GGUF decoder (SmolLM2's tokenizer) calibrated on text, quantized to Q4_0, fine-tuned and compiled for
    the gguf target from the command line: verified on llama.cpp, each tensor's type the quantizer's."""
    import json

    from click.testing import CliRunner

    from edgec.cli import main
    from edgec.plugins.frontends.gguf_io import dump_kv, kv_metadata, open_gguf
    from edgec.plugins.llm.bundled import smollm2_path
    from tests.llm.conftest import write_gguf

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = dataclasses.replace(CFG, vocab_size=49152)
    src = write_gguf(cfg, dump_kv(kv_metadata(open_gguf(smollm2_path()))), str(tmp_path / "tiny.gguf"))
    calib = tmp_path / "calib.txt"
    calib.write_text(open("/usr/share/common-licenses/Apache-2.0", encoding="utf-8").read()[:6000])
    pipe = "quantize{gguf=Q4_0},qat{steps=3,seq=32,samples=4}"
    args = ["compile", src, "-t", "gguf", "-p", pipe, "--calib", str(calib), "--verify", "-o", str(tmp_path / "o")]
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    man = json.loads(r.stdout)["manifest"]
    assert man["verification"]["passed"], man["verification"]["summary"]
    assert man["target"]["tensor_types"]["blk.0.attn_q.weight"] == "Q4_0"
