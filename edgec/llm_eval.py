"""``edgec eval``: perplexity, chat replies and tool calling of a language model or of a compiled artifact.

A model file or folder runs on the reference executor. An artifact (an edgec output directory) runs on its
target's own runtime, which the target names (:meth:`edgec.target.Target.logits_engine`, ``chat``, ``generator``);
its tokenizer comes from the metadata the artifact carries (:meth:`~edgec.target.Target.artifact_metadata`). The
driver never asks which target it is.

Tool calling (``--tool-calls FILE``, :func:`tool_calls`): each conversation of the set is rendered with the model's
chat template and its tools (:mod:`edgec.api.toolcalls`), tokenized by the driver with the model's own tokenizer,
decoded greedily by the engine, and the calls scored against the expected ones (and, with ``--reference``, against
the calls a reference model makes on the same prompts).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import BadInputError, UnsupportedError, UsageError
from .ir import Graph, Model
from .target import Target

if TYPE_CHECKING:
    from .api.toolcalls import Example

ENGINES = ("auto", "reference", "artifact")


def run(
    model_path: str,
    *,
    text: str | None,
    ctx: int,
    stride: int,
    max_tokens: int = 0,
    engine: str = "auto",
    prompt: str | None = None,
    max_new_tokens: int = 64,
    frontend: str | None = None,
    progress: bool = True,
    tool_calls_file: str | None = None,
    reference: str | None = None,
    tool_tokens: int = 128,
    limit: int = 0,
) -> dict[str, Any]:
    """Perplexity of ``text`` (``engine``: ``auto``, ``reference``, ``artifact`` or the artifact runtime's own
    name, e.g. ``llama.cpp``), a chat reply to ``prompt`` and/or the tool-calling metrics on ``tool_calls_file``
    (:func:`tool_calls`); the record ``edgec eval --json`` prints."""
    examples = None
    if tool_calls_file:  # a malformed set fails before any model loads
        from .api.toolcalls import load_examples

        examples = load_examples(tool_calls_file)[: limit or None]
    art = _artifact(model_path)
    engine = _engine(engine, art, model_path)
    out: dict[str, Any] = {"model": model_path, "engine": engine}
    if text:
        model, tok, fn = _perplexity_setup(model_path, art, engine, ctx, frontend)
        out["engine"] = engine = fn[0]
        out["tokenizer"] = tok.name
        from .plugins.llm.perplexity import perplexity

        ids = tok.encode(_read(text), add_bos=True)
        if max_tokens:
            ids = ids[:max_tokens]
        res = perplexity(ids, fn[1], ctx=ctx, stride=stride, engine=engine, progress=progress)
        out.update({"perplexity": res.perplexity, "details": res.to_dict(), "perplexity_text": str(res), "text": text})
    if prompt:
        if art is None:
            raise UsageError(
                f"--chat runs a compiled artifact on its target's runtime; compile {model_path} first "
                "(e.g. edgec compile MODEL -t gguf)"
            )
        tgt, files = art
        reply = tgt.chat(model_path, files, [{"role": "user", "content": prompt}], max_new_tokens)
        if reply is None:
            raise UnsupportedError(
                f"the {tgt.name} target has no chat runtime here; --chat runs artifacts of targets "
                "that generate text (gguf on llama.cpp)"
            )
        out["reply"] = reply
        out.setdefault("tokenizer", f"{tgt.runtime or tgt.name}'s own")
    if examples is not None:
        calls = tool_calls(
            model_path,
            examples,
            engine=engine,
            reference=reference,
            max_new_tokens=tool_tokens,
            frontend=frontend,
            progress=progress,
        )
        out["engine"] = calls["engine"]
        out.setdefault("tokenizer", calls["tokenizer"])
        out["tool_calls"] = {"file": tool_calls_file, **calls}
    return out


def tool_calls(
    model_path: str,
    examples: Sequence[Example],
    *,
    engine: str = "auto",
    reference: str | None = None,
    max_new_tokens: int = 128,
    frontend: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Tool-calling metrics of ``model_path`` (a model file or an artifact) on ``examples``, and agreement with the
    calls of the ``reference`` model (a model file or an artifact, on its own engine) when given: the metrics, how
    the tools were rendered, the engine, and every example's generation and score."""
    from .api.toolcalls import calls_agree, score_example, summarize

    art = _artifact(model_path)
    gens, info = _generate_calls(model_path, art, examples, engine, max_new_tokens, frontend, progress)
    ref_gens = None
    if reference:
        ref_art = _artifact(reference)
        ref_gens, ref_info = _generate_calls(reference, ref_art, examples, "auto", max_new_tokens, frontend, progress)
    scores = [score_example(ex, g) for ex, g in zip(examples, gens)]
    agree = [calls_agree(g, r) for g, r in zip(gens, ref_gens)] if ref_gens is not None else None
    per = []
    for k, (sc, g) in enumerate(zip(scores, gens)):
        row = {**sc.to_dict(), "generation": g}
        if ref_gens is not None and agree is not None:
            row["reference_generation"], row["agrees_with_reference"] = ref_gens[k], agree[k]
        per.append(row)
    out = {
        **info,
        "max_new_tokens": max_new_tokens,
        "metrics": summarize(scores, agree),
        "examples": per,
    }
    if reference:
        out["reference"] = {"model": reference, **ref_info}
    return out


