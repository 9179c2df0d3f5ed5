"""``edgec bench`` of a language model's artifact: prefill and decode tokens/s on llama.cpp (gguf)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from click.testing import CliRunner

from edgec.bench import SCHEMA
from edgec.cli import main


@pytest.mark.slow
def test_gguf_artifact_reports_prefill_and_decode_tokens_per_second(tiny_gguf, tmp_path):
    out = tmp_path / "g"
    r = CliRunner().invoke(main, ["compile", tiny_gguf, "--target", "gguf", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        main, ["bench", str(out), "--prompt-tokens", "16", "--new-tokens", "4", "--threads", "1", "--json"]
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec.pop("ok") is True
    jsonschema.validate(rec, SCHEMA)
    assert rec["kind"] == "language-model" and rec["runtime"] == "llama.cpp" and rec["threads"] == 1
    assert (rec["prompt_tokens"], rec["new_tokens"]) == (16, 4)
    assert abs(rec["decode_ms_per_token"] * rec["decode_tokens_per_s"] - 1000) < 1  # the same figure, two units
    r = CliRunner().invoke(main, ["bench", str(out), "--prompt-tokens", "8", "--new-tokens", "2"])
    assert r.exit_code == 0 and "prefill: " in r.output and "decode: " in r.output, r.output
