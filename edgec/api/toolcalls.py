"""Tool calling (function calling): the prompts, their rendering in a model's chat template, and the metrics.

An agent deploys a language model on the calls it writes: a function name from the tools offered and arguments
that fit the function's JSON Schema. Those break first under quantization, long before perplexity moves, so this
module gives the driver (``edgec eval --tool-calls``), the ``toolcall:`` property check and chat calibration
(``--calib transcripts.jsonl``) one definition of each step:

* **The set** (:func:`load_examples`): JSON Lines, one example per line::

      {"id": "weather-paris",
       "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
       "tools": [{"type": "function", "function": {"name": "get_weather", "description": "...",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, ...}}}, ...],
       "expected": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}

  Every line is checked (JSON, the fields, each tool's parameters a valid JSON Schema, each expected call naming
  an offered tool with arguments valid against its schema); a bad line is a :class:`~edgec.errors.UsageError`
  naming its number and what is wrong.
* **Rendering** (:class:`ChatRenderer`): the model's own Jinja chat template, given ``tools=`` when it uses them
  (``rendering == "template"``). A template that ignores tools (SmolLM2-Instruct's) gets them in a system message in
  the format SmolLM2-Instruct was fine-tuned on for function calling: the tools as JSON inside ``<tools>...</tools>``
  and the answer asked for as ``<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>``
  (``rendering == "system-prompt"``); assistant ``tool_calls`` and ``tool`` results in a transcript become that
  format's ``<tool_call>`` / ``<tool_response>`` text.
* **Parsing** (:func:`parse_calls`): the JSON inside ``<tool_call>`` tags (several blocks are concatenated), else
  the first JSON object or array in the text; a call is ``{"name": ..., "arguments": {...}}`` (also OpenAI's
  ``{"function": {...}}`` wrapper, ``parameters`` for ``arguments``, and arguments as a JSON string).
* **Metrics** (:func:`score_example`, :func:`summarize`), over the set:

  - ``json_valid``: the generation holds parseable JSON where the calls should be;
  - ``schema_valid``: it is a non-empty list of well-formed calls, each naming an offered tool (an unknown name is
    schema-invalid) with arguments valid against that tool's ``parameters``;
  - ``name_accuracy``: the multiset of called names equals the expected one;
  - ``argument_exact_match``: over the expected calls, the fraction whose arguments the model wrote exactly (each
    expected call is matched to a generated call of the same name: an exact one first, else the closest);
  - ``argument_f1``: F1 over ``(key, canonical JSON value)`` pairs of matched calls (unmatched calls count all
    their pairs as missed or spurious), micro-averaged over the set;
  - ``success``: every expected call made exactly and nothing else (the deployed "tool call success");
  - ``reference_agreement`` (with a reference model's generations): the same calls (names and arguments, as
    multisets) as the reference; a generation without well-formed calls makes none, so two such agree (the
    candidate behaves as the reference does).

  Values compare as canonical JSON: key order is ignored and ``5.0`` equals ``5``, but ``true`` is not ``1`` and
  strings are case-sensitive. An argument the user did not state (an optional one filled with a default) makes a
  call inexact: the set's expected arguments are exactly what each prompt states.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import BadInputError, UnsupportedError, UsageError
from .tokenizer import Tokenizer

ROLES = ("system", "user", "assistant", "tool")

# SmolLM2-Instruct's function-calling system prompt (its model card; Ollama's smollm2 template carries the same):
# the tools as JSON inside <tools>, the calls asked for as a JSON list inside <tool_call>.
TOOLS_SYSTEM_PROMPT = (
    "You are an expert in composing functions. You are given a question and a set of possible functions.\n"
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose.\n"
    "If none of the functions can be used, point it out and refuse to answer.\n"
    "If the given question lacks the parameters required by the function, also point it out.\n"
    "You have access to the following tools:\n"
    "<tools>{tools}</tools>\n"
    "The output MUST strictly adhere to the following format, and NO other text MUST be included.\n"
    "The example format is as follows. Please make sure the parameter type is correct. If no function call is "
    "needed, please make the tool calls an empty list '[]'.\n"
    "<tool_call>[\n"
    '{"name": "func_name1", "arguments": {"argument1": "value1", "argument2": "value2"}},\n'
    "... (more tool calls as required)\n"
    "]</tool_call>"
)
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


# ---------------------------------------------------------------------------------------------------- the set
@dataclasses.dataclass(frozen=True)
class Call:
    """One function call: a name and its arguments (a JSON object)."""

    name: str
    arguments: dict[str, Any]

    def canonical(self) -> str:
        """The call as canonical JSON (sorted keys, integral floats as integers): equal calls, equal strings."""
        return canonical_json({"name": self.name, "arguments": self.arguments})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclasses.dataclass(frozen=True)
class Example:
    """One prompt of a tool-calling set: the conversation, the tools offered (OpenAI form) and the expected calls."""

    id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    expected: list[Call]

    def tool(self, name: str) -> dict[str, Any] | None:
        """The ``function`` object of the offered tool called ``name``, or None."""
        for t in self.tools:
            fn: dict[str, Any] = t["function"]
            if fn["name"] == name:
                return fn
        return None


def _jsonschema() -> Any:
    try:
        import jsonschema
    except ImportError:
        raise UnsupportedError(
            "tool-call evaluation validates arguments with the 'jsonschema' package: pip install jsonschema "
            "(it comes with edgec[llm])"
        ) from None
    return jsonschema


def _validator(schema: Mapping[str, Any]) -> Any:
    """A JSON Schema validator for ``schema`` (its ``$schema`` draft, else the latest)."""
    js = _jsonschema()
    cls = js.validators.validator_for(schema)
    return cls(schema)


def _schema_errors(schema: Mapping[str, Any], instance: Any) -> list[str]:
    """Every way ``instance`` breaks ``schema``, one line each (empty: valid)."""
    out = []
    for e in sorted(_validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in e.absolute_path)
        out.append(f"{where + ': ' if where else ''}{e.message}")
    return out


def _tool(t: Any, problems: list[str], where: str) -> dict[str, Any] | None:
    """An offered tool in OpenAI form (``{"type": "function", "function": {...}}``; a bare function object is
    wrapped), or None with the problem noted."""
    if isinstance(t, dict) and "function" in t:
        if t.get("type", "function") != "function":
            problems.append(f"{where}: type {t.get('type')!r} is not 'function'")
            return None
        fn = t["function"]
    else:
        fn = t
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        problems.append(f"{where}: expected {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}")
        return None
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, dict):
        problems.append(f"{where} ({fn['name']}): parameters must be a JSON Schema object")
        return None
    js = _jsonschema()
    try:
        js.validators.validator_for(params).check_schema(params)
    except js.exceptions.SchemaError as e:
        problems.append(f"{where} ({fn['name']}): parameters are not a valid JSON Schema: {e.message}")
        return None
    return {"type": "function", "function": {**fn, "parameters": params}}


def _message(m: Any, problems: list[str], where: str) -> dict[str, Any] | None:
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        problems.append(f"{where}: expected {{'role': one of {', '.join(ROLES)}, 'content': ...}}")
        return None
    if not isinstance(m.get("content", ""), (str, type(None))) or (
        m.get("content") is None and not m.get("tool_calls")
    ):
        problems.append(f"{where}: 'content' must be a string")
        return None
    return dict(m)


def _conversation(
    msgs: Any, raw_tools: Any, problems: list[str], *, tools_required: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages and offered tools of a conversation (a tool-calling example's or a calibration transcript's),
    each checked, every problem appended to ``problems``."""
    messages: list[dict[str, Any]] = []
    if not isinstance(msgs, list) or not msgs:
        problems.append("'messages' must be a non-empty list of {role, content}")
    else:
        for i, raw in enumerate(msgs):
            m = _message(raw, problems, f"messages[{i}]")
            if m is not None:
                messages.append(m)
    tools: list[dict[str, Any]] = []
    if raw_tools is None and not tools_required:
        return messages, tools
    if not isinstance(raw_tools, list) or (tools_required and not raw_tools):
        problems.append("'tools' must be a non-empty list of tool schemas")
    else:
        for i, raw in enumerate(raw_tools):
            t = _tool(raw, problems, f"tools[{i}]")
            if t is not None:
                tools.append(t)
        names = [t["function"]["name"] for t in tools]
        dup = sorted(n for n, c in Counter(names).items() if c > 1)
        if dup:
            problems.append(f"tools offered twice: {', '.join(dup)}")
    return messages, tools