def _generate_calls(
    path: str,
    art: tuple[Target, Sequence[str]] | None,
    examples: Sequence[Example],
    engine: str,
    max_new_tokens: int,
    frontend: str | None,
    progress: bool,
) -> tuple[list[str], dict[str, Any]]:
    """Greedy generations for the examples' rendered prompts, and how they were made (engine, tokenizer,
    rendering), on the artifact's runtime or the reference executor."""
    from tqdm import tqdm

    from .api.tokenizer import tokenizer_for
    from .api.toolcalls import encode_prompt, renderer_for

    engine = _engine(engine, art, path)
    model = None
    if engine == "reference":
        from .build import load_model

        model = load_model(path if art is None else _loadable(path, art[1]), frontend)
        tok = tokenizer_for(model)
    else:
        assert art is not None
        meta = art[0].artifact_metadata(path, art[1]) or {}
        tok = tokenizer_for(Model(Graph(f"{art[0].name}-artifact"), metadata=meta))
    render = renderer_for(tok)
    rendered = [render.render(ex.messages, ex.tools) for ex in examples]
    ids = [encode_prompt(tok, r.text) for r in rendered]
    info: dict[str, Any] = {
        "tokenizer": tok.name,
        "rendering": sorted({r.rendering for r in rendered}),
        "prompt_tokens": {"max": max(map(len, ids)), "mean": round(sum(map(len, ids)) / len(ids), 1)},
    }
    if model is not None:
        from .plugins.checks.generation import generate_ids

        info["engine"] = "reference"
        if progress:  # a hint, not an error: the reference executor is exact, only slow
            import sys

            print(
                "edgec eval: generating on the reference executor, which reruns the whole sequence for every new "
                "token (no KV cache): seconds a prompt. For speed, compile to a target that generates "
                f"(edgec compile {path} -t gguf -o OUT) and eval OUT on its runtime (llama.cpp).",
                file=sys.stderr,
            )
        gens = generate_ids(model, ids, max_new_tokens, [ex.id for ex in examples], progress=progress)
        return gens, info
    assert art is not None
    tgt, files = art
    made = tgt.generator(path, files, max(map(len, ids)) + max_new_tokens)
    if made is None:
        raise UnsupportedError(
            f"the {tgt.name} target has no generation runtime here; --tool-calls runs artifacts of targets that "
            "generate text (gguf on llama.cpp), or --engine reference on the model it was compiled from"
        )
    runtime, gen = made
    if engine not in ("artifact", runtime):
        raise UsageError(
            f"{path} is a {tgt.name} artifact, which runs on {runtime}, not --engine {engine}; use "
            "--engine auto (its runtime) or reference"
        )
    info["engine"] = runtime
    bar = tqdm(ids, desc=f"tool calls ({runtime})", unit="prompt", leave=False, disable=not progress)
    return [gen(p, max_new_tokens) for p in bar], info


def _engine(engine: str, art: Any, path: str) -> str:
    """``auto`` resolved (an artifact's runtime, else the reference executor); an artifact engine for a path that
    is not an artifact refused with the way out."""
    if engine == "auto":
        engine = "artifact" if art else "reference"
    if art is None and engine != "reference":
        raise UsageError(
            f"--engine {engine} runs a compiled artifact on its target's runtime, and {path} is not an edgec "
            "output directory; compile it first (edgec compile MODEL -t TARGET) or use --engine reference"
        )
    return engine


def _artifact(path: str) -> tuple[Target, Sequence[str]] | None:
    """(target, artifact files) of an edgec output directory; None for anything else."""
    man = os.path.join(path, "manifest.json")
    if not (os.path.isdir(path) and os.path.exists(man)):
        return None
    from .build import parse_target
    from .output import read_json

    try:
        m: Any = read_json(man)
        spec, files = m["target"]["spec"], [f["path"] for f in m["files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{man} is unreadable or malformed ({e}); recompile to replace it") from None
    return parse_target(spec), files


def _perplexity_setup(path: str, art, engine: str, ctx: int, frontend: str | None):
    """(model or None, tokenizer, (engine name, logits fn)) for ``engine`` on ``path``."""
    from .plugins.llm.perplexity import reference_engine
    from .api.tokenizer import tokenizer_for

    if engine == "reference":
        src = path if art is None else _loadable(path, art[1])
        from .build import load_model

        model = load_model(src, frontend)
        _check_context(path, model, ctx)
        return model, tokenizer_for(model), ("reference", reference_engine(model))
    tgt, files = art
    run_fn = tgt.logits_engine(path, files, ctx)
    if run_fn is None:
        raise UnsupportedError(
            f"the {tgt.name} target has no language-model runtime here; use --engine reference "
            "on the model it was compiled from"
        )
    if engine not in ("artifact", run_fn[0]):
        raise UsageError(
            f"{path} is a {tgt.name} artifact, which runs on {run_fn[0]}, not --engine {engine}; use "
            "--engine auto (its runtime) or reference"
        )
    meta = tgt.artifact_metadata(path, files) or {}
    return None, tokenizer_for(Model(Graph(f"{tgt.name}-artifact"), metadata=meta)), run_fn


def _loadable(out_dir: str, files: Sequence[str]) -> str:
    """The artifact file a frontend reads (a GGUF), for the reference executor."""
    from .host import host

    names = {s for fe in host().frontends.as_dict().values() for s in getattr(fe, "suffixes", ())}
    for f in files:
        if any(f.lower().endswith(s) for s in names):
            return os.path.join(out_dir, f)
    raise UsageError(
        f"--engine reference needs a model file; no frontend reads the artifact files in {out_dir} "
        f"({', '.join(files)}): give the model it was compiled from"
    )


def _check_context(path: str, model: Model, ctx: int) -> None:
    from .api.llm import LLMConfig

    cfg = LLMConfig.from_model(model)
    if cfg is None:
        raise UsageError(f"{path} is not a language model edgec imported (no LLM configuration)")
    if ctx > cfg.context_length:
        raise UsageError(f"--ctx {ctx} exceeds the model's context length {cfg.context_length}")


def _read(text: str) -> str:
    try:
        with open(text, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{text}: cannot read it as UTF-8 text ({e})") from None
