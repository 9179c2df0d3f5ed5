"""Tokenizers of imported language models: llama.cpp's for GGUF files, Hugging Face ``tokenizers`` for
folders. Both run offline from the model's own files."""

from __future__ import annotations

import os
from typing import cast

from .llama_cpp import load_llama
from ..errors import BadInputError, UnsupportedError
from ..ir import Model


class Tokenizer:
    name = ""
    bos_id: int | None = None

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError


class LlamaCppTokenizer(Tokenizer):
    """The tokenizer stored in a GGUF file, run by llama.cpp (vocab only: no weights are loaded)."""

    def __init__(self, gguf_path: str):
        self.name = f"llama.cpp:{os.path.basename(gguf_path)}"
        self.llm = load_llama(gguf_path, vocab_only=True)
        self.bos_id = self.llm.token_bos()

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return ([self.bos_id] if add_bos and self.bos_id is not None and self.bos_id >= 0 else []) + list(ids)

    def decode(self, ids: list[int]) -> str:
        return cast(str, self.llm.detokenize(ids).decode("utf-8", errors="replace"))


class HFTokenizer(Tokenizer):
    """``tokenizer.json`` of a Hugging Face folder, through the ``tokenizers`` library."""

    def __init__(self, folder: str, bos_id: int | None):
        path = os.path.join(folder, "tokenizer.json")
        if not os.path.exists(path):
            raise BadInputError(f"{folder} has no tokenizer.json; text input needs the model's tokenizer")
        try:
            from tokenizers import Tokenizer as _T

            self.tok = _T.from_file(path)
        except ImportError:
            raise UnsupportedError("the 'tokenizers' package is not installed: pip install tokenizers") from None
        except Exception as e:  # noqa: BLE001
            raise BadInputError(f"{path} is not a readable tokenizer: {e}") from None
        self.name = f"tokenizers:{os.path.basename(os.path.abspath(folder))}"
        self.bos_id = bos_id

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos and self.bos_id is not None else []) + list(ids)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def tokenizer_for(model: Model) -> Tokenizer:
    """The tokenizer of a model imported by an LLM frontend."""
    from .llm import SOURCE_KEY, LLMConfig

    src = model.metadata.get(SOURCE_KEY, "")
    kind, _, path = src.partition(":")
    if not src:
        raise UnsupportedError(
            "this model carries no tokenizer: text input needs a language model imported from "
            "a GGUF file or a Hugging Face folder"
        )
    if not os.path.exists(path):
        raise BadInputError(f"the model's tokenizer lives in {path}, which no longer exists")
    if kind == "gguf":
        return LlamaCppTokenizer(path)
    cfg = LLMConfig.from_model(model)
    return HFTokenizer(path, cfg.bos_token_id if cfg else None)
