"""llama.cpp, through llama-cpp-python: loading a GGUF file, and the logits of token sequences.

A shared runtime: the LLM plugin runs llama.cpp for GGUF tokenizers, ``edgec eval`` of a GGUF file and chat
replies; the ``gguf`` target for its artifacts' logits (:meth:`~edgec.target.Target.logits_engine`,
``--verify``) and greedy generation (:meth:`~edgec.target.Target.generator`, ``edgec eval --tool-calls``). All
load through :func:`load_llama`, which keeps llama.cpp's log off the terminal and stays on the plain CPU kernels.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np

from ..errors import BadInputError, UnsupportedError


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
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
def _no_extra_buffer_types(llama_cpp: Any) -> Iterator[None]:
    """Load with ``use_extra_bufts = False``: llama.cpp's CPU "extra" buffer types (AMX tiles, repacked
    weights) are kernels of their own, and the AMX one segfaults in ggml_backend_amx_mul_mat on these machines
    (Xeon with AMX under Firecracker; llama-cpp-python 0.3.36 built with GGML_NATIVE). The plain CPU kernels
    compute the same model. llama-cpp-python does not expose the field, so its default params are wrapped for
    the duration of the load."""
    mod = llama_cpp.llama_cpp
    orig = mod.llama_model_default_params

    def params() -> Any:
        p = orig()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    mod.llama_model_default_params = params
    try:
        yield
    finally:
        mod.llama_model_default_params = orig


def load_llama(path: str, **kwargs: Any) -> Any:
    """A ``llama_cpp.Llama`` for ``path``, with a clear error when llama-cpp-python is missing or the file
    does not load."""
    try:
        import llama_cpp
    except ImportError:
        raise UnsupportedError(
            "llama-cpp-python is not installed: pip install llama-cpp-python (it builds llama.cpp, about 10 minutes)"
        ) from None
    try:
        with _quiet_fd2(), _no_extra_buffer_types(llama_cpp):
            return llama_cpp.Llama(model_path=path, verbose=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - llama_cpp raises ValueError/RuntimeError on load failures
        raise BadInputError(f"llama.cpp could not load {path}: {e}") from None


def llama_cpp_engine(gguf_path: str, ctx: int, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """``run(tokens) -> logits [len(tokens), vocab]`` (float32) of a GGUF file on llama.cpp, for windows of up to
    ``ctx`` tokens, each evaluated from an empty context."""
    llm = load_llama(
        gguf_path, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True, n_threads=threads or os.cpu_count() or 1
    )

    def run(tokens: np.ndarray) -> np.ndarray:
        llm.reset()
        llm.eval([int(t) for t in tokens])
        return np.array(llm.scores[: len(tokens)], np.float32)

    return run


def llama_cpp_generator(gguf_path: str, ctx: int, threads: int = 0) -> Callable[[Sequence[int], int], str]:
    """``gen(prompt token ids, max_new_tokens) -> text`` of a GGUF file on llama.cpp: greedy decoding (no sampling,
    no repetition penalty) with its KV cache, stopping at an end-of-generation token, for prompts plus new tokens of
    up to ``ctx`` tokens. The file is loaded once; a prompt sharing a prefix with the previous one reuses its cache."""
    n = threads or os.cpu_count() or 1
    llm = load_llama(gguf_path, n_ctx=ctx, n_batch=min(ctx, 512), n_threads=n, n_threads_batch=n)

    def gen(ids: Sequence[int], max_new_tokens: int) -> str:
        if len(ids) + max_new_tokens > ctx:
            raise UnsupportedError(
                f"a prompt of {len(ids)} tokens plus {max_new_tokens} new ones exceeds the {ctx}-token context "
                "llama.cpp was loaded with"
            )
        r = llm.create_completion(
            [int(t) for t in ids], max_tokens=max_new_tokens, temperature=0.0, repeat_penalty=1.0, top_k=1, seed=0
        )
        return cast(str, r["choices"][0]["text"])

    return gen


def llama_cpp_speed(
    gguf_path: str, prompt_tokens: int, new_tokens: int, threads: int, rounds: int = 3, seed: int = 0
) -> dict[str, Any]:
    """Prefill and decode speed of a GGUF file on llama.cpp: a prompt of ``prompt_tokens`` (seeded random token
    ids) evaluated in one batch, then ``new_tokens`` single-token decode steps on its KV cache. One warm-up round,
    then the median of ``rounds`` timed ones."""
    import time

    llm = load_llama(
        gguf_path,
        n_ctx=prompt_tokens + new_tokens,
        n_batch=prompt_tokens,
        n_ubatch=prompt_tokens,
        n_threads=threads,
        n_threads_batch=threads,
    )
    rng = np.random.default_rng(seed)
    ids = [int(t) for t in rng.integers(0, llm.n_vocab(), prompt_tokens + new_tokens)]
    prefill, decode = [], []
    for r in range(rounds + 1):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids[:prompt_tokens])
        t1 = time.perf_counter()
        for t in ids[prompt_tokens:]:
            llm.eval([t])
        t2 = time.perf_counter()
        if r:  # round 0 warms up
            prefill.append(t1 - t0)
            decode.append(t2 - t1)
    p, d = float(np.median(prefill)), float(np.median(decode))
    return {
        "runtime": "llama.cpp",
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "rounds": rounds,
        "prefill_tokens_per_s": round(prompt_tokens / p, 2),
        "decode_tokens_per_s": round(new_tokens / d, 2),
        "decode_ms_per_token": round(d / new_tokens * 1e3, 3),
    }


__all__ = ["llama_cpp_engine", "llama_cpp_generator", "llama_cpp_speed", "load_llama"]