def _problems_error(where: str, problems: list[str], error: type[Exception] = UsageError) -> Exception:
    return error(f"{where}: " + (problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems)))


def parse_transcript(
    obj: Any, where: str, error: type[Exception] = UsageError
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """A calibration transcript's (messages, tools or None) from one parsed JSON line; ``error`` listing every
    problem (``where`` prefixes them)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        raise error(
            f'{where}: expected {{"messages": [{{"role": ..., "content": ...}}, ...], "tools": [...] (optional)}}'
        )
    problems: list[str] = []
    messages, tools = _conversation(obj["messages"], obj.get("tools"), problems, tools_required=False)
    if problems:
        raise _problems_error(where, problems, error)
    return messages, (tools if obj.get("tools") is not None else None)


def json_lines(path: str, label: str, error: type[Exception] = UsageError) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line of a JSON Lines file; a BadInputError when the file
    cannot be read, ``error`` naming ``label`` and the line for one that is not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{label}: cannot read it as UTF-8 text ({e})") from None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise error(f"{label}, line {no}: not JSON ({e}); each line must be one JSON object") from None
        yield no, obj


def parse_example(obj: Any, where: str = "example") -> Example:
    """An :class:`Example` from one parsed JSON line; a UsageError listing every problem (``where`` prefixes them)."""
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object with id, messages, tools and expected")
    problems: list[str] = []
    ex_id = obj.get("id")
    if not isinstance(ex_id, (str, int)) or isinstance(ex_id, bool) or ex_id == "":
        problems.append("'id' must be a non-empty string")
    messages, tools = _conversation(obj.get("messages"), obj.get("tools"), problems, tools_required=True)
    by_name = {t["function"]["name"]: t["function"] for t in tools}
    raw_exp = obj.get("expected")
    expected: list[Call] = []
    if not isinstance(raw_exp, list) or not raw_exp:
        problems.append("'expected' must be a non-empty list of {name, arguments}")
    else:
        for i, c in enumerate(raw_exp):
            w = f"expected[{i}]"
            if (
                not isinstance(c, dict)
                or not isinstance(c.get("name"), str)
                or not isinstance(c.get("arguments"), dict)
            ):
                problems.append(f"{w}: expected {{'name': ..., 'arguments': {{...}}}}")
                continue
            fn = by_name.get(c["name"])
            if fn is None:
                if tools:
                    problems.append(f"{w}: {c['name']!r} is not among the tools offered ({', '.join(by_name)})")
                continue
            bad = _schema_errors(fn["parameters"], c["arguments"])
            if bad:
                problems.append(f"{w} ({c['name']}): arguments do not match the tool's parameters: {'; '.join(bad)}")
            expected.append(Call(c["name"], c["arguments"]))
    if problems:
        raise _problems_error(where, problems)
    return Example(str(ex_id), messages, tools, expected)


def load_examples(path: str) -> list[Example]:
    """The examples of a tool-calling set (JSON Lines, see the module docstring); a UsageError naming the file, the
    line and what is wrong for any malformed line (blank lines are skipped)."""
    out: list[Example] = []
    seen: dict[str, int] = {}
    for no, obj in json_lines(path, path):
        ex = parse_example(obj, f"{path}, line {no}")
        if ex.id in seen:
            raise UsageError(f"{path}, line {no}: id {ex.id!r} was already used on line {seen[ex.id]}")
        seen[ex.id] = no
        out.append(ex)
    if not out:
        raise UsageError(f"{path} holds no examples (one JSON object per line: id, messages, tools, expected)")
    return out


# ------------------------------------------------------------------------------------------------- rendering
@dataclasses.dataclass(frozen=True)
class RenderedPrompt:
    """A conversation rendered for the model: the text, and how the tools got into it (``template``: the model's
    template took ``tools=``; ``system-prompt``: SmolLM2-Instruct's tool system message; ``none``: no tools)."""

    text: str
    rendering: str


class ChatRenderer:
    """A model's Jinja chat template, rendered as Hugging Face transformers and llama.cpp do (sandboxed, trimmed
    blocks, ``raise_exception``, ``tojson`` without ASCII escapes)."""

    def __init__(self, template: str, bos_token: str = "", eos_token: str = ""):
        import jinja2
        import jinja2.ext
        from jinja2 import meta
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])

        def tojson(
            x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
        ) -> str:
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env.filters["tojson"] = tojson
        try:
            ast = env.parse(template)
            self._template = env.from_string(template)
        except jinja2.TemplateError as e:
            raise BadInputError(f"the model's chat template does not parse: {e}") from None
        self.supports_tools = "tools" in meta.find_undeclared_variables(ast)
        self.bos_token, self.eos_token = bos_token, eos_token

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> RenderedPrompt:
        """``messages`` (and ``tools``, OpenAI form) as the model's prompt text; with ``add_generation_prompt`` it
        ends where the assistant's reply starts."""
        import jinja2

        if tools and self.supports_tools:
            how, msgs, kw = "template", [dict(m) for m in messages], {"tools": list(tools)}
        else:
            how = "system-prompt" if tools else "none"
            msgs, kw = with_tools_system_prompt(messages, tools or []), {}

        def raise_exception(message: str) -> None:
            raise jinja2.TemplateError(message)

        try:
            text = self._template.render(
                messages=msgs,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                raise_exception=raise_exception,
                **kw,
            )
        except jinja2.TemplateError as e:
            raise UsageError(f"the model's chat template refuses the conversation: {e}") from None
        return RenderedPrompt(text, how)


