"""Generation-based property checks (json:, contains:) for language models, and the search they steer."""

import json

import numpy as np
import pytest

from edgec.api.llm import SOURCE_KEY, LLMConfig
from edgec.calibration import CalibrationSet
from edgec.checks import parse_checks
from edgec.errors import UsageError
from edgec.host import host
from edgec.ir.passes import PassContext, parse_pipeline
from edgec.ir.serde import copy
from edgec.plugins.checks.generation import generate, holds_json
from edgec.plugins.frontends.decoder import build_decoder
from tests.llm.conftest import chain_decoder, random_arrays

# SmolLM2's tokenizer: 'x' is 104; '{"ok":1}' is '{"' 39428, 'ok' 2231, '":' 1799, '1' 33, '}' 109.
CHAIN = [104, 39428, 2231, 1799, 33, 109, 2]


def _cfg(vocab: int) -> LLMConfig:
    return LLMConfig(
        arch="llama",
        vocab_size=vocab,
        hidden=64,
        intermediate=128,
        layers=2,
        heads=4,
        kv_heads=4,
        head_dim=16,
        rope_theta=10000.0,
        rms_eps=1e-5,
        context_length=64,
        tied_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        name="t",
    )


def _chain_model(smol_path, successor: dict[int, int] | None = None):
    """The chain decoder (tests/llm/conftest.py) over CHAIN: greedy decoding of 'x' yields '{"ok":1}' and stops at
    the end-of-sequence token. ``successor`` overrides links of the chain."""
    links = dict(zip(CHAIN[:-1], CHAIN[1:]))
    links.update(successor or {})
    return chain_decoder(_cfg(40000), links, {SOURCE_KEY: "gguf:" + smol_path})


def test_holds_json():
    assert holds_json('{"ok":1}') and holds_json(" here: [1, 2] and more") and holds_json('x {"a": {"b": []}} y')
    assert not holds_json('{"ok":}') and not holds_json("no json") and not holds_json('{"open": 1')


def test_json_check_keeps_and_breaks(smol_path, tmp_path):
    good = _chain_model(smol_path)
    assert generate(good, ["x"], 16) == ['{"ok":1}']
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("x\n")
    (chk,) = parse_checks(f"json:{prompts}@12", host().checks.as_dict())
    chk.prepare(good)
    assert chk.judge(copy(good), None, None).passed
    broken = _chain_model(smol_path, {1799: 109})  # '":' now followed by '}': '{"ok":}'
    res = chk.judge(broken, None, None)
    assert not res.passed and res.value == 0 and '{"ok":}' in res.detail
    # the float model must hold JSON somewhere, or the check would accept anything
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(["x"]))
    (chk,) = parse_checks(f"json:{plain}", host().checks.as_dict())
    with pytest.raises(UsageError, match="hold no JSON"):
        chk.prepare(broken)


def test_check_usage_errors(smol_path, tmp_path):
    reg = host().checks.as_dict()
    with pytest.raises(UsageError, match="is not a file"):
        parse_checks("contains:/nonexistent.json", reg)
    f = tmp_path / "req.json"
    f.write_text(json.dumps({"x": ["ok"]}))
    with pytest.raises(UsageError, match="must be the number of new tokens"):
        parse_checks(f"contains:{f}@many", reg)
    f.write_text(json.dumps({"x": "ok"}))
    with pytest.raises(UsageError, match="expected"):
        parse_checks(f"contains:{f}", reg)
    f.write_text(json.dumps({"x": ["nope"]}))
    (chk,) = parse_checks(f"contains:{f}", reg)
    with pytest.raises(UsageError, match="the float model itself fails it"):
        chk.prepare(_chain_model(smol_path))
    small = build_decoder(_cfg(100), random_arrays(_cfg(100)), {SOURCE_KEY: "gguf:" + smol_path})
    with pytest.raises(UsageError, match="beyond the model's vocabulary of 100"):
        generate(small, ["x"], 2)


@pytest.mark.slow
def test_failing_generation_check_changes_the_search(smol_path, tmp_path, monkeypatch):
    """Without the check, every layer at 2 bits is within max_drop; the generation of 'x:' then changes, so
    with contains: (what the float model generates) the search settles on a larger allocation and says the
    check decided."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = _cfg(2000)
    w = random_arrays(cfg)
    w["output.weight"] *= 4
    m = build_decoder(cfg, w, {SOURCE_KEY: "gguf:" + smol_path})
    want = generate(m, ["x:"], 8)[0][:12]
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"x:": [want]}))
    rng = np.random.default_rng(0)
    calib = CalibrationSet([{"input_ids": rng.integers(0, 2000, (1, 16))} for _ in range(4)], "test")
    reports = {}
    for checks in ("", f"contains:{req}"):
        mm = copy(m)
        spec = "mixed-precision{max_drop=1000,bits=2:8,samples=2,holdout=2" + (f",checks={checks}" if checks else "")
        for p in parse_pipeline(spec + "}", host().passes.as_dict()):
            p.run(mm, PassContext(calibration=calib, passes=host().passes.as_dict(), checks=host().checks.as_dict()))
        reports[checks] = (mm.reports["edgec.mixed_precision"], mm)
    free, _ = reports[""]
    held, mm = reports[f"contains:{req}"]
    assert free["histogram"]["8"] == 0 and free["decided_by"] == "the smallest allocation passed"
    assert held["bytes"] > free["bytes"]
    assert f"check contains:{req}" in held["decided_by"]
    assert want in generate(mm, ["x:"], 8)[0]  # the chosen model keeps the property
