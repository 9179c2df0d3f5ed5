"""Property checks on what a language model generates (for ``mixed-precision{max_drop=...,checks=...}``).

Both checks greedily decode each prompt (the reference executor, no sampling, up to ``N`` new tokens,
default 32, or the end-of-sequence token) with the model's own tokenizer, first on the float model, then on
every candidate:

* ``json:PROMPTS[@N]``: every prompt whose float generation holds a JSON value (parsed from its first
  ``{`` or ``[``) must still hold one. ``PROMPTS`` is a JSON list of strings or a text file with one prompt
  per line.
* ``contains:SPEC[@N]``: every generation must contain the required strings. ``SPEC`` is a JSON file,
  ``{"prompt": ["required", ...], ...}`` or ``[{"prompt": ..., "require": [...]}, ...]``; the float model must
  pass it itself (otherwise no candidate could, and the search would only say so at the end).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ...checks import Check, CheckResult
from ...errors import UsageError
from ...ir import Model, ReferenceExecutor

DEFAULT_TOKENS = 32


def generate(model: Model, prompts: list[str], tokens: int) -> list[str]:
    """Greedy continuations of ``prompts`` (text after the prompt) by ``model`` on the reference executor."""
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
    for p in prompts:
        ids = tok.encode(p, add_bos=True)
        if cfg is not None and max(ids, default=0) >= cfg.vocab_size:
            raise UsageError(
                f"prompt {p[:40]!r} encodes to token {max(ids)}, beyond the model's vocabulary of "
                f"{cfg.vocab_size}: the tokenizer ({tok.name or 'the model source'}) does not match"
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

    def __init__(self, arg: str):
        super().__init__(arg)
        # PATH[@N]: a pipeline option cannot hold a comma, so the token count follows an '@'
        path, at, n = arg.rpartition("@") if "@" in arg else (arg, "", "")
        self.tokens = DEFAULT_TOKENS
        if at:
            if not n.isdigit() or int(n) < 1:
                raise UsageError(
                    f"check {self.name}:{arg}: {n!r} after '@' must be the number of new tokens per "
                    f"prompt, e.g. {self.name}:{path}@48 (default {DEFAULT_TOKENS})"
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


GENERATION_CHECKS = (JSONCheck, ContainsCheck)
