"""Tool-calling evaluation: the shipped set, rendering with a chat template, call parsing and metrics, ``edgec eval
--tool-calls``, the ``toolcall:`` check and calibration from chat transcripts."""

from __future__ import annotations

import importlib.util
import json
import os
import re

import jsonschema
import pytest
from click.testing import CliRunner

from edgec.api.llm import GGUF_KV_KEY, SOURCE_KEY, LLMConfig
from edgec.api.tokenizer import tokenizer_for
from edgec.api.toolcalls import (
    ChatRenderer,
    Example,
    calls_agree,
    encode_prompt,
    load_examples,
    parse_calls,
    parse_example,
    renderer_for,
    score_example,
    summarize,
)
from edgec.calibration import load_calibration
from edgec.checks import parse_checks
from edgec.cli import main
from edgec.errors import UsageError
from edgec.host import host
from edgec.ir.serde import copy
from edgec.plugins.checks.generation import generate_ids
from tests.llm.conftest import chain_decoder

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SET_DIR = os.path.join(ROOT, "examples", "toolcalls")
SET = os.path.join(SET_DIR, "toolcalls.jsonl")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIMER = {
    "type": "function",
    "function": {
        "name": "set_timer",
        "description": "Start a timer.",
        "parameters": {
            "type": "object",
            "properties": {"minutes": {"type": "integer", "minimum": 1}},
            "required": ["minutes"],
        },
    },
}


def _example(expected: list[dict], ex_id: str = "t") -> Example:
    return parse_example(
        {"id": ex_id, "messages": [{"role": "user", "content": "q"}], "tools": [WEATHER, TIMER], "expected": expected}
    )


def _call(name: str, **args) -> dict:
    return {"name": name, "arguments": args}


def _tag(*calls: dict) -> str:
    return "<tool_call>" + json.dumps(list(calls)) + "</tool_call>"


