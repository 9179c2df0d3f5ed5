"""The example vendor plugin (examples/acme_plugin, installed by scripts/setup.sh) gets what the built-in targets
get, with no line of edgec naming it: verification of its artifact on its runtime, perplexity of the artifact
(``Target.logits_engine``) at compile time and in ``edgec eval`` (its tokenizer from ``Target.artifact_metadata``),
and its native mixed-precision set (``Capabilities.mixed``)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from edgec.cli import main
from edgec.host import host

HERE = os.path.dirname(os.path.dirname(__file__))
TEXT = os.path.join(HERE, "..", "examples", "text", "eval.txt")


@pytest.mark.slow
def test_vendor_llm_target_verifies_and_measures_perplexity(tiny_gguf, tmp_path):
    out = str(tmp_path / "a")
    r = CliRunner().invoke(
        main, ["compile", tiny_gguf, "--target", "acme-llm", "--verify", "--eval-text", TEXT, "-o", out, "--json"]
    )
    assert r.exit_code == 0, r.output
    man = json.loads(r.stdout)["manifest"]
    assert man["verification"]["passed"] and man["verification"]["runtime"] == "acme runtime (onnxruntime)"
    ev = man["evaluation"]
    assert ev["artifact_engine"] == "acme runtime"
    # the float model exported as ONNX: its runtime computes what the reference executor computes
    assert abs(ev["artifact_perplexity"] / ev["compiled_perplexity"] - 1) < 1e-3
    r = CliRunner().invoke(main, ["eval", out, "--perplexity", TEXT, "--ctx", "128", "--max-tokens", "300", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["engine"] == "acme runtime" and res["details"]["tokens_scored"] == 299
    assert res["tokenizer"] and res["perplexity"] > 1
    bad = CliRunner().invoke(main, ["eval", out, "--chat", "hello"])
    assert bad.exit_code != 0 and "the acme-llm target has no chat runtime here" in bad.output


def test_vendor_llm_target_native_mixed_set():
    from edgec.ir.passes import PassContext
    from edgec.plugins.mixed.mixed_precision import MixedPrecision

    tgt = host().targets["acme-llm"]()
    assert MixedPrecision(avg_bits=6.0).choices(PassContext(target=tgt)) == [4, 8]
