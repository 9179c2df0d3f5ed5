"""Property checks on what a language model generates (for ``mixed-precision{max_drop=...,checks=...}``).

The checks greedily decode each prompt (the reference executor, no sampling, up to ``N`` new tokens, default 32
(``toolcall:`` 96), or the end-of-sequence token) with the model's own tokenizer, first on the float model, then on
every candidate:

* ``json:PROMPTS[@N]``: every prompt whose float generation holds a JSON value (parsed from its first
  ``{`` or ``[``) must still hold one. ``PROMPTS`` is a JSON list of strings or a text file with one prompt
  per line.
* ``contains:SPEC[@N]``: every generation must contain the required strings. ``SPEC`` is a JSON file,
  ``{"prompt": ["required", ...], ...}`` or ``[{"prompt": ..., "require": [...]}, ...]``; the float model must
  pass it itself (otherwise no candidate could, and the search would only say so at the end).
* ``toolcall:FILE[@N]``: function calling. ``FILE`` is a tool-calling set (JSON Lines of messages, tools and expected
  calls: :mod:`edgec.api.toolcalls`), each conversation rendered with the model's chat template and its tools. The
  candidate passes when its function-name accuracy and its argument exact-match each stay within
  ``TOOLCALL_TOLERANCE`` (2 points, 0.02) of the float model's: on a set of fewer than 50 prompts and calls, not
  one may be lost. A file on which the float model gets no call right is refused (the check could not tell
  candidates apart).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ...checks import Check, CheckResult
from ...errors import UsageError
from ...ir import Model, ReferenceExecutor

DEFAULT_TOKENS = 32
TOOLCALL_TOKENS = 96  # a call with a few arguments is about 40 tokens, two parallel calls 80
TOOLCALL_TOLERANCE = 0.02  # name accuracy and argument exact-match may drop by at most 2 points


def generate(model: Model, prompts: list[str], tokens: int) -> list[str]:
    """Greedy continuations of ``prompts`` (text after the prompt) by ``model`` on the reference executor."""
    from ...api.tokenizer import tokenizer_for

    tok = tokenizer_for(model)
    return generate_ids(model, [tok.encode(p, add_bos=True) for p in prompts], tokens, prompts)


def generate_ids(
    model: Model,
    prompts: list[list[int]],
    tokens: int,
    texts: list[str] | None = None,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations (decoded text) of tokenized prompts by ``model`` on the reference executor: each step
    runs the whole sequence (no KV cache), so keep prompts and ``tokens`` few. ``texts`` name the prompts in errors;
    ``progress`` shows a bar."""
    from tqdm import tqdm

    from ...api.llm import LLMConfig
    from ...api.tokenizer import tokenizer_for

    tok = tokenizer_for(model)
    cfg = LLMConfig.from_model(model)
    eos = cfg.eos_token_id if cfg is not None else None
    limit = cfg.context_length if cfg is not None else None
    ex = ReferenceExecutor(model)
    name_in = model.graph.inputs[0].name
    name_out = model.graph.outputs[0].name
    out = []
    for k, ids in enumerate(tqdm(prompts, desc="generating", unit="prompt", leave=False, disable=not progress)):
        if cfg is not None and max(ids, default=0) >= cfg.vocab_size:
            what = repr(texts[k][:40]) if texts else f"{k + 1}"
            raise UsageError(
                f"prompt {what} encodes to token {max(ids)}, beyond the model's vocabulary of "
                f"{cfg.vocab_size}: the tokenizer ({tok.name or 'the model source'}) does not match"
            )
        if limit and len(ids) >= limit:
            what = repr(texts[k][:40]) if texts else f"{k + 1}"
            raise UsageError(
                f"prompt {what} is {len(ids)} tokens long, which leaves no room to generate in the model's "
                f"context of {limit} tokens"
            )
        new: list[int] = []
        for _ in range(tokens):
            if limit and len(ids) + len(new) >= limit:
                break
            logits = ex.run({name_in: np.array([ids + new], np.int64)})[name_out]
            nxt = int(np.argmax(logits[0, -1]))
            if nxt == eos:
                break
            new.append(nxt)
        out.append(tok.decode(new))
    return out


