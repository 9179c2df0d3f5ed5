"""Perplexity windows, edgec eval, text calibration and GGUF-grid GPTQ."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from edgec.cli import main
from edgec.errors import UsageError
from edgec.plugins.llm.perplexity import _nll, perplexity, windows

TEXT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "text", "eval.txt")


def test_windows_score_every_token_once():
    for n, ctx, stride in [(1000, 128, 64), (100, 512, 256), (513, 512, 256), (10, 4, 3), (7, 4, 1)]:
        scored = []
        for start, end, first in windows(n, ctx, stride):
            assert end - start <= ctx and start < first <= end
            assert first - start >= min(ctx - stride, first - start)  # context before each scored token
            scored += list(range(first, end))
        assert scored == list(range(1, n)), (n, ctx, stride)
    # stride == ctx: disjoint windows; a window's first token has no context and is not scored.
    assert [f for _, _, f in windows(12, 4, 4)] == [1, 5, 9]
    with pytest.raises(UsageError):
        windows(10, 4, 5)


def test_perplexity_of_a_known_distribution():
    """A model that always predicts uniformly over V tokens has perplexity exactly V."""
    v = 37
    res = perplexity(
        np.arange(300) % v,
        lambda toks: np.zeros((len(toks), v), np.float32),
        ctx=64,
        stride=32,
        engine="uniform",
        progress=False,
    )
    assert abs(res.perplexity - v) < 1e-9 and res.tokens_scored == 299
    logits = np.log(np.array([[0.5, 0.25, 0.25]]))
    assert abs(_nll(logits, np.array([1])) - np.log(4)) < 1e-12


@pytest.mark.slow
def test_eval_reference_and_llama_cpp_agree_on_f16(tmp_path, tiny_gguf):
    """The same F16 GGUF, evaluated by the reference executor and by llama.cpp: perplexities within 1%."""
    r = CliRunner().invoke(
        main, ["compile", tiny_gguf, "--target", "gguf", "--verify", "-o", str(tmp_path / "a"), "--json"]
    )
    assert r.exit_code == 0, r.output
    man = json.loads(r.stdout)["manifest"]
    assert man["verification"]["passed"] and man["target"]["tensor_types"]["blk.0.ffn_up.weight"] == "F16"
    res = {}
    for engine in ("llama.cpp", "reference"):
        r = CliRunner().invoke(
            main,
            [
                "eval",
                str(tmp_path / "a"),
                "--perplexity",
                TEXT,
                "--ctx",
                "128",
                "--engine",
                engine,
                "--max-tokens",
                "600",
                "--json",
            ],
        )
        assert r.exit_code == 0, r.output
        res[engine] = json.loads(r.stdout)
    a, b = res["llama.cpp"]["perplexity"], res["reference"]["perplexity"]
    assert res["llama.cpp"]["details"]["tokens_scored"] == res["reference"]["details"]["tokens_scored"] == 599
    assert abs(a - b) / b < 0.01, (a, b)


def test_eval_errors(tmp_path, tiny_gguf):
    r = CliRunner().invoke(main, ["eval", tiny_gguf])
    assert r.exit_code == 2 and "--perplexity" in r.output
    r = CliRunner().invoke(main, ["eval", tiny_gguf, "--perplexity", TEXT, "--ctx", "100000"])
    assert r.exit_code == 2 and "context length" in r.output


def test_text_calibration_is_deterministic_and_tokenized(tiny_gguf):
    from edgec.calibration import load_calibration
    from edgec.plugins.frontends.gguf import GGUFFrontend

    m = GGUFFrontend().load(tiny_gguf)
    a = load_calibration(TEXT, m, seed=3, max_samples=4, seq_len=64)
    b = load_calibration(TEXT, m, seed=3, max_samples=4, seq_len=64)
    assert len(a) == 4 and all(s["input_ids"].shape == (1, 64) for s in a.samples)
    assert all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a.samples, b.samples))
    assert a.samples[0]["input_ids"].max() < 49152 and len({s["input_ids"].tobytes() for s in a.samples}) == 4


@pytest.mark.slow
def test_gptq_on_gguf_grids_beats_rtn_on_layer_output(tiny_gguf):
    """GPTQ and MSE on a GGUF grid reduce the layer output error against RTN on the same grid, with real
    calibration text flowing through the (streamed) model."""
    from edgec.calibration import load_calibration
    from edgec.ir.passes import PassContext, PassManager
    from edgec.plugins.frontends.gguf import GGUFFrontend
    from edgec.plugins.quantize.quantize import REPORT_KEY, Quantize

    errs = {}
    for method in ("rtn", "gptq", "awq"):
        m = GGUFFrontend().load(tiny_gguf)
        cal = load_calibration(TEXT, m, max_samples=4, seq_len=128)
        PassManager([Quantize(gguf="Q3_K", method=method)]).run(m, PassContext(calibration=cal))
        rep = m.reports[REPORT_KEY]
        body = [r for r in rep.values() if r["role"] == "body"]
        assert len(body) == 14 and all(r["layout"] == "gguf.Q3_K" for r in body if "layout" in r)
        errs[method] = np.mean([r["rel_output_error"] for r in body])
    assert errs["gptq"] < errs["rtn"] and errs["awq"] < errs["rtn"], errs


def test_eval_refuses_artifacts_without_a_language_model_runtime(tmp_path, tiny_cnn_path):
    """edgec eval of an artifact whose target has no language-model runtime, and of a malformed manifest: named
    errors, never a traceback."""
    out = tmp_path / "cpu"
    r = CliRunner().invoke(main, ["compile", tiny_cnn_path, "--target", "cpu", "-o", str(out), "--no-cache"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["eval", str(out), "--perplexity", TEXT])
    assert r.exit_code != 0 and "the cpu target has no language-model runtime here" in r.output
    r = CliRunner().invoke(main, ["eval", str(out), "--perplexity", TEXT, "--engine", "reference"])
    assert r.exit_code != 0 and "no frontend reads the artifact files" in r.output
    (out / "manifest.json").write_text("{}")
    r = CliRunner().invoke(main, ["eval", str(out), "--perplexity", TEXT])
    assert r.exit_code != 0 and "manifest.json is unreadable or malformed" in r.output