def tools_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """SmolLM2-Instruct's function-calling system prompt offering ``tools``."""
    return TOOLS_SYSTEM_PROMPT.replace("{tools}", json.dumps(list(tools), ensure_ascii=False))


def with_tools_system_prompt(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``messages`` for a template without tools: the tools in a leading system message (before any system text
    the conversation had), assistant ``tool_calls`` as ``<tool_call>[...]</tool_call>`` text and ``tool`` results
    as user ``<tool_response>`` messages, as SmolLM2-Instruct's function-calling data has them."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            calls = [c.to_dict() for c in (_as_call(c) for c in m["tool_calls"]) if c is not None]
            text = CALL_OPEN + json.dumps(calls, ensure_ascii=False) + CALL_CLOSE
            content = f"{content}\n{text}" if content else text
        elif role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        out.append({"role": role, "content": content})
    if tools:
        system = tools_system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{system}\n\n{out[0]['content']}"}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out


def renderer_for(tok: Tokenizer) -> ChatRenderer:
    """The chat renderer of a model's tokenizer; an UnsupportedError where the model ships no chat template."""
    if not tok.chat_template:
        raise UnsupportedError(
            f"the model's tokenizer ({tok.name or 'its source'}) carries no chat template; tool calls and chat "
            "transcripts are rendered with the template an instruction-tuned model ships (tokenizer.chat_template)"
        )
    return ChatRenderer(tok.chat_template, tok.token_text(tok.bos_id), tok.token_text(tok.eos_id))


def encode_prompt(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt: control tokens parsed, BOS added only where the tokenizer adds one and the
    template did not already write it (as llama.cpp's chat completion does)."""
    bos = tok.token_text(tok.bos_id)
    return tok.encode(text, add_bos=tok.adds_bos and not (bos and text.startswith(bos)), special=True)


# --------------------------------------------------------------------------------------------------- parsing
@dataclasses.dataclass(frozen=True)
class ParsedCalls:
    """What a generation holds: whether JSON was found and parsed there, and the calls (None where the JSON is not
    a call or a list of calls)."""

    json_valid: bool
    calls: list[Call] | None


def _normalize(x: Any) -> Any:
    """JSON value with integral floats as integers (bools untouched), for comparison."""
    if isinstance(x, bool):
        return x
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    if isinstance(x, dict):
        return {k: _normalize(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_normalize(v) for v in x]
    return x


def canonical_json(x: Any) -> str:
    """``x`` as canonical JSON: sorted keys, no spaces, integral floats as integers, non-ASCII kept."""
    return json.dumps(_normalize(x), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _first_json(text: str) -> tuple[bool, Any]:
    """(parsed?, value) of the JSON object or array starting at the first ``{`` or ``[`` of ``text``."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return False, None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[min(starts) :])
    except ValueError:
        return False, None
    return True, value


def _as_call(obj: Any) -> Call | None:
    """A well-formed call from one JSON value, or None."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # OpenAI's {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(name, str) or not isinstance(args, dict):
        return None
    return Call(name, args)


def parse_calls(text: str) -> ParsedCalls:
    """The calls in a generation (see the module docstring): ``<tool_call>`` blocks, else its first JSON value."""
    if CALL_OPEN in text:
        values = []
        for block in text.split(CALL_OPEN)[1:]:
            ok, value = _first_json(block.split(CALL_CLOSE, 1)[0])
            if not ok:
                return ParsedCalls(False, None)
            values.append(value)
    else:
        ok, value = _first_json(text)
        if not ok:
            return ParsedCalls(False, None)
        values = [value]
    items: list[Any] = []
    for v in values:
        items.extend(v if isinstance(v, list) else [v])
    calls = [_as_call(i) for i in items]
    if any(c is None for c in calls):
        return ParsedCalls(True, None)
    return ParsedCalls(True, [c for c in calls if c is not None])


# --------------------------------------------------------------------------------------------------- metrics
def _pairs(args: Mapping[str, Any]) -> Counter[tuple[str, str]]:
    return Counter((k, canonical_json(v)) for k, v in args.items())


def _match(expected: Sequence[Call], got: Sequence[Call]) -> list[tuple[Call, Call | None]]:
    """Each expected call paired with a generated call of the same name (each used once): exact matches first, then
    the generated call sharing the most (key, value) pairs; None where no call of that name is left."""
    left = list(got)
    pairs: dict[int, Call | None] = {}
    for i, e in enumerate(expected):  # exact matches first, so a parallel call's order does not matter
        for j, g in enumerate(left):
            if g.name == e.name and g.canonical() == e.canonical():
                pairs[i] = left.pop(j)
                break
    for i, e in enumerate(expected):
        if i in pairs:
            continue
        same = [j for j, g in enumerate(left) if g.name == e.name]
        if not same:
            pairs[i] = None
            continue
        want = _pairs(e.arguments)
        best = max(same, key=lambda j: (sum((_pairs(left[j].arguments) & want).values()), -j))
        pairs[i] = left.pop(best)
    return [(e, pairs[i]) for i, e in enumerate(expected)]


@dataclasses.dataclass(frozen=True)
class ExampleScore:
    """One generation scored against its example (counts, so that a set's metrics are micro-averages)."""

    id: str
    json_valid: bool
    schema_valid: bool
    name_correct: bool
    exact_calls: int  # expected calls whose arguments were written exactly
    expected_calls: int
    tp: int  # (key, value) pairs of matched calls the model got right
    fp: int  # pairs it wrote that are not expected (in matched and in extra calls)
    fn: int  # expected pairs it missed (in matched and in missing calls)
    success: bool  # exactly the expected calls, nothing else
    calls: list[Call] | None
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["calls"] = None if self.calls is None else [c.to_dict() for c in self.calls]
        return d


def score_example(example: Example, generation: str) -> ExampleScore:
    """Score one generation against ``example``'s expected calls and offered tools."""
    parsed = parse_calls(generation)
    calls = parsed.calls
    problems: list[str] = []
    if not parsed.json_valid:
        problems.append("no parseable JSON")
    elif calls is None:
        problems.append("the JSON is not a call or a list of {name, arguments}")
    elif not calls:
        problems.append("no call made")
    else:
        for c in calls:
            fn = example.tool(c.name)
            if fn is None:
                problems.append(f"{c.name!r} is not an offered tool")
            else:
                problems += [f"{c.name}: {p}" for p in _schema_errors(fn["parameters"], c.arguments)]
    got = calls or []
    matched = _match(example.expected, got)
    exact = sum(1 for e, g in matched if g is not None and g.canonical() == e.canonical())
    tp = fp = fn_ = 0
    for e, g in matched:
        want = _pairs(e.arguments)
        have = _pairs(g.arguments) if g is not None else Counter()
        tp += sum((want & have).values())
        fp += sum((have - want).values())
        fn_ += sum((want - have).values())
    used = {id(g) for _, g in matched if g is not None}
    fp += sum(sum(_pairs(g.arguments).values()) for g in got if id(g) not in used)  # calls nobody expected
    names_ok = calls is not None and Counter(c.name for c in got) == Counter(e.name for e in example.expected)
    return ExampleScore(
        id=example.id,
        json_valid=parsed.json_valid,
        schema_valid=bool(calls) and not problems,
        name_correct=names_ok,
        exact_calls=exact,
        expected_calls=len(example.expected),
        tp=tp,
        fp=fp,
        fn=fn_,
        success=names_ok and exact == len(example.expected),
        calls=calls,
        problems=problems,
    )


def calls_agree(a: str, b: str) -> bool:
    """Whether two generations make the same calls (names and arguments, as multisets; order ignored). A generation
    without well-formed calls (no JSON, JSON that is not calls, an empty list) makes none, so two such agree."""
    ca, cb = parse_calls(a).calls or [], parse_calls(b).calls or []
    return sorted(c.canonical() for c in ca) == sorted(c.canonical() for c in cb)


def summarize(scores: Sequence[ExampleScore], agreement: Iterable[bool] | None = None) -> dict[str, Any]:
    """The set's metrics (fractions in [0, 1]; see the module docstring) from its examples' scores, and the
    fraction of ``agreement`` flags that hold when given."""
    n = len(scores)
    if not n:
        raise UsageError("no tool-call examples to score")
    expected = sum(s.expected_calls for s in scores)
    tp, fp, fn_ = (sum(getattr(s, k) for s in scores) for k in ("tp", "fp", "fn"))
    out: dict[str, Any] = {
        "examples": n,
        "expected_calls": expected,
        "json_valid": sum(s.json_valid for s in scores) / n,
        "schema_valid": sum(s.schema_valid for s in scores) / n,
        "name_accuracy": sum(s.name_correct for s in scores) / n,
        "argument_exact_match": sum(s.exact_calls for s in scores) / expected,
        "argument_f1": 2 * tp / (2 * tp + fp + fn_) if tp + fp + fn_ else 1.0,
        "success": sum(s.success for s in scores) / n,
    }
    if agreement is not None:
        flags = list(agreement)
        out["reference_agreement"] = sum(flags) / len(flags) if flags else 0.0
    return out


METRICS = (
    "json_valid",
    "schema_valid",
    "name_accuracy",
    "argument_exact_match",
    "argument_f1",
    "success",
    "reference_agreement",
)


def metrics_text(m: Mapping[str, Any]) -> str:
    """The metrics as aligned lines (percentages) for the terminal."""
    rows = [f"tool calls: {m['examples']} prompts, {m['expected_calls']} expected calls"]
    rows += [f"  {k.replace('_', ' '):<22} {100 * m[k]:6.2f} %" for k in METRICS if k in m]
    return "\n".join(rows)


__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "Call",
    "ChatRenderer",
    "Example",
    "ExampleScore",
    "METRICS",
    "ParsedCalls",
    "RenderedPrompt",
    "TOOLS_SYSTEM_PROMPT",
    "calls_agree",
    "canonical_json",
    "encode_prompt",
    "load_examples",
    "metrics_text",
    "parse_calls",
    "parse_example",
    "renderer_for",
    "score_example",
    "summarize",
    "tools_system_prompt",
    "with_tools_system_prompt",
]
