"""Perplexity inside ``edgec compile`` (``--eval-text``, and ``--verify`` of a language model): the float model, the
compiled IR and the artifact on its own runtime, on the same tokens. ``edgec eval`` itself is the driver's
(:mod:`edgec.llm_eval`)."""

from __future__ import annotations

import os

from ...errors import BadInputError, UsageError


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
        from ...api.tokenizer import tokenizer_for

        self.cfg = LLMConfig.from_model(model)
        if self.cfg is None:
            raise UsageError(
                "--eval-text measures perplexity and needs a language model (a GGUF file or a Hugging Face folder)"
            )
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
