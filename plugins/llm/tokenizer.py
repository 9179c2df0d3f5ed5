"""Tokenizers of imported language models: llama.cpp's for GGUF files, Hugging Face ``tokenizers`` for
folders. Both run offline from the model's own files."""

from __future__ import annotations

import contextlib
import os

from ...errors import BadInputError, UnsupportedError
from ...ir import Model


class Tokenizer:
    name = ""
    bos_id: int | None = None

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError


@contextlib.contextmanager
def _quiet_fd2():
    """llama.cpp prints its loader log on the C-level stderr; keep the user's terminal clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


@contextlib.contextmanager
def _no_extra_buffer_types(llama_cpp):
    """Load with ``use_extra_bufts = False``: llama.cpp's CPU "extra" buffer types (AMX tiles, repacked
    weights) are kernels of their own, and the AMX one segfaults in ggml_backend_amx_mul_mat on these machines
    (Xeon with AMX under Firecracker; llama-cpp-python 0.3.36 built with GGML_NATIVE). The plain CPU kernels
    compute the same model. llama-cpp-python does not expose the field, so its default params are wrapped for
    the duration of the load."""
    mod = llama_cpp.llama_cpp
    orig = mod.llama_model_default_params

    def params():
        p = orig()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p
    mod.llama_model_default_params = params
    try:
        yield
    finally:
        mod.llama_model_default_params = orig


def load_llama(path: str, **kwargs):
    """A ``llama_cpp.Llama`` for ``path``, with a clear error when llama-cpp-python is missing or the file
    does not load."""
    try:
        import llama_cpp
    except ImportError:
        raise UnsupportedError("llama-cpp-python is not installed: pip install llama-cpp-python "
                               "(it builds llama.cpp, about 10 minutes)") from None
    try:
        with _quiet_fd2(), _no_extra_buffer_types(llama_cpp):
            return llama_cpp.Llama(model_path=path, verbose=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - llama_cpp raises ValueError/RuntimeError on load failures
        raise BadInputError(f"llama.cpp could not load {path}: {e}") from None


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
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")


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
    from .decoder import LLMConfig
    from .frontends import SOURCE_KEY
    src = model.metadata.get(SOURCE_KEY, "")
    kind, _, path = src.partition(":")
    if not src:
        raise UnsupportedError("this model carries no tokenizer: text input needs a language model imported from "
                               "a GGUF file or a Hugging Face folder")
    if not os.path.exists(path):
        raise BadInputError(f"the model's tokenizer lives in {path}, which no longer exists")
    if kind == "gguf":
        return LlamaCppTokenizer(path)
    cfg = LLMConfig.from_model(model)
    return HFTokenizer(path, cfg.bos_token_id if cfg else None)