def holds_json(text: str) -> bool:
    """True when ``text`` holds a JSON object or array starting at its first ``{`` or ``[``."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return False
    try:
        json.JSONDecoder().raw_decode(text[min(starts) :])
    except ValueError:
        return False
    return True


class _Generation(Check):
    needs_model = True
    default_tokens = DEFAULT_TOKENS

    def __init__(self, arg: str):
        super().__init__(arg)
        # PATH[@N]: a pipeline option cannot hold a comma, so the token count follows an '@'
        path, at, n = arg.rpartition("@") if "@" in arg else (arg, "", "")
        self.tokens = self.default_tokens
        if at:
            if not n.isdigit() or int(n) < 1:
                raise UsageError(
                    f"check {self.name}:{arg}: {n!r} after '@' must be the number of new tokens per "
                    f"prompt, e.g. {self.name}:{path}@48 (default {self.default_tokens})"
                )
            self.tokens = int(n)
        if not path or not os.path.isfile(path):
            raise UsageError(
                f"check {self.name}:{arg}: {path!r} is not a file; pass {self.name}:PATH (see `edgec checks`)"
            )
        self.path = path
        try:
            with open(path, encoding="utf-8") as f:
                self.text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"check {self.name}: cannot read {path}: {e}") from None
        self.reference: list[str] = []

    def _fail(self, what: str) -> UsageError:
        return UsageError(f"check {self.name}:{self.path}: {what}")


class JSONCheck(_Generation):
    """Generations that held JSON under the float model still do."""

    name = "json"
    summary = "generations for the prompts in FILE still hold valid JSON (json:FILE[@N], N new tokens)"

    def __init__(self, arg: str):
        super().__init__(arg)
        try:
            data = json.loads(self.text)
        except ValueError:
            data = [line for line in self.text.splitlines() if line.strip()]
        if not isinstance(data, list) or not data or not all(isinstance(p, str) for p in data):
            raise self._fail("expected a JSON list of prompt strings or one prompt per line")
        self.prompts = data

    def prepare(self, reference: Model) -> None:
        self.reference = generate(reference, self.prompts, self.tokens)
        self.kept = [i for i, g in enumerate(self.reference) if holds_json(g)]
        if not self.kept:
            raise self._fail(
                f"the float model's generations hold no JSON for any of the {len(self.prompts)} "
                f"prompts (first: {self.reference[0][:60]!r}); the check would accept anything"
            )

    def evaluate_model(self, candidate: Model) -> CheckResult:
        got = generate(candidate, [self.prompts[i] for i in self.kept], self.tokens)
        bad = [(self.prompts[i], g) for i, g in zip(self.kept, got) if not holds_json(g)]
        frac = 1 - len(bad) / len(self.kept)
        detail = f"{len(self.kept) - len(bad)}/{len(self.kept)} generations hold JSON" + (
            f"; {bad[0][0][:40]!r} -> {bad[0][1][:60]!r}" if bad else ""
        )
        return CheckResult(not bad, frac, detail)


class ContainsCheck(_Generation):
    """Generations contain the required strings."""

    name = "contains"
    summary = "generations contain required strings (contains:FILE[@N]; FILE: {prompt: [strings]})"

    def __init__(self, arg: str):
        super().__init__(arg)
        try:
            data = json.loads(self.text)
        except ValueError as e:
            raise self._fail(f"not JSON ({e})") from None
        if isinstance(data, dict):
            data = [{"prompt": k, "require": v} for k, v in data.items()]
        ok = (
            isinstance(data, list)
            and data
            and all(
                isinstance(d, dict)
                and isinstance(d.get("prompt"), str)
                and isinstance(d.get("require"), list)
                and all(isinstance(r, str) for r in d["require"])
                for d in data
            )
        )
        if not ok:
            raise self._fail('expected {"prompt": ["required", ...]} or [{"prompt": ..., "require": [...]}]')
        self.items = [(d["prompt"], d["require"]) for d in data]

    def _misses(self, gens: list[str]) -> list[tuple[str, str, str]]:
        return [(p, r, g) for (p, req), g in zip(self.items, gens) for r in req if r not in g]

    def prepare(self, reference: Model) -> None:
        self.reference = generate(reference, [p for p, _ in self.items], self.tokens)
        miss = self._misses(self.reference)
        if miss:
            p, r, g = miss[0]
            raise self._fail(f"the float model itself fails it: {p[:40]!r} -> {g[:60]!r} lacks {r!r}")

    def evaluate_model(self, candidate: Model) -> CheckResult:
        got = generate(candidate, [p for p, _ in self.items], self.tokens)
        miss = self._misses(got)
        total = sum(len(r) for _, r in self.items)
        detail = f"{total - len(miss)}/{total} required strings present"
        if miss:
            p, r, g = miss[0]
            detail += f"; {p[:40]!r} -> {g[:60]!r} lacks {r!r}"
        return CheckResult(not miss, 1 - len(miss) / max(total, 1), detail)


class ToolCallCheck(_Generation):
    """Function calls keep the float model's name accuracy and argument exact-match (within 2 points)."""

    name = "toolcall"
    summary = (
        f"function calls on FILE's tool prompts keep name accuracy and argument exact-match within "
        f"{round(100 * TOOLCALL_TOLERANCE)} points of the float model's (toolcall:FILE.jsonl[@N], N={TOOLCALL_TOKENS})"
    )
    default_tokens = TOOLCALL_TOKENS

    def __init__(self, arg: str):
        super().__init__(arg)
        from ...api.toolcalls import load_examples

        try:
            self.examples = load_examples(self.path)
        except UsageError as e:  # it names the file and the line
            raise UsageError(f"check {self.name}: {e}") from None
        self.ids: list[list[int]] = []
        self.float_scores: dict = {}

    def _scores(self, gens: list[str]) -> tuple[dict, list]:
        from ...api.toolcalls import score_example, summarize

        per = [score_example(ex, g) for ex, g in zip(self.examples, gens)]
        return summarize(per), per

    def prepare(self, reference: Model) -> None:
        from ...api.tokenizer import tokenizer_for
        from ...api.toolcalls import encode_prompt, renderer_for

        tok = tokenizer_for(reference)
        render = renderer_for(tok)
        self.ids = [encode_prompt(tok, render.render(ex.messages, ex.tools).text) for ex in self.examples]
        self.reference = generate_ids(reference, self.ids, self.tokens, [ex.id for ex in self.examples])
        self.float_scores, self.float_per = self._scores(self.reference)
        m = self.float_scores
        if m["name_accuracy"] == 0 and m["argument_exact_match"] == 0:
            raise self._fail(
                f"the float model gets no call right on any of the {len(self.examples)} prompts (first: "
                f"{self.examples[0].id} -> {self.reference[0][:60]!r}); the check could not tell candidates apart "
                "(use prompts the float model answers, or more new tokens: @N)"
            )

    def evaluate_model(self, candidate: Model) -> CheckResult:
        got = generate_ids(candidate, self.ids, self.tokens, [ex.id for ex in self.examples])
        m, per = self._scores(got)
        f = self.float_scores
        eps = 1e-9
        names_ok = m["name_accuracy"] >= f["name_accuracy"] - TOOLCALL_TOLERANCE - eps
        args_ok = m["argument_exact_match"] >= f["argument_exact_match"] - TOOLCALL_TOLERANCE - eps
        detail = (
            f"names {m['name_accuracy']:.3f} (float {f['name_accuracy']:.3f}), arguments exact "
            f"{m['argument_exact_match']:.3f} (float {f['argument_exact_match']:.3f})"
        )
        lost = [
            (ex.id, g)
            for ex, a, b, g in zip(self.examples, self.float_per, per, got)
            if (a.name_correct and not b.name_correct) or b.exact_calls < a.exact_calls
        ]
        if lost:
            detail += f"; {len(lost)} prompt(s) lost, e.g. {lost[0][0]} -> {lost[0][1][:60]!r}"
        return CheckResult(names_ok and args_ok, m["argument_exact_match"], detail)


GENERATION_CHECKS = (JSONCheck, ContainsCheck, ToolCallCheck)
