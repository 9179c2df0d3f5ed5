"""``edgec eval``: perplexity and chat replies of a language model or of a compiled artifact.

A model file or folder runs on the reference executor. An artifact (an edgec output directory) runs on its
target's own runtime, which the target names (:meth:`edgec.target.Target.logits_engine`, ``chat``); its tokenizer
comes from the metadata the artifact carries (:meth:`~edgec.target.Target.artifact_metadata`). The driver never
asks which target it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .errors import BadInputError, UnsupportedError, UsageError
from .ir import Graph, Model
from .target import Target

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
) -> dict[str, Any]:
    """Perplexity of ``text`` (``engine``: ``auto``, ``reference``, ``artifact`` or the artifact runtime's own
    name, e.g. ``llama.cpp``) and/or a chat reply to ``prompt``; the record ``edgec eval --json`` prints."""
    art = _artifact(model_path)
    if engine == "auto":
        engine = "artifact" if art else "reference"
    if art is None and engine != "reference":
        raise UsageError(
            f"--engine {engine} runs a compiled artifact on its target's runtime, and {model_path} is not "
            "an edgec output directory; compile it first (edgec compile MODEL -t TARGET) or use "
            "--engine reference"
        )
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
    return out


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
