"""``edgec eval``: perplexity and chat generation for models and compiled artifacts."""

from __future__ import annotations

import json
import os

from ...errors import BadInputError, UsageError


def _artifact(path: str) -> tuple[str, str] | None:
    """(kind, file) of a compiled artifact directory: ("gguf", its .gguf) or ("openvino", its model.xml);
    None when ``path`` is not an artifact."""
    man = os.path.join(path, "manifest.json")
    if not (os.path.isdir(path) and os.path.exists(man)):
        return None
    try:
        with open(man, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise BadInputError(f"{man} is unreadable: {e}") from None
    for f in m.get("files", []):
        if f.get("path", "").endswith(".gguf"):
            return "gguf", os.path.join(path, f["path"])
        if f.get("path", "") == "model.xml":
            return "openvino", os.path.join(path, "model.xml")
    raise UsageError(f"{path} is a {m.get('target', {}).get('name', '?')} artifact; eval runs GGUF and OpenVINO "
                     "artifacts (or give the model file itself)")


def run(model_path: str, *, text: str | None, ctx: int, stride: int, max_tokens: int = 0, engine: str = "auto",
        prompt: str | None = None, max_new_tokens: int = 64, frontend: str | None = None,
        progress: bool = True) -> dict:
    from ...api.llama_cpp import llama_cpp_engine, load_llama
    from ...compiler import load_model
    from .perplexity import perplexity, reference_engine
    from .tokenizer import LlamaCppTokenizer, tokenizer_for

    art = _artifact(model_path)
    gguf_path = art[1] if art and art[0] == "gguf" else None
    ov_dir = model_path if art and art[0] == "openvino" else None
    if gguf_path is None and model_path.lower().endswith(".gguf"):
        gguf_path = model_path
    if engine == "auto":
        engine = "llama.cpp" if gguf_path and os.path.isdir(model_path) else "openvino" if ov_dir else "reference"
    if engine == "llama.cpp" and not gguf_path:
        raise UsageError(f"--engine llama.cpp needs a GGUF file or a GGUF artifact; {model_path} is neither")
    if (engine == "openvino") != bool(ov_dir):
        raise UsageError(f"--engine openvino runs OpenVINO artifacts only, and an OpenVINO artifact runs only on "
                         f"it; {model_path} does not match --engine {engine}")
    out: dict = {"model": model_path, "engine": engine}
    model = None
    if engine == "reference":
        model = load_model(gguf_path or model_path, frontend)
    if ov_dir:
        from .perplexity import openvino_metadata
        model = openvino_metadata(ov_dir)  # the LLM configuration and tokenizer source, no weights
    tok = LlamaCppTokenizer(gguf_path) if gguf_path else tokenizer_for(model)
    out["tokenizer"] = tok.name
    if text:
        try:
            with open(text, encoding="utf-8") as f:
                content = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise BadInputError(f"{text}: cannot read it as UTF-8 text ({e})") from None
        ids = tok.encode(content, add_bos=True)
        if max_tokens:
            ids = ids[:max_tokens]
        if model is not None:
            from ...api.llm import LLMConfig
            cfg = LLMConfig.from_model(model)
            if cfg is None:
                raise UsageError(f"{model_path} is not a language model edgec imported (no LLM configuration)")
            if ctx > cfg.context_length:
                raise UsageError(f"--ctx {ctx} exceeds the model's context length {cfg.context_length}")
        if engine == "openvino":
            from .perplexity import openvino_engine
            fn = openvino_engine(ov_dir)
        else:
            fn = reference_engine(model) if engine == "reference" else llama_cpp_engine(gguf_path, ctx)
        res = perplexity(ids, fn, ctx=ctx, stride=stride, engine=engine, progress=progress)
        out.update({"perplexity": res.perplexity, "details": res.to_dict(), "perplexity_text": str(res),
                    "text": text})
    if prompt:
        if not gguf_path:
            raise UsageError("--chat runs through llama.cpp and needs a GGUF file or artifact")
        llm = load_llama(gguf_path, n_ctx=2048)
        r = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=max_new_tokens,
                                       temperature=0.0, seed=0)
        out["reply"] = r["choices"][0]["message"]["content"]
    return out


EVAL_MAX_TOKENS = 1024  # compile --eval-text scores at most this many tokens (a quick, comparable check)
# The text a language model's `--verify` compile scores when no --eval-text is given (the GPL-2 preamble and
# terms, which may be copied verbatim; the same file as examples/text/eval.txt).
DEFAULT_EVAL_TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval.txt")


class CompileEvaluation:
    """``edgec compile --eval-text``: perplexity of the float model (before any pass), of the compiled IR on
    the reference executor and of the artifact on its own runtime (llama.cpp for gguf, OpenVINO for openvino),
    all on the same tokens and windows."""

    def __init__(self, model, text_path: str):
        from ...api.llm import LLMConfig
        from .tokenizer import tokenizer_for
        self.cfg = LLMConfig.from_model(model)
        if self.cfg is None:
            raise UsageError("--eval-text measures perplexity and needs a language model (a GGUF file or a Hugging "
                             "Face folder)")
        try:
            with open(text_path, encoding="utf-8") as f:
                content = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise BadInputError(f"--eval-text {text_path}: cannot read it as UTF-8 text ({e})") from None
        self.ids = tokenizer_for(model).encode(content, add_bos=True)[:EVAL_MAX_TOKENS]
        self.ctx = min(256, self.cfg.context_length)
        self.out = {"text": os.path.basename(text_path), "tokens": len(self.ids), "ctx": self.ctx}

    def _ppl(self, fn, engine: str) -> float:
        from .perplexity import perplexity
        return perplexity(self.ids, fn, ctx=self.ctx, stride=self.ctx, engine=engine, progress=False).perplexity

    def float_model(self, model) -> None:
        from .perplexity import reference_engine
        self.out["float_perplexity"] = self._ppl(reference_engine(model), "reference")

    def compiled(self, model, target, out_dir: str, files: list[str]) -> dict:
        """Perplexity of the compiled IR, and of the artifact wherever the target has a language-model runtime
        (:meth:`edgec.target.Target.logits_engine`: llama.cpp for gguf, OpenVINO for openvino, a vendor's own)."""
        from .perplexity import reference_engine
        self.out["compiled_perplexity"] = self._ppl(reference_engine(model), "reference")
        engine = target.logits_engine(out_dir, files, self.ctx)
        if engine is None:
            self.out["artifact_engine"] = None  # no language-model runtime for this target here
            return self.out
        name, fn = engine
        self.out["artifact_engine"] = name
        self.out["artifact_perplexity"] = self._ppl(fn, name)
        return self.out