# ------------------------------------------------------------------------------------------------ the set
def _load_script():
    spec = importlib.util.spec_from_file_location("make_toolcalls", os.path.join(SET_DIR, "make_toolcalls.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_shipped_set_validates():
    """Every line parses; each tool's parameters are a valid JSON Schema and each expected call's arguments validate
    against its tool's (jsonschema directly); the set is what its script writes, under its own licence."""
    with open(SET, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) >= 150 and len({r["id"] for r in rows}) == len(rows)
    pool = set()
    for r in rows:
        tools = {t["function"]["name"]: t["function"] for t in r["tools"]}
        assert 2 <= len(r["tools"]) <= 5 and len(tools) == len(r["tools"]), r["id"]
        assert all(t["type"] == "function" for t in r["tools"])
        pool |= set(tools)
        for fn in tools.values():
            jsonschema.Draft202012Validator.check_schema(fn["parameters"])
        for c in r["expected"]:
            assert c["name"] in tools, r["id"]
            jsonschema.validate(c["arguments"], tools[c["name"]]["parameters"], cls=jsonschema.Draft202012Validator)
    assert 30 <= len(pool) <= 40
    assert sum(len(r["expected"]) == 2 for r in rows) >= 15  # parallel calls
    assert sum(len(r["messages"]) > 1 for r in rows) >= 5  # earlier turns or system messages
    args = [a for r in rows for c in r["expected"] for a in c["arguments"].values()]
    assert any(isinstance(a, bool) for a in args) and any(isinstance(a, float) for a in args)
    assert any(isinstance(a, int) and not isinstance(a, bool) for a in args)
    assert len(load_examples(SET)) == len(rows)  # edgec's own loader agrees
    assert rows == _load_script().records()  # the committed file is what the script writes
    for f in ("README.md", "LICENSE"):
        assert os.path.exists(os.path.join(SET_DIR, f))


def test_the_shipped_set_states_every_argument():
    """Unambiguous prompts: each expected string (enums aside, which the schema spells) and number appears in the
    conversation."""
    for ex in load_examples(SET):
        text = " ".join(m["content"] for m in ex.messages)
        numbers = {float(x) for x in re.findall(r"\d+(?:\.\d+)?", text)}
        for c in ex.expected:
            props = ex.tool(c.name)["parameters"]["properties"]
            for k, v in c.arguments.items():
                if isinstance(v, bool) or "enum" in props[k]:
                    continue
                for item in v if isinstance(v, list) else [v]:
                    if isinstance(item, str):
                        assert item in text, (ex.id, k, item)
                    else:
                        assert float(item) in numbers, (ex.id, k, item)


def test_malformed_sets_name_the_line(tmp_path, smol_path):
    good = {
        "id": "a",
        "messages": [{"role": "user", "content": "q"}],
        "tools": [WEATHER],
        "expected": [_call("get_weather", city="X")],
    }
    cases = [
        ("{not json", "line 2: not JSON"),
        (json.dumps({**good, "tools": []}), "line 2: 'tools' must be a non-empty list"),
        (json.dumps({**good, "expected": [_call("nope")]}), "line 2: expected[0]: 'nope' is not among the tools"),
        (json.dumps({**good, "expected": [_call("get_weather", city="X", unit="kelvin")]}), "'kelvin' is not one of"),
        (json.dumps({**good, "expected": [_call("get_weather")]}), "'city' is a required property"),
        (json.dumps({**good, "messages": [{"role": "robot", "content": "q"}]}), "messages[0]: expected {'role'"),
        (json.dumps(good), "line 2: id 'a' was already used on line 1"),
        (
            json.dumps({**good, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]}),
            "not a valid JSON Schema",
        ),
    ]
    for bad, want in cases:
        f = tmp_path / "bad.jsonl"
        f.write_text(json.dumps(good) + "\n" + bad + "\n")
        with pytest.raises(UsageError, match=re.escape(want)):
            load_examples(str(f))
        r = CliRunner().invoke(main, ["eval", smol_path, "--tool-calls", str(f)])  # refused before the model loads
        assert r.exit_code == 2 and f"{f}, line 2" in r.output and want in r.output, r.output
    r = CliRunner().invoke(main, ["eval", smol_path, "--reference", smol_path, "--chat", "hi"])
    assert r.exit_code == 2 and "--reference and --limit apply to --tool-calls" in r.output


# ------------------------------------------------------------------------------------------- parsing, metrics
def test_parse_calls():
    one = [_call("f", a=1)]
    assert parse_calls(_tag(*one)).calls == parse_calls('x {"name": "f", "arguments": {"a": 1}} y').calls
    p = parse_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call><tool_call>[{"name": "g"}]')
    assert p.json_valid and [(c.name, c.arguments) for c in p.calls] == [("f", {"a": 1}), ("g", {})]
    p = parse_calls('[{"type": "function", "function": {"name": "f", "parameters": {"a": 1}}}]')
    assert [(c.name, c.arguments) for c in p.calls] == [("f", {"a": 1})]
    assert parse_calls('<tool_call>[{"name": "f", "arguments": {"a": 1}]</tool_call>').json_valid is False
    assert parse_calls("no json here").json_valid is False
    assert parse_calls("[1, 2]").json_valid and parse_calls("[1, 2]").calls is None  # JSON, but not calls
    assert parse_calls("<tool_call>[]</tool_call>").calls == []


def test_scores_by_hand():
    paris = _example([_call("get_weather", city="Paris", unit="celsius")])
    s = score_example(paris, _tag(_call("get_weather", unit="celsius", city="Paris")))
    assert (s.json_valid, s.schema_valid, s.name_correct, s.success) == (True, True, True, True)
    assert (s.exact_calls, s.tp, s.fp, s.fn) == (1, 2, 0, 0)
    s = score_example(paris, _tag(_call("set_timer", minutes=5)))  # wrong name: a valid call of another tool
    assert (s.json_valid, s.schema_valid, s.name_correct, s.exact_calls, s.tp, s.fp, s.fn) == (
        True,
        True,
        False,
        0,
        0,
        1,
        2,
    )
    s = score_example(paris, _tag(_call("get_weather", city="Lyon", unit="celsius")))  # wrong argument
    assert (s.schema_valid, s.name_correct, s.success, s.exact_calls, s.tp, s.fp, s.fn) == (
        True,
        True,
        False,
        0,
        1,
        1,
        1,
    )
    s = score_example(paris, '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"]</tool_call>')
    assert (s.json_valid, s.schema_valid, s.name_correct, s.tp, s.fp, s.fn) == (False, False, False, 0, 0, 2)
    s = score_example(paris, _tag(_call("get_weather", city="Paris", unit="kelvin")))  # off the enum
    assert (s.json_valid, s.schema_valid, s.name_correct, s.tp, s.fp, s.fn) == (True, False, True, 1, 1, 1)
    assert "kelvin" in s.problems[0]
    s = score_example(paris, _tag(_call("get_temperature", city="Paris")))  # no such tool: schema-invalid
    assert (s.schema_valid, s.name_correct, s.fp, s.fn) == (False, False, 1, 2) and "not an offered tool" in s.problems[
        0
    ]
    assert not score_example(paris, "<tool_call>[]</tool_call>").schema_valid  # no call is no valid call
    timer = _example([_call("set_timer", minutes=15)])
    assert score_example(timer, '{"name": "set_timer", "arguments": {"minutes": 15.0}}').success  # 15.0 is 15
    assert not score_example(timer, '{"name": "set_timer", "arguments": {"minutes": "15"}}').schema_valid
    # parallel calls: order does not matter; each expected call is matched once
    two = _example([_call("get_weather", city="Oslo"), _call("get_weather", city="Madrid")])
    s = score_example(two, _tag(_call("get_weather", city="Madrid"), _call("get_weather", city="Oslo")))
    assert s.success and (s.exact_calls, s.tp, s.fp, s.fn) == (2, 2, 0, 0)
    s = score_example(two, _tag(_call("get_weather", city="Madrid")))  # one of two
    assert not s.name_correct and (s.exact_calls, s.tp, s.fp, s.fn) == (1, 1, 0, 1)
    s = score_example(
        two, _tag(_call("get_weather", city="Madrid"), _call("get_weather", city="Oslo"), _call("set_timer", minutes=2))
    )
    assert not s.name_correct and not s.success and (s.exact_calls, s.fp) == (2, 1)  # an extra call
    # the set: micro-averaged over expected calls and (key, value) pairs
    gens = [
        (paris, _tag(_call("get_weather", city="Paris", unit="celsius"))),  # tp 2
        (paris, _tag(_call("get_weather", city="Lyon", unit="celsius"))),  # tp 1, fp 1, fn 1
        (two, _tag(_call("get_weather", city="Madrid"))),  # tp 1, fn 1
        (timer, "I cannot do that."),  # fn 1
    ]
    m = summarize([score_example(e, g) for e, g in gens])
    assert m["examples"] == 4 and m["expected_calls"] == 5
    assert m["json_valid"] == 0.75 and m["schema_valid"] == 0.75 and m["name_accuracy"] == 0.5
    assert m["argument_exact_match"] == 2 / 5 and m["success"] == 0.25
    assert m["argument_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 3))  # tp 4, fp 1, fn 3: 2/3


def test_reference_agreement():
    a = _tag(_call("get_weather", city="Oslo"), _call("set_timer", minutes=3))
    assert calls_agree(
        a,
        '[{"name": "set_timer", "arguments": {"minutes": 3.0}}, {"arguments": {"city": "Oslo"}, "name": "get_weather"}]',
    )
    assert not calls_agree(a, _tag(_call("get_weather", city="Oslo")))
    assert not calls_agree(a, "nothing") and calls_agree("nothing", "no json either")
    assert calls_agree("an empty list '[]' is no call", "nothing") and calls_agree("[1, 2]", "<tool_call>[]")
    ex = _example([_call("set_timer", minutes=3)])
    m = summarize([score_example(ex, "x")] * 2, [True, False])
    assert m["reference_agreement"] == 0.5


# -------------------------------------------------------------------------------------------------- rendering
def test_rendering_smollm2_puts_tools_in_a_system_message(smol_path):
    """SmolLM2-Instruct's template ignores tools: they go into its function-calling system prompt."""
    from edgec.api.tokenizer import LlamaCppTokenizer

    tok = LlamaCppTokenizer(smol_path)
    r = renderer_for(tok)
    assert not r.supports_tools
    p = r.render([{"role": "user", "content": "Weather in Paris?"}], [WEATHER, TIMER])
    assert p.rendering == "system-prompt"
    assert p.text.startswith("<|im_start|>system\nYou are an expert in composing functions.")
    assert "<tools>" + json.dumps([WEATHER, TIMER]) + "</tools>" in p.text and "<tool_call>[" in p.text
    assert p.text.endswith("<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    ids = encode_prompt(tok, p.text)
    assert ids[0] == 1 and ids.count(1) == 3  # <|im_start|> is one token (no BOS added: SmolLM2 adds none)
    # a transcript: the assistant's calls and the tool's result in that format, after any system text
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Timer 3 min"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "set_timer", "arguments": '{"minutes": 3}'}}],
        },
        {"role": "tool", "content": "started"},
        {"role": "assistant", "content": "Done."},
    ]
    t = r.render(msgs, [TIMER], add_generation_prompt=False).text
    assert t.count("<|im_start|>system") == 1 and "</tool_call>\n\nBe brief.<|im_end|>" in t
    assert (
        '<|im_start|>assistant\n<tool_call>[{"name": "set_timer", "arguments": {"minutes": 3}}]</tool_call><|im_end|>'
        in t
    )
    assert "<|im_start|>user\n<tool_response>\nstarted\n</tool_response><|im_end|>" in t
    assert not t.endswith("<|im_start|>assistant\n")


def test_rendering_uses_a_template_that_takes_tools():
    tpl = (
        "{{ bos_token }}{% if tools %}[TOOLS]{{ tools | tojson }}[/TOOLS]{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    r = ChatRenderer(tpl, bos_token="<s>")
    assert r.supports_tools
    p = r.render([{"role": "user", "content": "Wie spät ist es?"}], [TIMER])
    assert (
        p.rendering == "template"
        and p.text == f"<s>[TOOLS]{json.dumps([TIMER])}[/TOOLS]<user>Wie spät ist es?<assistant>"
    )
    assert r.render([{"role": "user", "content": "hi"}]).rendering == "none"
    with pytest.raises(UsageError, match="refuses the conversation: no system"):
        ChatRenderer("{{ raise_exception('no system') }}").render([{"role": "user", "content": "hi"}])


# ------------------------------------------------------------------------------- tiny models: check, calibration
# SmolLM2's tokenizer: a rendered prompt ends in '\n' (198); these tokens, each used once, decode to
# '[{"name":"weather","arguments": {"city":"Paris"}}]' and the end-of-sequence token (2) follows.
CALL = [75, 39428, 1245, 25535, 29624, 14460, 24370, 1799, 9583, 20721, 18, 25898, 38634, 23597, 31845]
ROME = {25898: 46292, 46292: 23597}  # ':"' -> 'Rome' -> '"}': the right tool, the wrong city
TINY = LLMConfig(
    arch="llama",
    vocab_size=49152,
    hidden=64,
    intermediate=128,
    layers=2,
    heads=4,
    kv_heads=4,
    head_dim=16,
    context_length=512,
    bos_token_id=1,
    eos_token_id=2,
    name="tool-chain",
)
TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _chain_model(smol_path: str, successor: dict[int, int] | None = None, metadata: dict | None = None):
    """The chain decoder (tests/llm/conftest.py): greedy decoding after a rendered prompt writes the weather call
    for Paris (``successor`` overrides links)."""
    chain = [198, *CALL, 2]
    links = dict(zip(chain[:-1], chain[1:]))
    links.update(successor or {})
    return chain_decoder(TINY, links, metadata or {SOURCE_KEY: "gguf:" + smol_path})


def _tool_set(path, expected_name: str = "weather", n: int = 2) -> str:
    with open(path, "w") as f:
        for k, q in enumerate(["What's the weather in Paris?", "Is it sunny in Paris?", "Paris: rain?"][:n]):
            f.write(
                json.dumps(
                    {
                        "id": f"w{k}",
                        "messages": [{"role": "user", "content": q}],
                        "tools": [TOOL, {**TOOL, "function": {**TOOL["function"], "name": "forecast"}}],
                        "expected": [_call(expected_name, city="Paris")],
                    }
                )
                + "\n"
            )
    return str(path)


def test_toolcall_check_keeps_and_breaks(smol_path, tmp_path):
    good = _chain_model(smol_path)
    tok = tokenizer_for(good)
    ids = encode_prompt(tok, renderer_for(tok).render([{"role": "user", "content": "Paris?"}], [TOOL]).text)
    assert generate_ids(good, [ids], 24) == ['[{"name":"weather","arguments": {"city":"Paris"}}]']
    reg = host().checks.as_dict()
    (chk,) = parse_checks(f"toolcall:{_tool_set(tmp_path / 'set.jsonl')}@24", reg)
    assert chk.tokens == 24
    chk.prepare(good)
    assert chk.float_scores["name_accuracy"] == 1 and chk.float_scores["argument_exact_match"] == 1
    res = chk.judge(copy(good), None, None)
    assert res.passed and res.value == 1
    res = chk.judge(_chain_model(smol_path, ROME), None, None)  # the city is lost: 100 points down
    assert not res.passed and res.value == 0 and "names 1.000" in res.detail and "2 prompt(s) lost" in res.detail
    assert "Rome" in res.detail
    # a set on which the float model gets nothing right cannot tell candidates apart
    (chk,) = parse_checks(f"toolcall:{_tool_set(tmp_path / 'other.jsonl', 'forecast')}@24", reg)
    with pytest.raises(UsageError, match="the float model gets no call right on any of the 2 prompts"):
        chk.prepare(good)


def test_qat_honours_the_toolcall_check(smol_path, tmp_path):
    """qat{checks=toolcall:...} judges the trained model's calls against the float model's: the chain model at
    8 bits keeps the weather call for Paris, and the verdict is in the report."""
    import numpy as np

    from edgec.calibration import CalibrationSet
    from edgec.ir.passes import PassContext, PassManager, parse_pipeline

    model = _chain_model(smol_path)
    rng = np.random.default_rng(0)
    samples = [{"input_ids": rng.integers(0, TINY.vocab_size, (1, 16)).astype(np.int64)} for _ in range(4)]
    h = host()
    ctx = PassContext(calibration=CalibrationSet(samples, "test"), passes=h.passes.as_dict(), checks=h.checks.as_dict())
    check = f"toolcall:{_tool_set(tmp_path / 'set.jsonl')}@24"
    PassManager(parse_pipeline(f"quantize{{bits=8}},qat{{steps=2,checks={check}}}", ctx.passes)).run(model, ctx)
    rep = model.reports["qat"]
    assert rep["checks"][check]["passed"] and rep["checks"][check]["value"] == 1 and "reverted" not in rep


def test_toolcall_check_usage_errors(tmp_path):
    reg = host().checks.as_dict()
    assert "toolcall" in reg and "2 points" in reg["toolcall"].summary
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "a"}\n')
    with pytest.raises(UsageError, match=r"(?s)check toolcall: .*bad.jsonl, line 1: .*'messages' must be"):
        parse_checks(f"toolcall:{f}", reg)
    with pytest.raises(UsageError, match="must be the number of new tokens"):
        parse_checks(f"toolcall:{f}@lots", reg)
    (chk,) = parse_checks(f"toolcall:{SET}", reg)
    assert chk.tokens == 96 and len(chk.examples) >= 150


def test_calibration_from_chat_transcripts(smol_path, tmp_path):
    """Each conversation is rendered with the template (tools in SmolLM2's system prompt, calls and results in its
    format), the conversations' tokens follow one another, and every window is a slice of that stream."""
    model = _chain_model(smol_path)
    convs = [
        {
            "messages": [
                {"role": "user", "content": "Timer for 3 minutes"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "set_timer", "arguments": {"minutes": 3}}}]},
                {"role": "tool", "content": "started"},
                {"role": "assistant", "content": "Your 3 minute timer is running."},
            ],
            "tools": [TIMER],
        },
        {"messages": [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi, how can I help?"}]},
    ]
    f = tmp_path / "chats.jsonl"
    f.write_text("\n".join(json.dumps(c) for c in convs) + "\n")
    calib = load_calibration(str(f), model, max_samples=4, seq_len=64)
    assert len(calib) == 4 and all(s["input_ids"].shape == (1, 64) for s in calib.samples)
    tok = tokenizer_for(model)
    r = renderer_for(tok)
    stream = [t for c in convs for t in encode_prompt(tok, r.render(c["messages"], c.get("tools"), False).text)]
    text = tok.decode(stream)
    assert "<tools>" in text and '<tool_call>[{"name": "set_timer", "arguments": {"minutes": 3}}]' in text
    assert "<tool_response>\nstarted" in text and "Hi, how can I help?" in text
    joined = ",".join(map(str, stream))
    for s in calib.samples:
        assert ",".join(map(str, s["input_ids"][0])) in joined
    assert (
        stream.count(1) == 8
    )  # <|im_start|> as its token: 4 turns + the tools system message, 2 + SmolLM2's default system
    f.write_text('{"messages": "hi"}\n')
    with pytest.raises(Exception, match=r"chats.jsonl, line 1: expected \{\"messages\""):
        load_calibration(str(f), model)


# ------------------------------------------------------------------------------------------------- edgec eval
def _write_gguf(model, path: str) -> str:
    from edgec.ir.passes import PassContext
    from edgec.targets.gguf import GGUFTarget

    d = os.path.dirname(path)
    GGUFTarget(ftype="F32").emit(model, d, PassContext())
    os.replace(os.path.join(d, "model.gguf"), path)
    return path


@pytest.mark.slow
def test_eval_tool_calls_reference_and_llama_cpp(smol_path, smol_kv, tmp_path):
    """The chain model as a GGUF file: on the reference executor and, compiled, on llama.cpp, it makes every call
    right, and the artifact agrees with the file it came from (--reference)."""
    src = _write_gguf(_chain_model(smol_path, metadata={GGUF_KV_KEY: smol_kv}), str(tmp_path / "chain.gguf"))
    tools = _tool_set(tmp_path / "set.jsonl")
    r = CliRunner().invoke(main, ["eval", src, "--tool-calls", tools, "--max-new-tokens", "24", "--json"])
    assert r.exit_code == 0, r.output
    ref = json.loads(r.stdout)
    tc = ref["tool_calls"]
    assert ref["engine"] == "reference" and tc["rendering"] == ["system-prompt"] and tc["max_new_tokens"] == 24
    assert (
        tc["metrics"]["success"] == 1
        and tc["metrics"]["argument_f1"] == 1
        and "reference_agreement" not in tc["metrics"]
    )
    out = tmp_path / "art"
    r = CliRunner().invoke(main, ["compile", src, "--target", "gguf", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        main, ["eval", str(out), "--tool-calls", tools, "--reference", src, "--max-new-tokens", "24", "--limit", "1"]
    )
    assert r.exit_code == 0, r.output
    assert "(llama.cpp," in r.output and "tools rendered: system-prompt" in r.output
    assert re.search(r"reference agreement\s+100\.00 %", r.output) and re.search(r"success\s+100\.00 %", r.output)


@pytest.mark.slow
def test_eval_tool_calls_smollm2_gguf(smol_path, tmp_path):
    """SmolLM2-135M-Instruct compiled to F16 GGUF, two prompts of the shipped set on llama.cpp; against itself as
    the reference, every call agrees (greedy decoding is deterministic)."""
    out = tmp_path / "smol.f16"
    r = CliRunner().invoke(main, ["compile", smol_path, "--target", "gguf", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        main,
        [
            "eval",
            str(out),
            "--tool-calls",
            SET,
            "--limit",
            "2",
            "--max-new-tokens",
            "32",
            "--reference",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    tc = res["tool_calls"]
    assert res["engine"] == "llama.cpp" and tc["rendering"] == ["system-prompt"] and len(tc["examples"]) == 2
    m = tc["metrics"]
    assert m["examples"] == 2 and m["reference_agreement"] == 1.0
    assert all(0 <= m[k] <= 1 for k in ("json_valid", "schema_valid", "name_accuracy", "argument_exact_match"))
    assert [e["id"] for e in tc["examples"]] == [e.id for e in load_examples(SET)[:2]]
