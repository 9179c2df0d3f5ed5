"""mixed-precision on the gguf target: the candidates are GGUF block types, the file mixes them per tensor
and llama.cpp loads and runs it."""

import json
import os

import pytest
from click.testing import CliRunner

from edgec.cli import main

TEXT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "text", "eval.txt")


@pytest.mark.slow
def test_gguf_mixed_types_within_budget_and_llama_cpp_runs_it(tmp_path, tiny_gguf, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "a"
    r = CliRunner().invoke(
        main,
        [
            "compile",
            tiny_gguf,
            "--target",
            "gguf",
            "-p",
            "mixed-precision{avg_bits=6,samples=1}",
            "--calib",
            TEXT,
            "--verify",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    man = json.loads(r.stdout)["manifest"]
    mp = man["mixed_precision"]
    assert mp["avg_bits"] <= 6
    assert set(mp["allocation"].values()) <= {"Q4_0", "Q5_0", "Q8_0"}
    types = man["target"]["tensor_types"]
    for name, t in mp["allocation"].items():
        if name.startswith("blk."):
            assert types[name] == t, name  # the file carries each body tensor's chosen type exactly
    assert len({types[n] for n in mp["allocation"]}) > 1  # and really mixes block types
    assert man["verification"]["passed"], man["verification"]["summary"]
