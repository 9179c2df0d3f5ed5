"""Tokenizers of imported language models: llama.cpp's for GGUF files, Hugging Face ``tokenizers`` for
folders. Both run offline from the model's own files, and carry the model's chat template (the GGUF's
``tokenizer.chat_template``, a folder's ``tokenizer_config.json`` / ``chat_template.jinja``) for prompts rendered as
the model was trained on (:mod:`edgec.api.toolcalls`)."""

from __future__ import annotations

import json
import os
from typing import Any, cast

from .llama_cpp import load_llama
from ..errors import BadInputError, UnsupportedError
from ..ir import Model


class Tokenizer:
    name = ""
    bos_id: int | None = None
    eos_id: int | None = None
    chat_template: str | None = None  # the model's Jinja chat template, None where it ships none
    adds_bos = False  # whether the model's own tokenizer starts a prompt with BOS (llama.cpp's add_bos_token)

    def encode(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of ``text``; ``special``: control-token text (``<|im_start|>``) becomes its token, as in a
        rendered chat prompt (otherwise it is tokenized as plain text)."""
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def token_text(self, token: int | None) -> str:
        """The text of one (special) token, e.g. ``<|im_start|>``; empty for None."""
        raise NotImplementedError


class LlamaCppTokenizer(Tokenizer):
    """The tokenizer stored in a GGUF file, run by llama.cpp (vocab only: no weights are loaded)."""

    def __init__(self, gguf_path: str):
        self.name = f"llama.cpp:{os.path.basename(gguf_path)}"
        self.llm = load_llama(gguf_path, vocab_only=True)
        self.bos_id = self.llm.token_bos()
        self.eos_id = self.llm.token_eos()
        meta: dict[str, str] = self.llm.metadata
        self.chat_template = meta.get("tokenizer.chat_template") or None
        # llama.cpp's own default when the file says nothing (llama_vocab's add_bos for the vocab's type)
        model = getattr(self.llm, "_model", None)
        flag = meta.get("tokenizer.ggml.add_bos_token")
        self.adds_bos = flag == "true" if flag is not None else bool(model is not None and model.add_bos_token())

    def encode(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        return ([self.bos_id] if add_bos and self.bos_id is not None and self.bos_id >= 0 else []) + list(ids)

    def decode(self, ids: list[int]) -> str:
        return cast(str, self.llm.detokenize(ids).decode("utf-8", errors="replace"))

    def token_text(self, token: int | None) -> str:
        if token is None or token < 0:
            return ""
        return cast(str, self.llm.detokenize([token], special=True).decode("utf-8", errors="replace"))


class HFTokenizer(Tokenizer):
    """``tokenizer.json`` of a Hugging Face folder, through the ``tokenizers`` library."""

    def __init__(self, folder: str, bos_id: int | None, eos_id: int | None = None):
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
        self.bos_id, self.eos_id = bos_id, eos_id
        cfg = _tokenizer_config(folder)
        self.adds_bos = bool(cfg.get("add_bos_token", False))
        self.chat_template = _hf_chat_template(folder, cfg)

    def encode(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        # ``tokenizers`` always matches added special tokens in the text, whatever ``special`` says
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos and self.bos_id is not None else []) + list(ids)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def token_text(self, token: int | None) -> str:
        if token is None:
            return ""
        return self.tok.id_to_token(token) or ""


def _tokenizer_config(folder: str) -> dict[str, Any]:
    """``tokenizer_config.json`` of a Hugging Face folder ({} where it has none or it is unreadable: the chat
    template and BOS flag are then unknown, which only prompts rendered with a template need)."""
    try:
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _hf_chat_template(folder: str, cfg: dict[str, Any]) -> str | None:
    """A folder's chat template: ``chat_template.jinja``, else ``tokenizer_config.json``'s ``chat_template`` (a
    string, or a list of named templates of which ``default`` is the one used without tools)."""
    path = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError):
            return None
    tpl = cfg.get("chat_template")
    if isinstance(tpl, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("tool_use") or named.get("default")
    return tpl if isinstance(tpl, str) else None


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
    return HFTokenizer(path, cfg.bos_token_id if cfg else None, cfg.eos_token_id if cfg else None)
